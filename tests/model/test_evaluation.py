"""Evaluation: pure metrics on hand-made cases with known answers; the scoring engine on the tiny
random Llama checked against direct one-at-a-time computations; the registry and its errors."""
from __future__ import annotations

import math

import pytest

from g2is_core.loop import evaluation as E
from g2is_core.loop.evaluation import protocols as P
from g2is_core.data.encoding import collate, encode_prompt, encode_record
from g2is_core.data.records import simple


# ============================================================================ pure metrics
@pytest.mark.parametrize("text, want", [
    ("so 3,200 dollars. The answer is 3200.", "3200"),
    ("#### 42", "42"),
    ("She pays 12 + 30 = 42 dollars.\n#### 42", "42"),
    ("The answer is 1,234,567.", "1234567"),
    ("The temperature fell to -7 degrees.", "-7"),
    ("The answer is -3.50.", "-3.5"),
    ("It costs $4.0 in total", "4"),
    ("He has 5 apples, then 3 more; the answer is 8 apples, not 9.", "8"),
    ("20 - 5 = 15", "15"),            # a minus between digits is subtraction, not a sign
    ("0.5 of the cake", "0.5"),
    ("no digits here", None),
    ("", None),
    (None, None),
])
def test_extract_number(text, want):
    assert E.extract_number(text) == want


def test_normalize_number():
    assert E.normalize_number("1,000") == "1000"
    assert E.normalize_number("42.00") == "42"
    assert E.normalize_number("-0") == "0"
    assert E.normalize_number("3.140") == "3.14"
    assert E.normalize_number("12.") == "12"
    assert E.normalize_number("abc") is None


@pytest.mark.parametrize("text, want", [
    ("Step one. Step two. So the answer is (B).", "(B)"),
    ("So the answer is True.", "True"),
    ("so the answer is No.\nQ: next question", "No"),
    ("So the answer is ) ] }.", ") ] }"),
    ("(C)\nbecause ...", "(C)"),           # no CoT marker: the first line
    ("\n\n  valid  \nmore", "valid"),
    ("So the answer is 24. Then so the answer is 25.", "25"),  # the last marker wins
])
def test_extract_bbh_answer(text, want):
    assert E.extract_bbh_answer(text) == want


def test_bbh_match():
    assert E.bbh_match("(B)", "(B)")
    assert E.bbh_match("B", "(B)")
    assert E.bbh_match("(B) the second option", "(B)")
    assert E.bbh_match("B) text", "(B)")
    assert not E.bbh_match("(C)", "(B)")
    assert not E.bbh_match("Because", "(B)")      # a word starting with B is not the letter
    assert E.bbh_match("true", "True")
    assert E.bbh_match("Yes.", "Yes")
    assert not E.bbh_match("No", "Yes")
    assert E.bbh_match(")  ]", ") ]")


def test_mc_predict_sum_and_norm_differ():
    # option 0: one token at -4 (mean -4); option 1: four tokens summing to -6 (mean -1.5)
    assert E.mc_predict([-4.0, -6.0], [1, 4]) == (0, 1)
    assert E.mc_predict([-1.0, -2.0, -3.0], [1, 1, 1]) == (0, 0)
    assert E.mc_predict([-2.0, -2.0], [2, 2]) == (0, 0)   # ties go to the first option
    with pytest.raises(ValueError):
        E.mc_predict([-1.0], [1, 2])


def test_squad_normalize_and_scores():
    assert E.squad_normalize("The Cat, sat!") == "cat sat"
    assert E.squad_normalize("«Москва»。") == "москва"          # Unicode punctuation goes too
    assert E.squad_normalize("an apple") == "apple"
    assert E.squad_normalize("banana") == "banana"              # "an" inside a word stays
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8
    assert E.squad_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert E.squad_em("the cat sat", "a cat sat down") == 0.0
    assert E.squad_em("The cat sat.", "cat sat") == 1.0
    # repeated tokens count with multiplicity: pred [x, x, y], gold [x, y, y] -> 2 common, F1 = 2/3
    assert E.squad_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert E.squad_f1("", "") == 1.0 and E.squad_f1("a", "cat") == 0.0   # empty after normalisation
    em, f1 = E.squad_scores("Paris France", ["Paris", "the city of Paris"])
    # vs "Paris": P 1/2, R 1 -> 2/3; vs "city of paris": common 1, P 1/2, R 1/3 -> 0.4; max = 2/3
    assert (em, f1) == (0.0, pytest.approx(2 / 3))
    assert E.squad_scores("paris", ["Lyon", "Paris"]) == (1.0, 1.0)


