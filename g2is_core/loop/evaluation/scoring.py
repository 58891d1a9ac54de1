"""Model scoring for evaluation: log-probs of labelled tokens, batched, right-padded, with shared prefixes.

The protocols (:mod:`.protocols`) ask these functions for numbers; everything they compute from
them is a pure function in :mod:`.metrics`. Two primitives, :func:`sequence_logprobs` (every
labelled token of each sequence) and :func:`next_token_logprobs` (a few candidate next tokens
after each prefix, one forward per prefix), and two uses of them: :func:`mc_scores` (multiple-choice
options) and :func:`loglik_scores` (gold-response NLLs, tokenised as for training).

Both primitives run on :func:`_position_logits`: sequences that begin with the same tokens (BBH's 3-shot
prompt before each of its 60 questions, MMLU's 5 dev examples before each question of a subject, an
ARC question before each of its options) run that beginning once, and every batch of their remainders
continues from a copy of its key/value cache. The numbers are those of each sequence alone (tested), in
about the tokens the questions add: bench/bench_eval.py measures the saving side by side.
"""
from __future__ import annotations

from typing import Sequence

from ...data.encoding import IGNORE, closing_length, encode_prompt, encode_record
from ...data.records import Record
from ...progress import Progress, no_progress
from .metrics import EvalError

# Sequences that begin with at least this many equal tokens share one forward of them (:func:`prefix_groups`).
MIN_SHARED_PREFIX = 32
_NEVER = 1 << 62   # min_shared that no prefix reaches: every sequence scored whole (share_prefixes=False)


def _device(model):
    return next(model.parameters()).device


def sequence_logprobs(lm, seqs: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                      progress: Progress = no_progress, what: str = "scored",
                      min_shared: int | None = None) -> list[list[float]]:
    """Log-probs of the labelled tokens of each sequence, in order.

    seqs: ``(input_ids [T], labels [T])`` pairs, labels = the token id where it is scored and
    :data:`~g2is_core.data.encoding.IGNORE` elsewhere (as from ``encode_record``). Returns, per sequence,
    log p(token_t | tokens_<t) for every labelled t >= 1, in position order.

    The vocabulary projection runs only at the positions that predict a labelled token, and sequences that
    begin with the same tokens (a few-shot prompt, a question under several options) share one forward of
    that prefix (:func:`_position_logits`; the numbers are those of each sequence alone, tested).
    """
    import torch

    out: list[list[float]] = [[] for _ in seqs]
    spans: list[tuple[int, int] | None] = []
    for x, y in seqs:
        scored = [t for t in range(1, len(x)) if y[t] != IGNORE]   # the first token has no context
        spans.append((scored[0] - 1, scored[-1]) if scored else None)
    for i, logits in _position_logits(lm, [x for x, _ in seqs], spans, batch_size, progress, what, min_shared):
        a, b = spans[i]
        x, y = seqs[i]
        target = torch.tensor(list(x[a + 1:b + 1]), dtype=torch.long, device=logits.device)
        keep = torch.tensor([t != IGNORE for t in y[a + 1:b + 1]], device=logits.device)
        lp = logits.gather(-1, target[:, None])[:, 0] - logits.logsumexp(-1)
        out[i] = lp[keep].cpu().tolist()
    return out


