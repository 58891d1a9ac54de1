"""Evaluation of a model on a target task: four protocols, a registry of target evals, pure metrics.

One entry point, :func:`evaluate` (``lm``, an eval name) -> :class:`EvalResult`, and one registry,
:data:`EVALS` (name -> :class:`EvalSpec`). Every number comes from a pure function below
(:func:`extract_number`, :func:`extract_bbh_answer`, :func:`mc_predict`, :func:`squad_f1`, ...)
that is tested on hand-made inputs; the model code only produces log-probs and completions.

Protocols
---------
``loglik``       Answer log-likelihood of the gold response given the prompt. Each record is
                 tokenised exactly as for training (:func:`~g2is_core.encoding.encode_record`:
                 chat template, response-only labels, so the end-of-turn token is scored too).
                 metrics: ``nll`` = token-weighted mean NLL over all response tokens (nats),
                 ``ppl`` = exp(nll), ``nll_example`` = mean of per-example mean NLLs, ``n_tokens``.
                 Meaningful for any model, even one that never produces a correct answer; it is
                 available for every eval (``protocol="loglik"``), not only its primary one.
``exact_match``  Greedy generation (:func:`~g2is_core.generation.greedy_answers`) and a per-task
                 answer extraction: GSM8K / SVAMP -> :func:`extract_number`; BBH ->
                 :func:`extract_bbh_answer` + :func:`bbh_match`; built-in tasks ->
                 :func:`g2is_core.data.tasks.is_correct`. metrics: ``accuracy``.
``mc``           Multiple choice by log-likelihood: every (prompt, option) pair is scored as the
                 sum log-prob of the option's tokens given the prompt (all pairs of all examples
                 batched together). Prediction = argmax. Two scores, both reported:
                 ``accuracy_sum`` (sum log-prob) and ``accuracy_norm`` (mean log-prob per option
                 token, llm-foundry's rule; it removes the bias towards short options).
                 ``accuracy`` is the spec's primary one: ``sum`` where the options are fixed
                 labels of the same length (MMLU letters, BoolQ true/false, the lettered
                 CSQA/SIQA, WinoGrande whose scored continuation is the same for both options),
                 ``norm`` where the options are free text of different lengths (ARC, OpenBookQA,
                 PIQA, COPA).
``f1``           TyDi QA GoldP: greedy generation, prediction = the first line of the
                 completion; SQuAD v1.1 metrics (:func:`squad_normalize`: lowercase, drop
                 punctuation, drop the English articles a/an/the, collapse whitespace), max over
                 the gold answers. metrics: ``em`` and ``f1`` (fractions, not percent). Article
                 removal is English-only, as in the official script used for TyDi QA GoldP; for
                 the other 8 languages it is a no-op except on the rare Latin-script "a"/"the".

Prompts. The records' prompt is the user turn of the model's chat template (``template="chat"``,
as in training) or the plain Alpaca template (``"plain"``). Few-shot exemplars are prepended
inside that one user turn (as open-instruct does for chat models):

* MMLU: the k dev questions of the same subject in the Hendrycks format (default k = 5)::

      The following are multiple choice questions (with answers) about {subject}.\\n\\n
      {q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n   (k times)
      {q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

  and the scored options are the letters "A".."D" (the assistant turn; no leading space).
* BBH: the task description and the first k of its 3 chain-of-thought exemplars
  (:func:`g2is_core.data.loaders.load_bbh_cot_prompt`), then ``Q: {input}\\nA: Let's think step by
  step.`` (default k = 3; k = 0 asks the question alone and takes the first line as the answer).
* GSM8K: k worked solutions from the head of the train file (calculator annotations removed),
  default k = 0.

Held-out data. The GSM8K test split and the ARC-Challenge test split are not in shared/data and
must not be fetched from elsewhere. ``gsm8k`` therefore evaluates on the LAST 1,000 rows of the
train file (lines 6,474-7,473; GSM8K few-shot exemplars come from the head of the file) and
``arc_challenge`` on its train split: both are dev sets, not the official test numbers. Note that
flan_v2_cot/gsm8k_train holds the same questions, so a candidate pool built from it must drop the
``gsm8k`` eval questions (:func:`eval_records` gives them). Nothing here is fitted to the data.

Subsets. ``limit`` takes a deterministic subset (``seed``) in the file order; for MMLU it is
stratified over the 57 subjects. Built-in evals draw 200 test-split records per task (suite seed
0, disjoint from every pool) and subset those.
"""
from __future__ import annotations