def test_perplexity_and_loglik_metrics():
    assert E.perplexity([1.0, 2.0, 3.0]) == pytest.approx(math.exp(2.0))
    m = E.loglik_metrics([[1.0, 3.0], [2.0]])   # tokens 1, 3, 2: token mean 2; example means 2 and 2
    assert m["nll"] == pytest.approx(2.0) and m["ppl"] == pytest.approx(math.exp(2.0))
    m = E.loglik_metrics([[1.0, 1.0, 1.0], [4.0]])  # token-weighted 7/4; per-example (1 + 4) / 2
    assert m["nll"] == pytest.approx(1.75) and m["nll_example"] == pytest.approx(2.5) and m["n_tokens"] == 4
    with pytest.raises(ValueError):
        E.perplexity([])


def test_subset_deterministic_and_stratified():
    a = E.subset(100, 10, seed=1, key="x")
    assert a == E.subset(100, 10, seed=1, key="x") and a == sorted(a) and len(set(a)) == 10
    assert a != E.subset(100, 10, seed=2, key="x")
    assert E.subset(5, None, 0) == [0, 1, 2, 3, 4] and E.subset(5, 9, 0) == [0, 1, 2, 3, 4]
    groups = ["a"] * 50 + ["b"] * 50 + ["c"] * 2
    s = E.subset(len(groups), 12, seed=0, groups=groups)
    counts = {g: sum(1 for i in s if groups[i] == g) for g in "abc"}
    assert counts == {"a": 5, "b": 5, "c": 2}    # c caps out at 2; its share goes to a and b


# ============================================================================ registry
def test_registry_names_and_protocols():
    names = set(E.EVALS)
    for n in ("builtin:add_reverse", "builtin:lookup_add", "builtin:sort_desc", "gsm8k", "bbh:web_of_lies", "mmlu",
              "mmlu:anatomy", "arc_easy", "arc_challenge", "boolq", "openbookqa", "tydiqa:swahili",
              "foundry:piqa", "foundry:winogrande", "foundry:svamp"):
        assert n in names, n
    assert len(E.BBH_TASKS) == 22 and len(E.MMLU_SUBJECTS) == 57
    for spec in E.EVALS.values():
        assert spec.protocol in E.PROTOCOLS and "loglik" in spec.protocols
        assert spec.mc_primary in ("sum", "norm")
        assert spec.shots <= spec.max_shots
    assert not E.EVALS["builtin:add"].needs_data and E.EVALS["gsm8k"].needs_data


def test_bad_name_lists_valid_ones():
    with pytest.raises(ValueError) as exc:
        E.evaluate(None, "gsm8kk")
    msg = str(exc.value)
    assert "gsm8k" in msg and "builtin:add_reverse" in msg and "bbh:web_of_lies" in msg and "mmlu:<subject>" in msg


def test_missing_shared_data_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("G2IS_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(E.EvalError, match=r"needs the shared data folder \.\./shared/data"):
        E.eval_records("mmlu", limit=2)
    assert len(E.eval_records("builtin:add_reverse", limit=3)) == 3   # the built-in suite needs no files


def test_builtin_records_are_test_split_and_seeded_subset():
    a = E.eval_records("builtin:sort_desc", limit=5, seed=0)
    assert all(r.metadata["split"] == "test" for r in a)
    assert [r.id for r in a] == [r.id for r in E.eval_records("builtin:sort_desc", limit=5, seed=0)]
    assert [r.id for r in a] != [r.id for r in E.eval_records("builtin:sort_desc", limit=5, seed=1)]


def test_shots_out_of_range():
    with pytest.raises(E.EvalError, match="0 to 0 few-shot"):
        E.eval_records("builtin:add", limit=2, shots=1)


def test_protocol_override_checked():
    with pytest.raises(E.EvalError, match="supports the protocols"):
        E.evaluate(None, "builtin:add", protocol="mc")


# ============================================================================ tiny model
def _mc_records():
    return [
        simple("q1", "Which is a colour?", "red", source="t", task="t", choices=("red", "table", "a big dog"), gold=0),
        simple("q2", "Pick the number.", "7", source="t", task="t", choices=("seven hundred", "7"), gold=1),
        simple("q3", "Say yes or no.", "no", source="t", task="t", choices=("yes", "no"), gold=1),
    ]


def _direct_option_logprob(lm, rec, option):
    """Sum log-prob of the option tokens, one sequence, no padding, all logits."""
    import torch

    p = encode_prompt(lm.tokenizer, rec)
    c = lm.tokenizer(option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c)), len(c)


