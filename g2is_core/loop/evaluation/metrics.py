"""Pure evaluation metrics: answer extraction, SQuAD EM/F1, perplexity, subsets, answer scorers.

Every number an eval reports comes from a function here, tested on hand-made inputs; the model code
(:mod:`.scoring`) only produces log-probs and completions. Nothing here touches a model.
"""
from __future__ import annotations

import math
import random
import re
import string
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Sequence

from ...data import tasks
from ...data.records import Record


# The one error type of the evaluation package (here, at its base, so every module can raise it).
class EvalError(ValueError):
    """An evaluation cannot run as asked; the message says what to do."""


# ---------------------------------------------------------------------------- numbers and answers
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


def gold_logprob(option_scores: Sequence[float], gold: int) -> float:
    """log p(gold | the options): the gold option's score minus the log-sum-exp over every option's score
    (a log-softmax over the options). Scores are the option log-likelihoods the prediction compares (sum
    log-probs, or per-token means for length-normalised evals). Continuous where accuracy is a step:
    0 = all the mass on the gold option, log(1/n) = no preference among n options."""
    if not 0 <= gold < len(option_scores):
        raise ValueError(f"gold index {gold} is not one of the {len(option_scores)} options")
    top = max(option_scores)
    return float(option_scores[gold] - top - math.log(sum(math.exp(s - top) for s in option_scores)))


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


MAX_LABELS = 20  # a loglik eval whose gold answers are at most this many distinct strings has a closed answer set


def answer_labels(responses: Sequence[str]) -> list[str] | None:
    """The closed answer set of a loglik eval, sorted: its distinct gold responses, when there are 2 to
    :data:`MAX_LABELS` of them and they repeat (at most half as many as the questions: True/False, yes/no,
    (A)-(C), the counts 0-20 of BBH's object_counting). None for open answers (GSM8K's worked solutions)."""
    labels = sorted(set(responses))
    return labels if 2 <= len(labels) <= min(MAX_LABELS, len(responses) // 2) else None


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


def group_metrics(per: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, dict[str, float]]:
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


# ---------------------------------------------------------------------------- answer scorers
# An exact_match eval judges a completion with one of these: (record, completion) -> (prediction, correct).
def builtin_score(rec: Record, completion: str) -> tuple[Any, bool]:
    """Built-in tasks: the task's own extractor and comparison (:func:`g2is_core.data.tasks.is_correct`)."""
    return tasks.extract_answer(rec.task, completion), tasks.is_correct(rec.task, completion, rec.answer or "")


def number_score(rec: Record, completion: str) -> tuple[Any, bool]:
    """GSM8K / SVAMP: the final number (:func:`extract_number`) equals the normalised answer."""
    pred = extract_number(completion)
    return pred, pred is not None and pred == normalize_number(rec.answer)


def bbh_score(rec: Record, completion: str) -> tuple[Any, bool]:
    """BBH: :func:`extract_bbh_answer` then :func:`bbh_match`."""
    pred = extract_bbh_answer(completion)
    return pred, bbh_match(pred, rec.answer or "")


def text_score(rec: Record, completion: str) -> tuple[Any, bool]:
    """AQuA: the text after "the answer is" equals the answer, ignoring case and spacing."""
    pred = extract_bbh_answer(completion)
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731
    return pred, norm(pred) == norm(rec.answer or "")
