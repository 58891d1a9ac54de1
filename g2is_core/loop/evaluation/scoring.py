"""Model scoring for evaluation: log-probs of labelled tokens, batched and left-padded.

The protocols (:mod:`.protocols`) ask these functions for numbers; everything they compute from
them is a pure function in :mod:`.metrics`. Two primitives, :func:`sequence_logprobs` (every
labelled token of each sequence) and :func:`next_token_logprobs` (a few candidate next tokens
after each prefix, one forward per prefix), and two uses of them: :func:`mc_scores` (multiple-choice
options) and :func:`loglik_scores` (gold-response NLLs, tokenised as for training).
"""
from __future__ import annotations

from typing import Sequence

from ...data.encoding import IGNORE, encode_prompt, encode_record
from ...data.records import Record
from ...progress import Progress, no_progress
from .metrics import EvalError


def _device(model):
    return next(model.parameters()).device


def sequence_logprobs(lm, seqs: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                      progress: Progress = no_progress, what: str = "scored") -> list[list[float]]:
    """Log-probs of the labelled tokens of each sequence, in order.

    seqs: ``(input_ids [T], labels [T])`` pairs, labels = the token id where it is scored and
    :data:`~g2is_core.data.encoding.IGNORE` elsewhere (as from ``encode_record``). Returns, per sequence,
    log p(token_t | tokens_<t) for every labelled t >= 1, in position order.

    Batches are LEFT-padded (with explicit position ids, so a row gives the same numbers as alone):
    every scored token then sits in the last columns, and ``logits_to_keep`` lets the model project
    only those positions onto the vocabulary instead of all of them ([B, K, V] instead of [B, T, V]).
    """
    import torch

    out: list[list[float]] = [[] for _ in seqs]
    labels: list = [None]  # the batch's label tensor, built by keep() from the same padding

    def keep(idx, ids):
        T = ids.shape[1]
        lab = torch.full((len(idx), T), IGNORE, dtype=torch.long)
        for j, i in enumerate(idx):
            x, y = seqs[i]
            lab[j, T - len(x):] = torch.tensor(list(y), dtype=torch.long)
            lab[j, T - len(x)] = IGNORE  # the first token has no context to be predicted from
        labels[0] = lab
        scored = (lab != IGNORE).any(0).nonzero()
        return T - int(scored[0]) + 1 if len(scored) else 0  # logits at positions first-1 .. T-1

    for idx, ids, logits in _scored_batches(lm, [x for x, _ in seqs], batch_size, keep, progress, what):
        if logits is None:
            continue
        k = logits.shape[1]
        logits = logits[:, :-1].float()                              # [B, k-1, V], predicting the next token
        target = labels[0][:, ids.shape[1] - k + 1:].to(logits.device)  # [B, k-1]
        lp = (logits.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)).cpu()
        mask = (target != IGNORE).cpu()
        for j, i in enumerate(idx):
            out[i] = lp[j][mask[j]].tolist()
    return out


def _left_pad(rows: Sequence[Sequence[int]], pad: int):
    """Left-pad token rows into ``(input_ids, attention_mask, position_ids)`` [B, T] tensors; positions
    count from each row's first real token, so a padded row gives the same numbers as alone."""
    import torch

    T = max(len(x) for x in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    pos = torch.zeros((len(rows), T), dtype=torch.long)
    for j, x in enumerate(rows):
        L = len(x)
        ids[j, T - L:] = torch.tensor(list(x), dtype=torch.long)
        att[j, T - L:] = 1
        pos[j, T - L:] = torch.arange(L)
    return ids, att, pos


def next_token_logprobs(lm, prefixes: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], *,
                        batch_size: int = 8, progress: Progress = no_progress,
                        what: str = "scored prompt") -> list[list[float]]:
    """log p(c | prefix) for every candidate token c of each prefix, from ONE forward per prefix.

    A multiple-choice question whose options are single tokens (MMLU's letters) is then scored by
    one pass over its (long, few-shot) prompt instead of one pass per option; the numbers are those
    :func:`sequence_logprobs` gives for ``prefix + [c]`` (tested).
    """
    import torch

    out: list[list[float]] = [[] for _ in prefixes]
    for idx, _, logits in _scored_batches(lm, prefixes, batch_size, lambda idx, ids: 1, progress, what):
        lp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()
        for j, i in enumerate(idx):
            out[i] = lp[j, list(candidates[i])].tolist()
    return out


def _scored_batches(lm, rows: Sequence[Sequence[int]], batch_size: int, keep, progress: Progress, what: str):
    """Forward ``rows`` (token lists) in length-sorted, left-padded batches, the model in eval mode and
    without gradients; yield ``(row indices, padded ids [B, T], logits of the last keep(idx, ids)
    positions [B, K, V])`` per batch (logits None when keep is 0) and report progress after each."""
    import torch

    model = lm.model
    dev = _device(model)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            ids, att, pos = _left_pad([rows[i] for i in idx], pad)
            k = keep(idx, ids)
            logits = None
            if k:
                with torch.no_grad():
                    kw = dict(input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev))
                    try:
                        logits = model(**kw, logits_to_keep=k).logits
                    except TypeError:  # a model without logits_to_keep: project every position
                        logits = model(**kw).logits
                    logits = logits[:, -k:]
            yield idx, ids, logits
            progress(min(1.0, (b + len(idx)) / len(order)), f"{what} {b + len(idx)}/{len(order)}")
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
              batch_size: int = 8, progress: Progress = no_progress, shared_prompt: bool = True) -> tuple[list[list[tuple[float, int]]], int]:
    """Score multiple-choice options: ``items[e]`` lists example e's ``(prompt record, option text)``
    pairs. Returns, per example and option, ``(sum log-prob of the option tokens, number of option
    tokens)``, and the number of pairs whose prompt had to be cut to fit ``max_length``.

    The option is the assistant turn right after the template's generation prompt, tokenised on its
    own (no end-of-turn token: only the option text is compared). All pairs are batched together.
    With ``shared_prompt``, one-token options of the same prompt are scored from one forward of the
    prompt (:func:`next_token_logprobs`; same numbers, one pass instead of one per option).
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
                                  what="scored prompt")
        for p, lp in zip(prefixes, lps):
            for (e, c, _), v in zip(single[p], lp):
                out[e][c] = (float(v), 1)
    if seqs:
        lps = sequence_logprobs(lm, seqs, batch_size=batch_size, progress=progress, what="scored option")
        for (e, c), lp in zip(where, lps):
            out[e][c] = (float(sum(lp)), len(lp))
    return out, n_cut


def loglik_scores(lm, records: Sequence[Record], *, template: str = "chat", max_length: int | None = None,
                  batch_size: int = 8, progress: Progress = no_progress) -> tuple[list[list[float]], int]:
    """Per-record NLLs (nats) of every response token, tokenised as for training (``encode_record``),
    and the number of records cut to fit ``max_length``."""
    limit = scored_length(lm, max_length)
    encs = [encode_record(lm.tokenizer, r, max_length=limit, template=template) for r in records]
    lps = sequence_logprobs(lm, [(e.input_ids, e.labels) for e in encs], batch_size=batch_size, progress=progress,
                            what="scored response")
    return [[-v for v in lp] for lp in lps], sum(1 for e in encs if e.cut_prompt or e.cut_response)
