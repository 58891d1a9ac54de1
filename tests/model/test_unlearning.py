"""GRACE unlearning: the shuffled-chunk baseline on hand-made text, plain-text chunks, and the
alternation / stopping rule on a tiny random Llama driven by a forced loss sequence."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from g2is_core.models.loading import tiny_llama
from g2is_core.impact.unlearning import (UnlearnConfig, compute_thresholds, encode_texts, grace_unlearn, mean_loss,
                                  probe_measure, shuffle_chunks, shuffled_copy, text_paragraphs)


# ----------------------------------------------------------------------------- the shuffled baseline
def test_shuffle_chunks_is_a_permutation_of_runs_of_the_hand_made_text():
    text = "a b c d e f g"
    # lo = hi = 3: the runs are exactly [a b c] [d e f] [g]; the output is one of their 6 orders.
    runs = [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    allowed = {" ".join(w for r in p for w in r) for p in itertools.permutations(runs)}
    seen = set()
    for seed in range(30):
        out = shuffle_chunks(text, random.Random(seed), lo=3, hi=3)
        assert out in allowed
        seen.add(out)
    assert len(seen) > 1                                   # it does shuffle


def test_shuffle_chunks_keeps_words_and_runs_of_5_to_15():
    words = [f"w{i}" for i in range(200)]
    out = shuffle_chunks("  ".join(words), random.Random(7)).split()
    assert sorted(out) == sorted(words) and out != words
    # Maximal runs of consecutive words in the output are unions of chunks: each is >= 5 words long
    # unless it ends with the text's last word (the remainder chunk may be shorter).
    idx = [int(w[1:]) for w in out]
    runs, cur = [], [idx[0]]
    for i in idx[1:]:
        if i == cur[-1] + 1:
            cur.append(i)
        else:
            runs.append(cur)
            cur = [i]
    runs.append(cur)
    assert all(len(r) >= 5 or r[-1] == 199 for r in runs)
    assert len(runs) >= 200 // 15                           # at least as many runs as 15-word chunks allow


def test_shuffle_chunks_deterministic_short_text_and_bad_bounds():
    t = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"
    assert shuffle_chunks(t, random.Random(3)) == shuffle_chunks(t, random.Random(3))
    assert shuffle_chunks("just four short words", random.Random(0)) == "just four short words"
    assert shuffle_chunks("", random.Random(0)) == ""
    with pytest.raises(ValueError):
        shuffle_chunks(t, random.Random(0), lo=6, hi=5)


def test_text_paragraphs_and_plain_text_chunks():
    tok = tiny_llama()[1]
    paras = text_paragraphs("First paragraph, long enough.\n\n  \n\nshort\n\nSecond   paragraph\nwith a break.")
    assert paras == ["First paragraph, long enough.", "Second paragraph with a break."]
    enc = encode_texts(tok, ["x" * 100, "tiny", "y" * 30], max_tokens=16, min_tokens=8, chunks_per_text=2)
    assert [e.length for e in enc] == [16, 16, 16, 14]     # "tiny" (4 byte tokens) is dropped
    assert all(e.labels == e.input_ids for e in enc)       # plain text: every token is a target
    sh = shuffled_copy(tok, enc[:1], random.Random(0))
    assert sh[0].length == enc[0].length and sh[0].labels == sh[0].input_ids


# ----------------------------------------------------------------------------- the loop
def _tiny_setup():
    model, tok = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(True)
    texts = [f"record {i}: the cat sat on the mat and counted {i} {i + 1} {i + 2}" for i in range(6)]
    others = [f"other {i}: a dog ran in the park with {i} balls" for i in range(6)]
    return model, tok, encode_texts(tok, texts, max_tokens=32), encode_texts(tok, others, max_tokens=32)


class Forced:
    """A measure that returns a scripted loss sequence per probe and logs the calls."""

    def __init__(self, **seq):
        self.seq = {k: list(v) for k, v in seq.items()}
        self.calls: list[str] = []

    def __call__(self, model, which):  # noqa: ARG002
        self.calls.append(which)
        return self.seq[which].pop(0)


def _count_train_forwards(model):
    n = [0]
    model.register_forward_pre_hook(lambda *_: n.__setitem__(0, n[0] + (1 if torch.is_grad_enabled() else 0)))
    return n


def test_alternation_and_stopping_rule_on_a_forced_loss_sequence():
    model, tok, target, retain = _tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Original: target 1.0, shuffled 2.0 (the stop threshold), held-out non-target 3.0.
    m = Forced(target=[1.0, 1.2, 1.5, 1.9, 2.5, 9.9], shuffled=[2.0], retain=[3.0, 2.9, 3.5, 3.0, 3.2, 9.9])
    n_fwd = _count_train_forwards(model)
    res = grace_unlearn(model, target, retain, UnlearnConfig(lr=1e-3, max_steps=10), pad_id=tok.pad_token_id, measure=m)
    assert (res.thresholds.target_original, res.thresholds.target_stop, res.thresholds.retain_original) == (1.0, 2.0, 3.0)
    # Descent exactly where the held-out loss is ABOVE the original (3.5 and 3.2; 3.0 is not above).
    assert [r["descent"] for r in res.curve[1:]] == [False, True, False, True]
    assert res.n_descent == 2
    # Stop at the first step whose target loss exceeds the shuffled baseline (2.5 > 2.0 at step 4).
    assert res.steps == 4 and res.forgotten and res.reason == "target_above_shuffled"
    assert [r["target"] for r in res.curve] == [1.0, 1.2, 1.5, 1.9, 2.5]
    # Thresholds first (target, shuffled, retain), then per step: retain after the ascent, then target.
    assert m.calls == ["target", "shuffled", "retain"] + ["retain", "target"] * 4
    assert n_fwd[0] == 4 + 2                                 # 4 ascent + 2 descent gradient steps
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_max_steps_and_baseline_not_above_original():
    model, tok, target, retain = _tiny_setup()
    m = Forced(target=[1.0] + [1.5] * 3, shuffled=[2.0], retain=[3.0] + [1.0] * 3)
    res = grace_unlearn(model, target, retain, UnlearnConfig(lr=1e-3, max_steps=3), pad_id=tok.pad_token_id, measure=m)
    assert res.steps == 3 and not res.forgotten and res.reason == "max_steps" and res.n_descent == 0
    m2 = Forced(target=[2.0], shuffled=[1.9], retain=[3.0])
    res2 = grace_unlearn(model, target, retain, UnlearnConfig(max_steps=3), pad_id=tok.pad_token_id, measure=m2)
    assert res2.steps == 0 and res2.reason == "baseline_not_above_original"


def test_real_ascent_raises_the_target_loss_and_thresholds_come_from_the_model():
    model, tok, target, retain = _tiny_setup()
    probes = {"target": target[:2], "shuffled": shuffled_copy(tok, target[:2], random.Random(0)), "retain": retain[:2]}
    measure = probe_measure(probes, tok.pad_token_id)
    thr = compute_thresholds(model, measure)
    assert thr.target_original == pytest.approx(mean_loss(model, target[:2], tok.pad_token_id))
    before = measure(model, "target")
    # A stop threshold far away: the loop runs its 3 steps; gradient ascent must raise the target loss.
    res = grace_unlearn(model, target, retain, UnlearnConfig(lr=5e-3, max_steps=3), pad_id=tok.pad_token_id,
                        measure=measure, thresholds=type(thr)(thr.target_original, 1e9, thr.retain_original))
    assert res.steps == 3 and res.curve[-1]["target"] > before


def test_mean_loss_equals_the_model_loss_on_one_chunk():
    model, tok, target, _ = _tiny_setup()
    from g2is_core.data.encoding import collate
    with torch.no_grad():
        ref = float(model(**collate(target[:1], tok.pad_token_id)).loss)
    assert mean_loss(model, target[:1], tok.pad_token_id) == pytest.approx(ref, rel=1e-5)