def next_token_logprobs(lm, prefixes: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], *,
                        batch_size: int = 8, progress: Progress = no_progress,
                        what: str = "scored prompt", min_shared: int | None = None) -> list[list[float]]:
    """log p(c | prefix) for every candidate token c of each prefix, from ONE forward per prefix.

    A multiple-choice question whose options are single tokens (MMLU's letters) is then scored by
    one pass over its (long, few-shot) prompt instead of one pass per option; the numbers are those
    :func:`sequence_logprobs` gives for ``prefix + [c]`` (tested). Prompts that share their few-shot
    examples share the forward of those too (:func:`_position_logits`).
    """
    out: list[list[float]] = [[] for _ in prefixes]
    spans = [(len(p) - 1, len(p)) for p in prefixes]
    for i, logits in _position_logits(lm, prefixes, spans, batch_size, progress, what, min_shared):
        out[i] = logits[-1].log_softmax(-1)[list(candidates[i])].cpu().tolist()
    return out


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def prefix_groups(rows: Sequence[Sequence[int]], limits: Sequence[int],
                  min_shared: int | None = None) -> list[tuple[int, list[int]]]:
    """Rows that can share the forward of their first tokens: ``[(p, row indices)]``, every row in exactly one
    group, the rows of a group equal on their first ``p`` tokens, and ``p <= limits[i]`` for each of its rows
    (``limits[i]``: the first position whose logits row i needs, so those are all computed after the prefix).
    A row that shares nothing worth it is a group of its own with ``p = 0``. ``min_shared`` None:
    :data:`MIN_SHARED_PREFIX`.

    Rows are sorted by their tokens, so rows with a common beginning are neighbours, and walked once: the next
    row joins the current group when the group's common prefix stays at least ``min_shared`` tokens and the
    join saves tokens. With G rows sharing p tokens, a join that lowers p to q costs G (p - q) recomputed tokens
    and saves q, so it pays when q * G >= p * (G - 1); a long prompt's examples form one group, and a group
    never collapses to the few tokens a chat template puts in front of everything.
    """
    min_shared = MIN_SHARED_PREFIX if min_shared is None else min_shared
    order = sorted(range(len(rows)), key=lambda i: (tuple(rows[i]), i))
    groups: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    p = 0
    for i in order:
        if cur:
            q = min(p, _common_length(rows[cur[-1]], rows[i]), limits[i])
            if q >= min_shared and q * len(cur) >= p * (len(cur) - 1):
                cur.append(i)
                p = q
                continue
            groups.append((p if len(cur) > 1 else 0, cur))
        cur, p = [i], limits[i]
    if cur:
        groups.append((p if len(cur) > 1 else 0, cur))
    return groups


def prefix_plan(rows: Sequence[Sequence[int]], limits: Sequence[int],
                min_shared: int | None = None) -> list[tuple[int, list[tuple[int, list[int]]]]]:
    """Two levels of sharing: ``[(P, [(p, row indices), ...])]``, every row in exactly one inner group.

    Rows equal on all their tokens before their first needed position (the options of one question: its prompt)
    form a group that runs that prompt once (``p`` = its length, at least ``min_shared``). The groups, one
    representative each, are then grouped by a common beginning with :func:`prefix_groups` (``P``: the few-shot
    part of the prompts, run once for all of them; 0 = nothing worth sharing); within one, the rows that share no
    prompt of their own form one group with ``p = P``, batched together. Why two levels: the 14 answers of a BBH
    object_counting question share its ~830-token prompt, and its 60 questions the ~720 tokens of 3-shot part; one
    level runs either the 3-shot part once and every question's own part 14 times, or every whole prompt once;
    two levels run each part once (a third of the tokens for 3 labels, a tenth for 14)."""
    floor = MIN_SHARED_PREFIX if min_shared is None else min_shared
    same: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rows):
        same.setdefault(tuple(r[:limits[i]]), []).append(i)
    prompts = [g for g in same.values() if len(g) > 1 and limits[g[0]] >= floor]
    singles = [i for g in same.values() if not (len(g) > 1 and limits[g[0]] >= floor) for i in g]
    units = [(limits[g[0]], g) for g in prompts] + [(limits[i], [i]) for i in singles]
    plan, apart = [], []
    for P, ks in prefix_groups([rows[g[0]][:p] for p, g in units], [p for p, _ in units], min_shared):
        own = [units[k] for k in ks if len(units[k][1]) > 1]
        loose = sorted(units[k][1][0] for k in ks if len(units[k][1]) == 1)
        if P:
            plan.append((P, own + ([(P, loose)] if loose else [])))
        else:   # nothing in common with another group: its prompt alone, or a row batched with the other such rows
            plan += [(0, [u]) for u in own]
            apart += loose
    return plan + ([(0, [(0, sorted(apart))])] if apart else [])