@pytest.fixture(params=["shared", "alone"])
def sharing(request, monkeypatch):
    """Each scoring test twice: sequences with a common beginning of >= 4 tokens share its forward, or never."""
    monkeypatch.setattr(E.scoring, "MIN_SHARED_PREFIX", 4 if request.param == "shared" else 10**9)
    return request.param


def test_mc_scores_match_direct_computation(tiny, sharing):
    recs = _mc_records()
    items = [[(r, c) for c in r.choices] for r in recs]
    got, n_cut = E.mc_scores(tiny, items, batch_size=3)   # 7 pairs of different lengths: padded batches
    assert n_cut == 0
    for r, row in zip(recs, got):
        for c, (s, n) in zip(r.choices, row):
            want_s, want_n = _direct_option_logprob(tiny, r, c)
            assert n == want_n
            assert s == pytest.approx(want_s, abs=1e-5)


def test_one_token_options_scored_from_one_prompt_pass(tiny, sharing):
    """MMLU-style letters: the shared-prompt path (one forward per prompt) gives the per-option numbers,
    with padding across prompts of different lengths and with prompts cut to max_length."""
    recs = _mc_records()
    items = [[(r, k) for k in "ABCD"[:len(r.choices)]] for r in recs] + [[(recs[0], "x"), (recs[0], "yes")]]
    fast, cut_fast = E.mc_scores(tiny, items, batch_size=2)
    slow, cut_slow = E.mc_scores(tiny, items, batch_size=2, shared_prompt=False)
    assert cut_fast == cut_slow == 0
    for row_f, row_s in zip(fast, slow):
        for (sf, nf), (ss, ns) in zip(row_f, row_s):
            assert nf == ns and sf == pytest.approx(ss, abs=1e-5)
    r = recs[1]
    assert fast[1][1][0] == pytest.approx(_direct_option_logprob(tiny, r, "B")[0], abs=1e-5)
    short = E.mc_scores(tiny, items, batch_size=2, max_length=24)
    short_slow = E.mc_scores(tiny, items, batch_size=2, max_length=24, shared_prompt=False)
    assert short[1] == short_slow[1] > 0
    assert [[round(s, 4) for s, _ in row] for row in short[0]] == [[round(s, 4) for s, _ in row] for row in short_slow[0]]


def test_prefix_groups_on_hand_made_rows():
    shot = list(range(100, 140))                                   # a 40-token "few-shot prompt"
    rows = [shot + [1, 2, 3], shot + [1, 5], [7] * 50, shot + [9, 9, 9, 9], [7] * 10 + [8]]
    limits = [len(r) - 1 for r in rows]
    assert E.prefix_groups(rows, limits, min_shared=32) == [(0, [2]), (0, [4]), (40, [0, 1, 3])]
    # a row needs logits from its position 20 on: it cannot join a group that shares more than 20 tokens
    assert E.prefix_groups(rows, [42, 41, 49, 20, 10], min_shared=32) == [(0, [2]), (0, [4]), (41, [0, 1]), (0, [3])]
    assert E.prefix_groups(rows, limits, min_shared=41) == [(0, [2]), (0, [4]), (41, [0, 1]), (0, [3])]
    # three rows share 60 tokens, a fourth only 35 of them: joining would recompute 3 x 25 tokens to save 35
    a = list(range(60))
    rows = [a + [1], a + [2], a + [3], a[:35] + [99] * 30]
    assert E.prefix_groups(rows, [len(r) - 1 for r in rows], min_shared=32) == [(60, [0, 1, 2]), (0, [3])]
    # ... but two rows sharing 60 take a third that shares 35: 35 saved against 25 recomputed
    assert E.prefix_groups(rows[:2] + rows[3:], [60, 60, 64], min_shared=32) == [(35, [0, 1, 2])]
    assert E.prefix_groups([], [], min_shared=4) == []