import difflib
import math
import random
import re
import string
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..data import tasks
from ..data.encoding import IGNORE, encode_prompt, encode_record
from ..progress import Progress, no_progress
from ..data.records import Record
from ..workspace import shared_data_root

__all__ = [
    "EVALS", "EvalSpec", "EvalResult", "EvalError", "PROTOCOLS", "evaluate", "eval_records", "eval_names", "get_spec",
    "mmlu_block", "mmlu_header",
    "sequence_logprobs", "mc_scores", "loglik_scores",
    "extract_number", "normalize_number", "extract_bbh_answer", "bbh_match", "mc_predict",
    "squad_normalize", "squad_em", "squad_f1", "squad_scores", "perplexity", "loglik_metrics", "subset",
]

PROTOCOLS = ("loglik", "exact_match", "mc", "f1")


class EvalError(ValueError):
    """An evaluation cannot run as asked; the message says what to do."""


# ============================================================================ pure metrics
_NUMBER = re.compile(r"(?:(?<![\w.])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w.])-)?\.\d+")
_ANSWER_IS = re.compile(r"the (?:final )?answer is", re.IGNORECASE)


def normalize_number(text: str | None) -> str | None:
    """A canonical spelling of a number: thousands commas and a leading "$" dropped, trailing
    zeros of a decimal dropped ("3.50" -> "3.5", "42.0" -> "42"), "-0" -> "0". None if not a number."""
    if text is None:
        return None
    s = text.strip().replace(",", "").lstrip("$").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_number(text: str | None) -> str | None:
    """The final numeric answer in a completion (GSM8K rules), normalised; None if there is none.

    Order: the first number after the last "####"; else the first number after the last "the
    answer is"; else the last number in the text. "so 3,200 dollars. The answer is 3200." -> "3200".
    """
    t = text or ""
    for marker in ("####", None):
        if marker == "####":
            k = t.rfind("####")
            if k < 0:
                continue
            tail = t[k + 4:]
        else:
            hits = list(_ANSWER_IS.finditer(t))
            if not hits:
                break
            tail = t[hits[-1].end():]
        m = _NUMBER.search(tail)
        if m:
            return normalize_number(m.group(0))
    nums = _NUMBER.findall(t)
    return normalize_number(nums[-1]) if nums else None


_SO_ANSWER = re.compile(r"so the answer is", re.IGNORECASE)
_MC_LETTER = re.compile(r"^\(([A-Z])\)$")


def extract_bbh_answer(text: str | None, *, cot: bool = True) -> str:
    """The answer in a BBH completion: the text after the last "So the answer is" (up to the end
    of that line, final period dropped) when ``cot``/present; else the first non-empty line."""
    t = (text or "").strip()
    hits = list(_SO_ANSWER.finditer(t)) if cot else []
    if hits:
        s = t[hits[-1].end():].strip().split("\n")[0]
    else:
        s = next((ln for ln in t.splitlines() if ln.strip()), "")
    s = s.strip()
    while s.endswith(".") and not s.endswith("..."):
        s = s[:-1].rstrip()
    return s


def bbh_match(prediction: str | None, target: str) -> bool:
    """BBH exact match. Multiple-choice targets "(X)" accept "(X)", "(X) text", "X" and "X) text";
    other targets compare case-insensitively after collapsing whitespace and dropping a final
    period ("True." == "true")."""
    pred = (prediction or "").strip()
    gold = target.strip()
    m = _MC_LETTER.match(gold)
    if m:
        pm = re.match(r"^\(?([A-Z])\)?(?=$|[\s.:,)])", pred)
        return bool(pm) and pm.group(1) == m.group(1)

    def norm(s: str) -> str:
        return " ".join(s.strip().rstrip(".").split()).lower()
    return norm(pred) == norm(gold)