# Rows continuing one cache run side by side in one sequence (``packed`` in :func:`_position_logits`); False runs
# them as a padded batch with the cache copied per row, the path before it: kept for bench/bench_eval.py's side by side.
PACK_CONTINUATIONS = True
PACK_TOKENS = 256   # tokens per packed sequence: its attention spans every row of the pack (masked), so not unbounded


def _position_logits(lm, rows: Sequence[Sequence[int]], spans: Sequence[tuple[int, int] | None], batch_size: int,
                     progress: Progress, what: str, min_shared: int | None):
    """Yield ``(i, logits [b - a, V] fp32)`` for each row i with a span ``(a, b)``: the logits at positions
    a .. b-1 of row i, as the model gives them for that row alone (no gradients, eval mode). Rows without a
    span are skipped.

    How: rows are grouped by a common beginning (:func:`prefix_plan`); a group's prefix is run once and its
    key/value cache is copied to each batch of the group's remainders, which continue at the prefix's
    positions side by side in one sequence under a block-causal mask (``packed``). Batches without a prefix are
    right-padded with explicit positions, so padding never reaches a real token, and
    the vocabulary projection (V = 49,152 against a width of 576 for SmolLM2) runs only at the span positions.
    A model without decoder parts (:func:`~g2is_core.models.lm_ops.decoder_parts`) projects every position.
    """
    import copy
    import inspect
    import itertools

    import torch
    from transformers import DynamicCache

    from ...models.lm_ops import decoder_parts

    model = lm.model
    dev = _device(model)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    try:
        backbone, head = decoder_parts(model)
    except ValueError:
        backbone, head = None, None
    todo = [i for i, s in enumerate(spans) if s is not None]
    plan = [(P, [(p, [todo[j] for j in g]) for p, g in fine])
            for P, fine in prefix_plan([rows[i] for i in todo], [spans[i][0] for i in todo], min_shared)]

    run = model if backbone is None else backbone
    # the cache argument is ``cache`` in recent transformers (5.2x), ``past_key_values`` in earlier ones
    cache_kw = "cache" if "cache" in inspect.signature(run.forward).parameters else "past_key_values"

    def forward(ids, pos, cache, mask=None):
        """Hidden states [B, T, hidden] (logits where the model has no decoder parts); ``cache`` grows in place;
        ``mask``: a 4D additive attention mask, or None for the causal one."""
        kw = {cache_kw: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        if mask is not None:
            kw["attention_mask"] = mask
        out = run(input_ids=ids, position_ids=pos, **kw)
        return out.logits if backbone is None else out.last_hidden_state

    def packed(p: int, idx: list[int], tails: list[list[int]], cache0):
        """The span logits of rows that continue one cache: their remainders side by side in ONE sequence, each
        attending to the cache and to its own earlier tokens only (a block-causal 4D mask), each at its own
        positions (p, p + 1, ...). One batch row, so the cache is copied once, not once per row: with a long
        prompt and short answers (BBH's labels, multiple-choice options) copying the cache for every row cost
        more than the forward."""
        starts = [0]
        for t in tails:
            starts.append(starts[-1] + len(t))
        L = starts[-1]
        ids = torch.tensor([list(itertools.chain.from_iterable(tails))], dtype=torch.long, device=dev)
        pos = torch.cat([p + torch.arange(len(t), device=dev) for t in tails])[None]
        allowed = torch.zeros((L, p + L), dtype=torch.bool, device=dev)
        allowed[:, :p] = True
        for a, e in zip(starts, starts[1:]):
            allowed[a:e, p + a:p + e] = torch.ones((e - a, e - a), dtype=torch.bool, device=dev).tril()
        dtype = next(run.parameters()).dtype
        mask = torch.zeros((1, 1, L, p + L), dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
        h = forward(ids, pos, copy.deepcopy(cache0), mask)
        for k, i in enumerate(idx):
            a, e = spans[i]
            x = h[0, starts[k] + a - p:starts[k] + e - p]
            yield i, (head(x) if head is not None else x).float()

    def group(p: int, members: list[int], P: int, top):
        """Yield the span logits of a group of rows equal on their first ``p`` tokens, the first ``P`` of which
        are in ``top`` (a cache, or None with P = 0): its own common tokens once, then batches of the rest."""
        cache0 = top   # p == P: the group has nothing of its own (every batch copies it)
        if p > P:
            cache0 = copy.deepcopy(top) if top is not None else DynamicCache()
            forward(torch.tensor([list(rows[members[0]][P:p])], dtype=torch.long, device=dev),
                    torch.arange(P, p, device=dev)[None], cache0)
        if p and len(members) > 1 and PACK_CONTINUATIONS:
            pack: list[int] = []
            size = 0
            for i in members + [None]:   # packs of up to PACK_TOKENS tokens (a longer row alone)
                n = 0 if i is None else len(rows[i]) - p
                if pack and (i is None or size + n > PACK_TOKENS):
                    yield from packed(p, pack, [list(rows[j][p:]) for j in pack], cache0)
                    pack, size = [], 0
                if i is not None:
                    pack.append(i)
                    size += n
            return
        for b in range(0, len(members), batch_size):
            idx = members[b:b + batch_size]
            tails = [list(rows[i][p:]) for i in idx]
            T = max(len(t) for t in tails)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            for j, t in enumerate(tails):   # right-padded: causal attention keeps pads out of real tokens
                ids[j, :len(t)] = torch.tensor(t, dtype=torch.long)
            cache = None
            if p:
                cache = copy.deepcopy(cache0)
                if len(idx) > 1:
                    cache.batch_repeat_interleave(len(idx))
            pos = (p + torch.arange(T, device=dev))[None].expand(len(idx), T)
            h = forward(ids.to(dev), pos, cache)
            for j, i in enumerate(idx):
                a, e = spans[i]
                x = h[j, a - p:e - p]
                yield i, (head(x) if head is not None else x).float()

    was_training = model.training
    model.eval()
    done = 0
    try:
        with torch.no_grad():
            for P, fine in plan:
                top = None
                if P:   # what the groups have in common, once
                    top = DynamicCache()
                    forward(torch.tensor([list(rows[fine[0][1][0]][:P])], dtype=torch.long, device=dev),
                            torch.arange(P, device=dev)[None], top)
                for p, members in fine:
                    for out in group(p, sorted(members, key=lambda i: (len(rows[i]), i)), P, top):
                        yield out
                        done += 1
                        if done % batch_size == 0 or done == len(todo):
                            progress(min(1.0, done / len(todo)), f"{what} {done}/{len(todo)}")
    finally:
        model.train(was_training)


def scored_length(lm, max_length: int | None = None) -> int:
    """The longest sequence scored: ``max_length`` capped at the model's context
    (``config.max_position_embeddings``); None = the context itself (2048 where a model states none).

    Why the context by default: a fixed 2048 cut BBH geometric_shapes' 3-shot prompts (~2,490 tokens) in all
    50 of 50 cases on a model that takes 8,192 positions, and moved the NLL from 3.58 to 3.86."""
    cap = getattr(lm.model.config, "max_position_embeddings", None)
    if max_length is None:
        return int(cap) if cap else 2048
    return min(max_length, int(cap)) if cap else max_length


def _pair(prompt_ids: list[int], cont_ids: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """prompt + continuation under the encoding max-length policy: cut the prompt from the left,
    then the continuation from the right. Returns (ids, labels, was_cut)."""
    ids, labels = prompt_ids + cont_ids, [IGNORE] * len(prompt_ids) + cont_ids
    if len(ids) <= max_length:
        return ids, labels, False
    cut = min(len(ids) - max_length, max(0, len(prompt_ids) - 1))  # keep >= 1 prompt token as context
    ids, labels = ids[cut:][:max_length], labels[cut:][:max_length]
    return ids, labels, True


def mc_scores(lm, items: Sequence[Sequence[tuple[Record, str]]], *, template: str = "chat", max_length: int | None = None,
              batch_size: int = 8, progress: Progress = no_progress, shared_prompt: bool = True,
              share_prefixes: bool = True) -> tuple[list[list[tuple[float, int]]], int]:
    """Score multiple-choice options: ``items[e]`` lists example e's ``(prompt record, option text)``
    pairs. Returns, per example and option, ``(sum log-prob of the option tokens, number of option
    tokens)``, and the number of pairs whose prompt had to be cut to fit ``max_length``.

    The option is the assistant turn right after the template's generation prompt, tokenised on its
    own (no end-of-turn token: only the option text is compared). All pairs are batched together.
    With ``shared_prompt``, one-token options of the same prompt are scored from one forward of the
    prompt (:func:`next_token_logprobs`; same numbers, one pass instead of one per option). With
    ``share_prefixes``, pairs that begin with the same tokens run them once (:func:`_position_logits`).
    """
    tok = lm.tokenizer
    limit = scored_length(lm, max_length)
    prompt_cache: dict[tuple, list[int]] = {}
    seqs, where, n_cut = [], [], 0
    single: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
    for e, pairs in enumerate(items):
        for c, (rec, option) in enumerate(pairs):
            k = tuple((m["role"], m["content"]) for m in rec.prompt_messages)
            if k not in prompt_cache:
                prompt_cache[k] = encode_prompt(tok, rec, template=template)
            cont = tok(option, add_special_tokens=False)["input_ids"]
            if not cont:
                raise EvalError(f"example {rec.id!r}: option {c} is empty; every option needs text to score")
            ids, labels, cut = _pair(prompt_cache[k], cont, limit)
            n_cut += cut
            if shared_prompt and len(cont) == 1:
                # a one-token option: its score is one entry of the next-token distribution after
                # the prompt, shared by every one-token option of the same (cut) prompt
                g = single.setdefault(tuple(ids[:-1]), [])
                g.append((e, c, ids[-1]))
                continue
            seqs.append((ids, labels))
            where.append((e, c))
    out: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(p) for p in items]
    if single:
        prefixes = list(single)
        lps = next_token_logprobs(lm, [list(p) for p in prefixes], [[t for _, _, t in single[p]] for p in prefixes],
                                  batch_size=batch_size, progress=progress if not seqs else no_progress,
                                  what="scored prompt", min_shared=None if share_prefixes else _NEVER)
        for p, lp in zip(prefixes, lps):
            for (e, c, _), v in zip(single[p], lp):
                out[e][c] = (float(v), 1)
    if seqs:
        lps = sequence_logprobs(lm, seqs, batch_size=batch_size, progress=progress, what="scored option",
                                min_shared=None if share_prefixes else _NEVER)
        for (e, c), lp in zip(where, lps):
            out[e][c] = (float(sum(lp)), len(lp))
    return out, n_cut


def loglik_scores(lm, records: Sequence[Record], *, template: str = "chat", max_length: int | None = None,
                  batch_size: int = 8, progress: Progress = no_progress,
                  share_prefixes: bool = True) -> tuple[list[list[float]], list[bool], list[int | None]]:
    """Per record: the NLLs (nats) of every response token, tokenised as for training (``encode_record``); whether
    it was cut to fit ``max_length`` (``share_prefixes`` as in :func:`mc_scores`); and how many of its scored
    tokens are the response's own text: the first ones, the rest being the template's end-of-turn that survived
    the cut (:func:`~g2is_core.data.encoding.closing_length`; None where it cannot tell).
    """
    limit = scored_length(lm, max_length)
    encs = [encode_record(lm.tokenizer, r, max_length=limit, template=template) for r in records]
    lps = sequence_logprobs(lm, [(e.input_ids, e.labels) for e in encs], batch_size=batch_size, progress=progress,
                            what="scored response", min_shared=None if share_prefixes else _NEVER)
    answer: list[int | None] = []
    for r, e, lp in zip(records, encs, lps):  # counted from the end: the cut takes the end-of-turn first
        c = closing_length(lm.tokenizer, r, template=template)
        answer.append(None if c is None else max(0, len(lp) - max(0, c - e.cut_response)))
    return [[-v for v in lp] for lp in lps], [bool(e.cut_prompt or e.cut_response) for e in encs], answer