def test_prefix_plan_runs_a_common_part_of_several_groups_once():
    """Three questions after one 40-token prompt, each with four 1-token answers after its own 20 tokens: each
    question's 60 tokens run once for its four answers, and the 40 tokens they share once for the three."""
    shot = list(range(100, 140))
    rows = [shot + [q] * 20 + [a] for q in (1, 2, 3) for a in (7, 8, 9, 10)]
    limits = [60] * len(rows)
    assert E.prefix_groups(rows, limits, min_shared=32) == [(60, [0, 1, 2, 3]), (60, [4, 5, 6, 7]),
                                                            (60, [8, 9, 10, 11])]
    assert E.prefix_plan(rows, limits, min_shared=32) == [
        (40, [(60, [0, 1, 2, 3]), (60, [4, 5, 6, 7]), (60, [8, 9, 10, 11])])]
    # a row alone, and a group with nothing in common with the others: P = 0
    rows2 = rows[:4] + [[5] * 70, [6] * 50 + [1], [6] * 50 + [2]]
    assert E.prefix_plan(rows2, [60, 60, 60, 60, 69, 50, 50], min_shared=32) == [
        (0, [(50, [5, 6])]), (0, [(60, [0, 1, 2, 3])]), (0, [(0, [4])])]
    # rows with a prompt of their own each: batched after the prompt they share, or all together when none
    rows3 = [shot + [q] * 20 + [7] for q in (1, 2, 3)] + [[5] * 70, [4] * 70]
    assert E.prefix_plan(rows3, [60, 60, 60, 69, 69], min_shared=32) == [(40, [(40, [0, 1, 2])]), (0, [(0, [3, 4])])]
    assert E.prefix_plan(rows3, [60, 60, 60, 69, 69], min_shared=10 ** 9) == [(0, [(0, [0, 1, 2, 3, 4])])]
    assert E.prefix_plan([], [], min_shared=4) == []


def test_two_level_sharing_keeps_every_sequence_s_numbers_also_a_group_with_nothing_of_its_own(tiny):
    """Two questions with twelve answers each after a 40-token prompt, and two rows that share only that prompt:
    their group's prefix is the common part itself (p == P), and it runs nothing of its own."""
    shot = list(range(100, 140))
    rows = [shot + [q] * 5 + [a] for q in (1, 2) for a in range(3, 15)] + [shot + [50 + k] * 3 for k in (0, 1)]
    limits = [len(r) - 1 for r in rows]
    plan = E.prefix_plan(rows, limits, min_shared=8)
    assert [(P, [p for p, _ in fine]) for P, fine in plan] == [(40, [45, 45, 40])]
    seqs = [(tuple(r), (-100,) * (len(r) - 1) + (r[-1],)) for r in rows]
    for (x, y), lp in zip(seqs, E.sequence_logprobs(tiny, seqs, batch_size=5, min_shared=8)):
        assert lp == pytest.approx(_direct_logprobs(tiny, x, y), abs=1e-5)


def test_rows_continuing_one_cache_are_packed_into_one_sequence_under_either_attention(tiny):
    """Twelve answers after one prompt run as ONE packed sequence (a block-causal mask over the prompt's cache), in
    packs of at most PACK_TOKENS tokens: the numbers are each sequence's own alone, under sdpa and under eager
    attention (which adds the mask rather than passing it on), and equal to the padded batch's."""
    import copy

    from g2is_core.loop.evaluation import scoring
    from g2is_core.models.lm_ops import hooks

    prompt = list(range(100, 150))
    rows = [prompt + [a] * (1 + a % 4) for a in range(3, 15)]
    seqs = [(tuple(r), (-100,) * 50 + tuple(r[50:])) for r in rows]
    calls = []
    for impl in ("sdpa", "eager"):
        lm = copy.copy(tiny)
        lm.model = copy.deepcopy(tiny.model)
        lm.model.set_attn_implementation(impl)
        for budget in (256, 7):   # one pack; packs of a few rows
            old = scoring.PACK_TOKENS
            scoring.PACK_TOKENS = budget
            seen = []
            try:
                with hooks(forward={lm.model.get_input_embeddings(): lambda m, a, o: seen.append(tuple(a[0].shape))}):
                    got = E.sequence_logprobs(lm, seqs, batch_size=4, min_shared=8)
            finally:
                scoring.PACK_TOKENS = old
            calls.append(seen)
            for (x, y), lp in zip(seqs, got):
                assert lp == pytest.approx(_direct_logprobs(lm, x, y), abs=1e-5)
        scoring.PACK_CONTINUATIONS = False
        try:
            batched = E.sequence_logprobs(lm, seqs, batch_size=4, min_shared=8)
        finally:
            scoring.PACK_CONTINUATIONS = True
        for a, b in zip(batched, got):
            assert a == pytest.approx(b, abs=1e-5)
    tails = sum(len(r) - 49 for r in rows)   # the prompt's last token gives the first answer token's logits: in each row
    assert calls[0] == [(1, 49), (1, tails)]                       # the prompt once, then every answer in one row
    assert len(calls[1]) > 3 and all(s[0] == 1 for s in calls[1])  # several packs, each one sequence