def mc_predict(sum_logprobs: Sequence[float], n_tokens: Sequence[int]) -> tuple[int, int]:
    """(argmax of the summed log-probs, argmax of the per-token mean log-probs) over the options.
    Ties go to the first option."""
    if not sum_logprobs or len(sum_logprobs) != len(n_tokens):
        raise ValueError("need one summed log-prob and one token count per option")
    norm = [s / max(1, n) for s, n in zip(sum_logprobs, n_tokens)]
    return (max(range(len(sum_logprobs)), key=lambda i: (sum_logprobs[i], -i)),
            max(range(len(norm)), key=lambda i: (norm[i], -i)))


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def squad_normalize(s: str) -> str:
    """SQuAD v1.1 answer normalisation: lowercase, remove punctuation (ASCII punctuation as in the
    official script, plus every Unicode punctuation character so that e.g. "،" or "。" go too),
    remove the English articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_em(prediction: str, gold: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token F1 over whitespace tokens of the normalised strings (bag-of-tokens overlap)."""
    p, g = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common: dict[str, int] = {}
    for w in p:
        common[w] = common.get(w, 0) + 1
    same = 0
    for w in g:
        if common.get(w, 0) > 0:
            same += 1
            common[w] -= 1
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: Iterable[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction: the max over the gold answers, as in the SQuAD script."""
    golds = list(golds)
    if not golds:
        raise ValueError("need at least one gold answer")
    return max(squad_em(prediction, g) for g in golds), max(squad_f1(prediction, g) for g in golds)


def perplexity(token_nlls: Sequence[float]) -> float:
    """exp of the mean token NLL (nats)."""
    if not len(token_nlls):
        raise ValueError("perplexity of no tokens is undefined")
    return math.exp(sum(token_nlls) / len(token_nlls))


def loglik_metrics(per_example_nlls: Sequence[Sequence[float]]) -> dict[str, float]:
    """Metrics of the loglik protocol from each example's response-token NLLs: ``nll`` (token-
    weighted mean), ``ppl`` = exp(nll), ``nll_example`` (mean of per-example means), ``n_tokens``."""
    scored = [list(x) for x in per_example_nlls if len(x)]
    if not scored:
        raise ValueError("no example has a scored response token")
    flat = [v for x in scored for v in x]
    nll = sum(flat) / len(flat)
    return {"nll": nll, "ppl": math.exp(nll), "nll_example": sum(sum(x) / len(x) for x in scored) / len(scored),
            "n_tokens": float(len(flat))}


def subset(n: int, limit: int | None, seed: int, *, key: str = "", groups: Sequence[str] | None = None) -> list[int]:
    """Indices of a deterministic subset of ``range(n)`` of size ``limit`` (all if None or >= n), in
    ascending order. With ``groups`` (one label per item) the subset is spread evenly over the groups
    (the groups that get one more are drawn by the seed too)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    rng = random.Random(f"{key}:{seed}")
    if groups is None:
        return sorted(rng.sample(range(n), limit))
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    names = sorted(by)
    rng.shuffle(names)
    quota = {g: 0 for g in names}
    left = limit
    while left:  # round-robin so a small group caps out and its share goes to the others
        moved = False
        for g in names:
            if left and quota[g] < len(by[g]):
                quota[g] += 1
                left -= 1
                moved = True
        if not moved:
            break
    out = [i for g in names for i in rng.sample(by[g], quota[g])]
    return sorted(out)


# ============================================================================ model scoring
def _device(model):
    return next(model.parameters()).device


def sequence_logprobs(lm, seqs: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                      progress: Progress = no_progress, what: str = "scored") -> list[list[float]]:
    """Log-probs of the labelled tokens of each sequence, in order.

    seqs: ``(input_ids [T], labels [T])`` pairs, labels = the token id where it is scored and
    :data:`~g2is_core.encoding.IGNORE` elsewhere (as from ``encode_record``). Returns, per sequence,
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


def _max_length(lm, max_length: int) -> int:
    cap = getattr(lm.model.config, "max_position_embeddings", None)
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


def mc_scores(lm, items: Sequence[Sequence[tuple[Record, str]]], *, template: str = "chat", max_length: int = 2048,
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
    limit = _max_length(lm, max_length)
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


def loglik_scores(lm, records: Sequence[Record], *, template: str = "chat", max_length: int = 2048,
                  batch_size: int = 8, progress: Progress = no_progress) -> tuple[list[list[float]], int]:
    """Per-record NLLs (nats) of every response token, tokenised as for training (``encode_record``),
    and the number of records cut to fit ``max_length``."""
    limit = _max_length(lm, max_length)
    encs = [encode_record(lm.tokenizer, r, max_length=limit, template=template) for r in records]
    lps = sequence_logprobs(lm, [(e.input_ids, e.labels) for e in encs], batch_size=batch_size, progress=progress,
                            what="scored response")
    return [[-v for v in lp] for lp in lps], sum(1 for e in encs if e.cut_prompt or e.cut_response)


# ============================================================================ the registry
Loader = Callable[[Path | None], list[Record]]
Prepare = Callable[[list[Record], int, Path | None], list[Record]]


@dataclass(frozen=True)
class EvalSpec:
    """One target evaluation. Fields say where the examples come from and how they are scored."""

    name: str
    description: str                             # one sentence for the app, with the split used
    protocol: str                                # the primary protocol (one of PROTOCOLS)
    load: Loader = field(repr=False)             # data root (None when absent) -> test examples, in order
    needs_data: bool = True                      # False for the built-in suite (no files)
    shots: int = 0                               # default number of few-shot exemplars
    max_shots: int = 0                           # most the benchmark defines (0 = no few-shot)
    prepare: Prepare | None = field(default=None, repr=False)  # (records, shots, root) -> prompted records
    options: Callable[[Record], list[tuple[Record, str]]] | None = field(default=None, repr=False)  # mc pairs
    mc_primary: str = "sum"                      # "sum" | "norm": which mc accuracy is `accuracy`
    score: Callable[[Record, str], tuple[Any, bool]] | None = field(default=None, repr=False)  # exact_match
    max_new_tokens: int = 32
    stratify: bool = False                       # spread `limit` evenly over record.subtask

    @property
    def protocols(self) -> tuple[str, ...]:
        """Protocols this eval supports, the primary first (loglik works for every eval)."""
        return (self.protocol,) if self.protocol == "loglik" else (self.protocol, "loglik")


@dataclass
class EvalResult:
    """What :func:`evaluate` measured. ``per_example`` dicts carry at least id, prediction, gold,
    correct, score; ``by_group`` holds the same metrics per subtask where an eval mixes several."""

    name: str
    protocol: str
    n: int
    metrics: dict[str, float]
    per_example: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


EVALS: dict[str, EvalSpec] = {}


def _register(spec: EvalSpec) -> EvalSpec:
    if spec.name in EVALS:
        raise ValueError(f"eval {spec.name!r} is registered twice")
    if spec.protocol not in PROTOCOLS:
        raise ValueError(f"eval {spec.name!r}: protocol {spec.protocol!r} is not one of {PROTOCOLS}")
    EVALS[spec.name] = spec
    return spec


def _with_prompt(rec: Record, text: str) -> Record:
    """The record with its last user message replaced by ``text``."""
    msgs = list(rec.messages)
    k = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[k] = {"role": "user", "content": text}
    return replace(rec, messages=tuple(msgs))


def _load(path: Path, fmt: str | None = None) -> list[Record]:
    from ..data.loaders import load_records
    return load_records(path, fmt).records


def _need(root: Path | None) -> Path:
    assert root is not None  # evaluate() checks needs_data before loading
    return root


# ---- built-in suite
BUILTIN_TEST_N = 200


def _builtin_loader(task: str) -> Loader:
    return lambda root: tasks.make_task_records(task, BUILTIN_TEST_N, seed=0, split="test")


def _builtin_score(rec: Record, completion: str) -> tuple[Any, bool]:
    return tasks.extract_answer(rec.task, completion), tasks.is_correct(rec.task, completion, rec.answer or "")


for _t in tasks.task_names():
    _register(EvalSpec(f"builtin:{_t}", f"Built-in {tasks.TASKS[_t].kind} task {_t!r}: {BUILTIN_TEST_N} test-split "
                       "records (suite seed 0), exact match after tasks.extract_answer.", "exact_match",
                       _builtin_loader(_t), needs_data=False, score=_builtin_score, max_new_tokens=16))


# ---- GSM8K (train file only; the test split is held out)
GSM8K_EVAL_ROWS = 1000
_CALC = re.compile(r"<<[^>]*>>")


def _gsm8k_all(root: Path) -> list[Record]:
    return _load(root / "gsm8k" / "train.jsonl.gz", "gsm8k")


def _gsm8k_loader(root: Path | None) -> list[Record]:
    return _gsm8k_all(_need(root))[-GSM8K_EVAL_ROWS:]


def _gsm8k_prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
    if not shots:
        return records
    head = _gsm8k_all(_need(root))[:shots]
    prefix = "".join(f"Question: {r.prompt}\nAnswer: {_CALC.sub('', r.response)}\n\n" for r in head)
    return [_with_prompt(r, f"{prefix}Question: {r.prompt}\nAnswer:") for r in records]


def _number_score(rec: Record, completion: str) -> tuple[Any, bool]:
    pred = extract_number(completion)
    return pred, pred is not None and pred == normalize_number(rec.answer)


_register(EvalSpec("gsm8k", f"GSM8K dev: the last {GSM8K_EVAL_ROWS} rows of the TRAIN file (the test split is held "
                   "out), greedy generation, final-number exact match.", "exact_match", _gsm8k_loader,
                   max_shots=8, prepare=_gsm8k_prepare, score=_number_score, max_new_tokens=256))


# ---- BIG-Bench Hard (22 of 27 tasks; 5 held out)
BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "disambiguation_qa", "dyck_languages", "formal_fallacies",
    "hyperbaton", "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two", "object_counting",
    "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
)


def _bbh_prepare_for(task: str) -> Prepare:
    def prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
        if not shots:
            return records
        from ..data.loaders import bbh_cot_exemplars, load_bbh_cot_prompt
        full = load_bbh_cot_prompt(task)
        description = full[: full.index("Q:")].strip()
        ex = bbh_cot_exemplars(task)[:shots]
        prefix = (description + "\n\n" if description else "") + "".join(
            f"Q: {e.prompt}\nA: {e.response}\n\n" for e in ex)
        return [_with_prompt(r, f"{prefix}Q: {r.prompt}\nA: Let's think step by step.") for r in records]
    return prepare


def _bbh_score(rec: Record, completion: str) -> tuple[Any, bool]:
    pred = extract_bbh_answer(completion)
    return pred, bbh_match(pred, rec.answer or "")


for _t in BBH_TASKS:
    _register(EvalSpec(f"bbh:{_t}", f"BBH {_t}: its 250 (or fewer) examples, chain-of-thought with the task's 3-shot "
                       "prompt, answer after 'So the answer is'.", "exact_match",
                       (lambda t: lambda root: _load(_need(root) / "bbh" / "bbh" / f"{t}.json", "bbh"))(_t),
                       shots=3, max_shots=3, prepare=_bbh_prepare_for(_t), score=_bbh_score, max_new_tokens=256))


# ---- MMLU (test split for evaluation, dev split for the k shots)
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)
_LETTERS = ("A", "B", "C", "D")


def mmlu_block(question: str, choices: Sequence[str], answer: str | None = None) -> str:
    """One question in the Hendrycks layout; with ``answer`` it ends "Answer: X\\n\\n" (a shot)."""
    s = question + "".join(f"\n{k}. {c}" for k, c in zip(_LETTERS, choices)) + "\nAnswer:"
    return s + f" {answer}\n\n" if answer is not None else s


def mmlu_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _mmlu_loader(subjects: Sequence[str]) -> Loader:
    def load(root: Path | None) -> list[Record]:
        d = _need(root) / "mmlu" / "data" / "test"
        return [r for s in subjects for r in _load(d / f"{s}_test.csv", "mmlu")]
    return load


def _mmlu_prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
    dev: dict[str, list[Record]] = {}
    out = []
    for r in records:
        s = r.subtask or ""
        if shots and s not in dev:
            dev[s] = _load(_need(root) / "mmlu" / "data" / "dev" / f"{s}_dev.csv", "mmlu")
        shot_text = "".join(mmlu_block(d.metadata["question"].strip(), d.choices or (), d.answer)
                            for d in dev.get(s, [])[:shots])
        block = mmlu_block(r.metadata["question"].strip(), r.choices or ())
        out.append(_with_prompt(r, mmlu_header(s) + shot_text + block))
    return out


def _letter_options(rec: Record) -> list[tuple[Record, str]]:
    return [(rec, k) for k in _LETTERS[: len(rec.choices or ())]]


_register(EvalSpec("mmlu", "MMLU test split, all 57 subjects, 5-shot from each subject's dev split (Hendrycks "
                   "format), letter log-likelihood; `limit` is spread evenly over subjects.", "mc",
                   _mmlu_loader(MMLU_SUBJECTS), shots=5, max_shots=5, prepare=_mmlu_prepare, options=_letter_options,
                   stratify=True))
for _s in MMLU_SUBJECTS:
    _register(EvalSpec(f"mmlu:{_s}", f"MMLU {_s.replace('_', ' ')}: test split, 5-shot from its dev split, letter "
                       "log-likelihood.", "mc", _mmlu_loader((_s,)), shots=5, max_shots=5, prepare=_mmlu_prepare,
                       options=_letter_options))


# ---- ARC / BoolQ / OpenBookQA (LLM-Adapters files)
_ADAPTER_Q = re.compile(r"^Please choose the correct answer to the question:\s*(.*?)\s*\n\s*\nAnswer1:", re.S)


def _cloze_options(rec: Record) -> list[tuple[Record, str]]:
    """Harness-style cloze: "Question: {q}\\nAnswer:" -> each option's text (the listed options and the
    answerN labels of the LLM-Adapters prompt are dropped, so the score is about the content)."""
    m = _ADAPTER_Q.match(rec.prompt)
    q = m.group(1) if m else rec.prompt
    p = _with_prompt(rec, f"Question: {q}\nAnswer:")
    return [(p, c) for c in rec.choices or ()]


def _same_options(rec: Record) -> list[tuple[Record, str]]:
    return [(rec, c) for c in rec.choices or ()]


def _adapters(rel: str) -> Loader:
    return lambda root: _load(_need(root) / "llm_adapters_tasks" / rel, "llm_adapters")


_register(EvalSpec("arc_easy", "ARC-Easy test split (2,376), option-text log-likelihood given the question "
                   "(length-normalised).", "mc", _adapters("ARC-Easy/test.json"), options=_cloze_options,
                   mc_primary="norm"))
_register(EvalSpec("arc_challenge", "ARC-Challenge TRAIN split (1,119; the test split is held out), option-text "
                   "log-likelihood given the question (length-normalised).", "mc",
                   _adapters("ARC-Challenge/train.json.gz"), options=_cloze_options, mc_primary="norm"))
_register(EvalSpec("boolq", "BoolQ validation split (3,270; LLM-Adapters 'test', question only, no passage), "
                   "log-likelihood of 'true' vs 'false' after the original prompt.", "mc",
                   _adapters("boolq/test.json"), options=_same_options))
_register(EvalSpec("openbookqa", "OpenBookQA test split (500), option-text log-likelihood given the question "
                   "(length-normalised).", "mc", _adapters("openbookqa/test.json"), options=_cloze_options,
                   mc_primary="norm"))


# ---- llm-foundry eval gauntlet sets
def _foundry(stem: str) -> Loader:
    return lambda root: _load(_need(root) / "mosaic_eval_gauntlet" / f"{stem}.jsonl", "foundry_eval")


def _schema_options(rec: Record) -> list[tuple[Record, str]]:
    """WinoGrande partial scoring: the same continuation after each context option."""
    cont = rec.metadata["continuation"]
    return [(_with_prompt(rec, c), cont) for c in rec.choices or ()]


def _text_score(rec: Record, completion: str) -> tuple[Any, bool]:
    pred = extract_bbh_answer(completion)
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731
    return pred, norm(pred) == norm(rec.answer or "")


for _stem, _desc, _primary in (("commonsense_qa", "CommonsenseQA dev (1,221), lettered options", "sum"),
                               ("siqa", "Social IQa dev (1,954), lettered options", "sum"),
                               ("piqa", "PIQA validation (1,838), solution text", "norm"),
                               ("copa", "COPA (100), option text", "norm")):
    _register(EvalSpec(f"foundry:{_stem}", f"{_desc}: option log-likelihood after the query (llm-foundry file).", "mc",
                       _foundry(_stem), options=_same_options, mc_primary=_primary))
_register(EvalSpec("foundry:winogrande", "WinoGrande dev (1,267): log-likelihood of the shared continuation after "
                   "each filled-in context (partial scoring).", "mc", _foundry("winogrande"), options=_schema_options))
_register(EvalSpec("foundry:svamp", "SVAMP (300): greedy generation, final-number exact match.", "exact_match",
                   _foundry("svamp"), score=_number_score, max_new_tokens=128))
_register(EvalSpec("foundry:aqua", "AQuA (245): greedy generation, the text after 'the answer is' must equal the "
                   "answer (case and spacing ignored).", "exact_match", _foundry("aqua"), score=_text_score,
                   max_new_tokens=256))


# ---- TyDi QA GoldP
TYDIQA_LANGS = ("arabic", "bengali", "english", "finnish", "indonesian", "korean", "russian", "swahili", "telugu")


def _tydiqa_loader(lang: str) -> Loader:
    # LESS uses the first dev question of each language as the target; the rest is the eval set.
    return lambda root: _load(_need(root) / "tydiqa_goldp" / "dev" / f"{lang}_tydiqa_dev.json", "tydiqa")[1:]


for _l in TYDIQA_LANGS:
    _register(EvalSpec(f"tydiqa:{_l}", f"TyDi QA GoldP {_l} dev minus its first question (the LESS target), greedy "
                       "answer, SQuAD EM/F1.", "f1", _tydiqa_loader(_l), max_new_tokens=50))


# ============================================================================ evaluate
def eval_names(protocol: str | None = None) -> tuple[str, ...]:
    """Registered eval names (those whose primary protocol is ``protocol``, if given)."""
    return tuple(n for n, s in EVALS.items() if protocol is None or s.protocol == protocol)


def _names_sentence() -> str:
    shown = [n for n in EVALS if not n.startswith("mmlu:")]
    return ", ".join(shown) + f", and mmlu:<subject> for the {len(MMLU_SUBJECTS)} MMLU subjects"


def get_spec(eval_name: str | EvalSpec) -> EvalSpec:
    if isinstance(eval_name, EvalSpec):
        return eval_name
    if eval_name in EVALS:
        return EVALS[eval_name]
    close = difflib.get_close_matches(str(eval_name), list(EVALS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown eval {eval_name!r}.{hint} Valid evals: {_names_sentence()}.")


def _root_for(spec: EvalSpec) -> Path | None:
    root = shared_data_root()
    if spec.needs_data and root is None:
        raise EvalError(f"the eval {spec.name!r} needs the shared data folder ../shared/data beside the checkout "
                        "(or G2IS_SHARED_DATA pointing at it), which is not there; the built-in evals "
                        "(builtin:<task>) work without it")
    return root


def eval_records(eval_name: str | EvalSpec, *, limit: int | None = None, seed: int = 0,
                 shots: int | None = None) -> list[Record]:
    """The examples :func:`evaluate` would score, with their few-shot prompts, in order."""
    spec = get_spec(eval_name)
    root = _root_for(spec)
    k = spec.shots if shots is None else shots
    if k < 0 or k > spec.max_shots:
        raise EvalError(f"the eval {spec.name!r} takes 0 to {spec.max_shots} few-shot exemplars, not {k}")
    records = spec.load(root)
    keep = subset(len(records), limit, seed, key=spec.name,
                  groups=[r.subtask or "" for r in records] if spec.stratify else None)
    records = [records[i] for i in keep]
    return spec.prepare(records, k, root) if spec.prepare is not None else records


def _group_metrics(per: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per-subtask means: ``keys`` maps a metric name to the per-example field it averages. Empty
    unless the examples span at least two subtasks (MMLU subjects)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in per:
        if p.get("group"):
            groups.setdefault(p["group"], []).append(p)
    if len(groups) < 2:
        return {}
    return {g: {**{name: sum(float(x[k]) for x in xs) / len(xs) for name, k in keys.items()}, "n": float(len(xs))}
            for g, xs in sorted(groups.items())}


def evaluate(lm, eval_name: str | EvalSpec, *, limit: int | None = None, seed: int = 0, batch_size: int = 8,
             protocol: str | None = None, shots: int | None = None, template: str = "chat",
             max_new_tokens: int | None = None, max_length: int = 2048,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate ``lm`` (a :class:`~g2is_core.models.LoadedModel`) on one registered eval.

    limit: number of examples (a deterministic subset drawn with ``seed``; None = all).
    protocol: override the spec's primary protocol (only "loglik" is accepted as an alternative).
    shots: few-shot exemplars (None = the benchmark's default; 0 allowed). template: "chat" | "plain".
    max_new_tokens: override the generation budget of exact_match / f1 evals.
    max_length: the longest scored sequence for loglik / mc (prompts are cut from the left beyond it).
    """
    spec = get_spec(eval_name)
    proto = protocol or spec.protocol
    if proto not in spec.protocols:
        raise EvalError(f"the eval {spec.name!r} supports the protocols {', '.join(spec.protocols)}, not {proto!r}")
    prog = progress or no_progress
    records = eval_records(spec, limit=limit, seed=seed, shots=shots)
    if not records:
        raise EvalError(f"the eval {spec.name!r} has no examples to score")
    config = {"limit": limit, "seed": seed, "shots": spec.shots if shots is None else shots, "template": template,
              "batch_size": batch_size, "max_length": max_length, "model": getattr(lm, "identity", {})}
    per: list[dict[str, Any]] = []
    metrics: dict[str, float]
    if proto == "loglik":
        nlls, n_cut = loglik_scores(lm, records, template=template, max_length=max_length, batch_size=batch_size,
                                    progress=prog)
        for r, x in zip(records, nlls):
            nll = sum(x) / len(x) if x else float("nan")
            per.append({"id": r.id, "prediction": None, "gold": r.response, "correct": None, "score": -nll,
                        "nll": nll, "n_tokens": len(x), "group": r.subtask})
        metrics = {**loglik_metrics(nlls), "n_truncated": float(n_cut)}
        by_group = _group_metrics(per, {"nll_example": "nll"})
    elif proto == "mc":
        items = [(spec.options or _same_options)(r) for r in records]
        for r, it in zip(records, items):
            if len(it) < 2 or r.gold is None:
                raise EvalError(f"example {r.id!r} of {spec.name!r} has no options or no gold index to score")
        scores, n_cut = mc_scores(lm, items, template=template, max_length=max_length, batch_size=batch_size,
                                  progress=prog)
        for r, it, sc in zip(records, items, scores):
            sums, lens = [s for s, _ in sc], [n for _, n in sc]
            p_sum, p_norm = mc_predict(sums, lens)
            pred = p_sum if spec.mc_primary == "sum" else p_norm
            per.append({"id": r.id, "prediction": pred, "gold": r.gold, "correct": pred == r.gold,
                        "score": sums[pred] if spec.mc_primary == "sum" else sums[pred] / max(1, lens[pred]),
                        "correct_sum": p_sum == r.gold, "correct_norm": p_norm == r.gold,
                        "logprob_sum": sums, "n_tokens": lens, "group": r.subtask})
        n = len(per)
        metrics = {"accuracy": sum(p["correct"] for p in per) / n,
                   "accuracy_sum": sum(p["correct_sum"] for p in per) / n,
                   "accuracy_norm": sum(p["correct_norm"] for p in per) / n, "n_truncated": float(n_cut)}
        by_group = _group_metrics(per, {"accuracy": "correct", "accuracy_sum": "correct_sum",
                                         "accuracy_norm": "correct_norm"})
        if by_group:
            metrics["accuracy_macro"] = sum(g["accuracy"] for g in by_group.values()) / len(by_group)
    else:
        budget = max_new_tokens or spec.max_new_tokens
        outs = _greedy(lm, records, budget, batch_size, template, prog)
        for r, out in zip(records, outs):
            if proto == "f1":
                pred = next((ln.strip() for ln in out.splitlines() if ln.strip()), "")
                golds = r.metadata.get("answers") or [r.answer or r.response]
                em, f1 = squad_scores(pred, golds)
                per.append({"id": r.id, "prediction": pred, "gold": golds, "correct": bool(em), "score": f1,
                            "em": em, "f1": f1, "completion": out, "group": r.subtask})
            else:
                pred, ok = (spec.score or _builtin_score)(r, out)
                per.append({"id": r.id, "prediction": pred, "gold": r.answer, "correct": bool(ok),
                            "score": float(ok), "completion": out, "group": r.subtask})
        n = len(per)
        if proto == "f1":
            metrics = {"em": sum(p["em"] for p in per) / n, "f1": sum(p["f1"] for p in per) / n}
            by_group = _group_metrics(per, {"em": "em", "f1": "f1"})
        else:
            metrics = {"accuracy": sum(p["correct"] for p in per) / n}
            by_group = _group_metrics(per, {"accuracy": "correct"})
        config["max_new_tokens"] = budget
    return EvalResult(spec.name, proto, len(per), metrics, per, config, by_group)


def _greedy(lm, records: Sequence[Record], max_new_tokens: int, batch_size: int, template: str,
           progress: Progress) -> list[str]:
    """Greedy completions (the project's batched generator)."""
    from ..models.generation import greedy_answers
    return greedy_answers(lm, records, max_new_tokens=max_new_tokens, batch_size=batch_size, template=template,
                          progress=progress)