def _direct_logprobs(lm, ids, labels):
    """log p(token_t | tokens_<t) at the labelled t >= 1 of one sequence: alone, unpadded, every logit."""
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return [float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100]


def test_a_shared_few_shot_prompt_runs_once_and_each_sequence_keeps_its_numbers(tiny):
    """BBH-style: one long prompt before every question. Its tokens pass through the model once (counted at the
    embedding), and every label's log-prob equals the sequence's own, alone and unpadded; also under LoRA."""
    from g2is_core.models.lm_ops import hooks
    from g2is_core.models.lora import LoraSettings, attach_lora, randomise_lora
    import copy
    import torch

    shots = "Q: 2 + 2? A: 4.\nQ: 3 + 1? A: 4.\nQ: 5 - 3? A: 2.\nQ: 6 + 1? A: 7.\n"
    qa = [("1 + 1?", "2"), ("9 - 4?", "5, since nine minus four is five"), ("3 + 3?", "6"), ("8 + 0?", "8.")]
    recs = [simple(f"s{i}", shots + "Q: " + q, a, source="t", task="t") for i, (q, a) in enumerate(qa)]
    encs = [encode_record(tiny.tokenizer, r) for r in recs]
    seqs = [(e.input_ids, e.labels) for e in encs]
    (p, members), = E.prefix_groups([x for x, _ in seqs], [y.index(next(t for t in y if t != -100)) - 1
                                                          for _, y in seqs], min_shared=32)
    assert p >= 32 and sorted(members) == [0, 1, 2, 3]
    seen = []
    emb = tiny.model.get_input_embeddings()
    with hooks(forward={emb: lambda m, a, o: seen.append(a[0].numel())}):
        got = E.sequence_logprobs(tiny, seqs, batch_size=1, min_shared=32)
    assert sum(seen) == p + sum(len(x) - p for x, _ in seqs) < sum(len(x) for x, _ in seqs)
    for (x, y), lp in zip(seqs, got):
        assert lp == pytest.approx(_direct_logprobs(tiny, x, y), abs=1e-5)
    # Two levels (prefix_plan): each question with twelve answers (so one level would keep each question's prompt
    # as a group); the shots run once, each question's own tokens once per question, then the answers; every
    # number as the sequence gives it alone.
    answers = [f" {k}" for k in range(11)] + [" maybe so"]
    three = [(e.input_ids + tuple(tiny.tokenizer(c, add_special_tokens=False)["input_ids"]), None)
             for e in encs for c in answers]
    three = [(x, (-100,) * (len(encs[k // 12].input_ids)) + x[len(encs[k // 12].input_ids):])
             for k, (x, _) in enumerate(three)]
    plan = E.prefix_plan([x for x, _ in three], [y.index(next(t for t in y if t != -100)) - 1 for _, y in three],
                         min_shared=8)
    (P, fine), = plan
    assert P == p and len(fine) == 4 and all(q > P for q, _ in fine)
    seen.clear()
    with hooks(forward={emb: lambda m, a, o: seen.append(a[0].numel())}):
        got3 = E.sequence_logprobs(tiny, three, batch_size=1, min_shared=8)   # batch 1: no padding is counted
    assert sum(seen) == P + sum(q - P for q, _ in fine) + sum(len(three[i][0]) - q for q, g in fine for i in g)
    for (x, y), lp, lp5 in zip(three, got3, E.sequence_logprobs(tiny, three, batch_size=5, min_shared=8)):
        assert lp == pytest.approx(_direct_logprobs(tiny, x, y), abs=1e-5) and lp5 == pytest.approx(lp, abs=1e-5)
    for lp3, lp in zip(E.sequence_logprobs(tiny, seqs, batch_size=3, min_shared=32), got):  # padded batches
        assert lp3 == pytest.approx(lp, abs=1e-5)

    lm = copy.copy(tiny)
    lm.model = attach_lora(copy.deepcopy(tiny.model), LoraSettings(r=4, alpha=8, dropout=0.0))
    randomise_lora(lm.model, torch.Generator().manual_seed(0), 0.5)
    under_lora = E.sequence_logprobs(lm, seqs, batch_size=3, min_shared=32)
    for (x, y), lp in zip(seqs, under_lora):
        assert lp == pytest.approx(_direct_logprobs(lm, x, y), abs=1e-5)
    assert max(abs(a - b) for u, g in zip(under_lora, got) for a, b in zip(u, g)) > 1e-3   # LoRA did change them


def test_mc_eval_end_to_end_uses_both_rules(tiny):
    recs = _mc_records()
    spec = E.EvalSpec("test:mc", "hand-made", "mc", lambda root: recs, needs_data=False, mc_primary="norm")
    res = E.evaluate(tiny, spec, batch_size=4)
    assert res.protocol == "mc" and res.n == 3
    for p in res.per_example:
        s, n = p["logprob_sum"], p["n_tokens"]
        assert (p["correct_sum"], p["correct_norm"]) == tuple(i == p["gold"] for i in E.mc_predict(s, n))
        assert p["correct"] == p["correct_norm"]
    assert res.metrics["accuracy"] == res.metrics["accuracy_norm"]


def test_loglik_answer_leaves_the_end_of_turn_out(tiny, sharing):
    """nll_answer is the token-weighted NLL of the response's own tokens: the last two scored tokens of each
    record (``<|im_end|>`` and the newline of the tiny chat template) are left out, per question and in the
    metric; a max-length cut takes the end-of-turn first."""
    recs = E.eval_records("builtin:lookup_add", limit=5)
    nlls, _, n_answer = E.loglik_scores(tiny, recs, batch_size=2)
    for r, x, a in zip(recs, nlls, n_answer):
        enc = encode_record(tiny.tokenizer, r)
        resp = [t for t in enc.labels if t >= 0]
        assert a == len(x) - 2 and tiny.tokenizer.decode(resp[:a]) == r.response
    res = E.evaluate(tiny, "builtin:lookup_add", limit=5, protocol="loglik", batch_size=2)
    flat = [v for x, a in zip(nlls, n_answer) for v in x[:a]]
    assert res.metrics["nll_answer"] == pytest.approx(sum(flat) / len(flat), abs=1e-6)
    assert res.metrics["n_answer_tokens"] == len(flat) < res.metrics["n_tokens"]
    for p, x, a in zip(res.per_example, nlls, n_answer):
        assert p["n_answer_tokens"] == a and p["nll_answer"] == pytest.approx(sum(x[:a]) / a, abs=1e-6)
    # One token over: the prompt goes first, then the response from the right: the newline is cut, so of the
    # end-of-turn only <|im_end|> is left to leave out.
    r = recs[0]
    n = encode_record(tiny.tokenizer, r).n_response
    (x,), _, (a,) = E.loglik_scores(tiny, [r], max_length=n - 1)
    assert a == len(x) - 1


def test_answer_labels_only_for_a_closed_set():
    assert E.answer_labels(["yes", "no", "no", "yes", "no"]) == ["no", "yes"]
    assert E.answer_labels(["(B)", "(A)", "(C)", "(A)", "(C)", "(B)"]) == ["(A)", "(B)", "(C)"]
    assert E.answer_labels(["a", "b", "c", "d"]) is None            # as many answers as questions: open
    assert E.answer_labels(["True"] * 5) is None                    # one label: nothing to choose
    assert E.answer_labels([str(k % 25) for k in range(100)]) is None   # 25 > MAX_LABELS


def test_loglik_on_a_closed_answer_set_compares_the_labels(tiny, sharing):
    """Each label scored as the whole response (text and end-of-turn, as training tokenises it): label_logprob =
    the log-softmax over the labels' summed log-probs at the gold one, equal to scoring each label as a record's
    response with loglik_scores; label_accuracy = the argmax is the gold label."""
    from dataclasses import replace

    qs = ["Is 2 even?", "Is 3 even?", "Is 8 even?", "Is 7 even?", "Is 0 even?", "Is 5 even?"]
    recs = [simple(f"q{i}", q, "yes" if i % 2 == 0 else "no", source="t", task="t") for i, q in enumerate(qs)]
    spec = E.EvalSpec("test:yn", "hand-made", "loglik", lambda root: recs, needs_data=False)
    res = E.evaluate(tiny, spec, batch_size=4)
    assert res.metrics["n_labels"] == 2
    with_label = [replace(r, messages=r.prompt_messages + ({"role": "assistant", "content": lab},))
                  for r in recs for lab in ("no", "yes")]
    nlls, _, _ = E.loglik_scores(tiny, with_label)
    for k, (r, p) in enumerate(zip(recs, res.per_example)):
        sums = [-sum(nlls[2 * k]), -sum(nlls[2 * k + 1])]
        gold = ["no", "yes"].index(r.response)
        assert p["label_logprob"] == pytest.approx(E.gold_logprob(sums, gold), abs=1e-5)
        assert p["label_correct"] == (max(range(2), key=lambda i: (sums[i], -i)) == gold)
    assert res.metrics["label_logprob"] == pytest.approx(sum(p["label_logprob"] for p in res.per_example) / 6)
    assert res.metrics["label_accuracy"] == sum(p["label_correct"] for p in res.per_example) / 6
    open_spec = E.EvalSpec("test:open", "hand-made", "loglik", lambda root: recs[:2], needs_data=False)
    assert "label_logprob" not in E.evaluate(tiny, open_spec).metrics   # two answers in two questions: open


def test_loglik_equals_model_loss(tiny, sharing):
    import torch

    recs = E.eval_records("builtin:lookup_add", limit=5)
    nlls, cut, _ = E.loglik_scores(tiny, recs, batch_size=2)
    assert not any(cut)
    for r, x in zip(recs, nlls):
        enc = encode_record(tiny.tokenizer, r)
        batch = collate([enc], tiny.tokenizer.pad_token_id)
        with torch.no_grad():
            loss = float(tiny.model(**batch).loss)
        assert len(x) == enc.n_response
        assert sum(x) / len(x) == pytest.approx(loss, abs=1e-5)
    res = E.evaluate(tiny, "builtin:lookup_add", limit=5, protocol="loglik", batch_size=2)
    assert res.metrics["ppl"] == pytest.approx(math.exp(res.metrics["nll"]))
    assert res.metrics["nll"] == pytest.approx(sum(map(sum, nlls)) / sum(map(len, nlls)), abs=1e-6)


def test_builtin_exact_match_end_to_end(tiny):
    res = E.evaluate(tiny, "builtin:add_reverse", limit=3, max_new_tokens=4, batch_size=2)
    assert res.name == "builtin:add_reverse" and res.protocol == "exact_match" and res.n == 3
    assert set(res.metrics) == {"accuracy"} and 0.0 <= res.metrics["accuracy"] <= 1.0
    for p in res.per_example:
        assert {"id", "prediction", "gold", "correct", "score"} <= set(p)
    assert res.config["max_new_tokens"] == 4


def test_exact_match_scores_a_perfect_model(tiny, monkeypatch):
    """The scoring path, with generation replaced by an oracle that answers like a chatty model."""
    monkeypatch.setattr(P, "_greedy", lambda lm, recs, *a: [f"The answer is {r.answer}." for r in recs])
    res = E.evaluate(tiny, "builtin:add_reverse", limit=4)
    assert res.metrics["accuracy"] == 1.0


# ============================================================================ shared data (skipped without it)
def test_mmlu_few_shot_prompt_format(shared_data):
    rec = E.eval_records("mmlu:anatomy", limit=1, shots=2)[0]
    text = rec.prompt
    assert text.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert text.count("\nAnswer:") == 3 and text.endswith("\nAnswer:")
    assert "\nA. " in text and "\nD. " in text
    zero = E.eval_records("mmlu:anatomy", limit=1, shots=0)[0].prompt
    assert zero.count("Answer:") == 1


def test_bbh_cot_prompt_and_gsm8k_slice(shared_data):
    rec = E.eval_records("bbh:web_of_lies", limit=1)[0]
    assert rec.prompt.count("Q: ") == 4 and rec.prompt.endswith("A: Let's think step by step.")
    assert "canary" not in rec.prompt
    g = E.eval_records("gsm8k")
    assert len(g) == E.GSM8K_EVAL_ROWS and g[-1].id.endswith(":7473")


@pytest.mark.parametrize("name, protocol", [("mmlu", "mc"), ("bbh:object_counting", "loglik"), ("arc_easy", "mc")])
def test_few_shot_evals_score_the_same_with_shared_prefixes(shared_data, tiny, name, protocol):
    """The study's evals on real prompts: sharing the few-shot prompt (or the question before its options) changes
    no number beyond float rounding."""
    on = E.evaluate(tiny, name, limit=6, batch_size=4, protocol=protocol)
    off = E.evaluate(tiny, name, limit=6, batch_size=4, protocol=protocol, share_prefixes=False)
    assert on.config["share_prefixes"] and not off.config["share_prefixes"]
    assert set(on.metrics) == set(off.metrics)
    for k in on.metrics:
        assert on.metrics[k] == pytest.approx(off.metrics[k], abs=1e-5), k
    assert [p["id"] for p in on.per_example] == [p["id"] for p in off.per_example]


def test_shared_mc_evals_run_on_tiny(shared_data, tiny):
    for name in ("arc_easy", "boolq", "foundry:winogrande"):
        res = E.evaluate(tiny, name, limit=2, batch_size=4)
        assert res.n == 2 and 0.0 <= res.metrics["accuracy"] <= 1.0


# ============================================================================ contracts: every eval, every protocol


@pytest.mark.parametrize("name", list(E.EVALS))
def test_every_registered_eval_yields_well_formed_records(name):
    """Each eval loads a few records (skipped where its data file is absent) that its protocol can score."""
    from g2is_core.workspace import shared_data_root

    spec = E.EVALS[name]
    assert spec.protocol in E.PROTOCOLS and spec.description and 0 <= spec.shots <= spec.max_shots
    if spec.needs_data and shared_data_root() is None:
        pytest.skip(f"{name} needs the shared data folder ../shared/data (or G2IS_SHARED_DATA), absent here")
    recs = E.eval_records(name, limit=3, seed=0)
    assert 1 <= len(recs) <= 3 and len({r.id for r in recs}) == len(recs)
    for r in recs:
        assert isinstance(r.id, str) and r.id and r.prompt.strip() and r.messages[-1]["role"] == "assistant"
        if spec.protocol == "mc":
            pairs = (spec.options or P.same_options)(r)
            assert len(pairs) >= 2 and all(opt for _, opt in pairs) and r.gold in range(len(pairs))
        elif spec.protocol == "exact_match":
            assert r.answer is not None and r.answer.strip()
            assert isinstance((spec.score or E.metrics.builtin_score)(r, "no answer here")[1], bool)
        elif spec.protocol == "f1":
            assert r.metadata.get("answers") or r.answer
        assert r.response.strip()  # loglik (available for every eval) scores the gold response


def _contract_records():
    """Two built-in task records, each also given two options and a gold index, so any protocol can score them."""
    from dataclasses import replace

    recs = E.eval_records("builtin:add", limit=2, seed=0)
    return [replace(r, choices=(r.answer, r.answer + "0"), gold=0) for r in recs]


@pytest.mark.parametrize("protocol", list(E.PROTOCOLS))
def test_every_protocol_scores_the_tiny_model(protocol, tiny):
    recs = _contract_records()
    spec = E.EvalSpec(f"contract:{protocol}", "two built-in records", protocol, lambda root: recs, needs_data=False,
                      max_new_tokens=4)
    res = E.evaluate(tiny, spec, batch_size=2)
    assert res.name == spec.name and res.protocol == protocol and res.n == len(recs) == len(res.per_example)
    assert [p["id"] for p in res.per_example] == [r.id for r in recs]
    for p in res.per_example:
        assert {"id", "prediction", "gold", "correct", "score", "group"} <= set(p)
        assert math.isfinite(p["score"])
    assert res.metrics and all(isinstance(v, float) and math.isfinite(v) for v in res.metrics.values())
    assert isinstance(res.by_group, dict) and res.to_json()["protocol"] == protocol


def test_protocol_registry_drives_evaluate(tiny, monkeypatch):
    """A protocol is one registered class: evaluate() finds it by name, with no other change."""
    class Constant(P.Protocol):
        name = "constant"

        def run(self, lm, spec, records, settings, progress):
            per = [{"id": r.id, "prediction": None, "gold": None, "correct": None, "score": 1.0, "group": r.subtask}
                   for r in records]
            return P.Scored(per, {"one": 1.0}, config={"batch_size_seen": settings.batch_size})

    monkeypatch.setitem(P.PROTOCOLS, "constant", Constant())
    spec = E.EvalSpec("test:constant", "hand-made", "constant", lambda root: _contract_records(), needs_data=False)
    res = E.evaluate(tiny, spec, batch_size=3)
    assert res.metrics == {"one": 1.0} and res.n == 2 and res.config["batch_size_seen"] == 3
    with pytest.raises(E.EvalError, match="unknown protocol"):
        E.evaluate(tiny, E.EvalSpec("test:nope", "hand-made", "nope", lambda root: _contract_records(),
                                    needs_data=False))
