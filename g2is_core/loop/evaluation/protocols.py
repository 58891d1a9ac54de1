"""Evaluation protocols: one registered class per way of scoring a model on records.

:data:`PROTOCOLS` (name -> :class:`Protocol`) drives :func:`~g2is_core.loop.evaluation.evaluate`:
it looks the protocol up by name and calls ``run(lm, spec, records, settings, progress)``, which
returns a :class:`Scored` (per-example dicts, metrics, per-subtask metrics). A new protocol is one
subclass with a ``name`` and a ``run``, decorated with :func:`register_protocol`
(docs/evaluation.md has a worked example).

``loglik``       Answer log-likelihood of the gold response given the prompt. Each record is
                 tokenised exactly as for training (:func:`~g2is_core.data.encoding.encode_record`:
                 chat template, response-only labels, so the end-of-turn token is scored too).
                 metrics: ``nll`` = token-weighted mean NLL over all response tokens (nats),
                 ``ppl`` = exp(nll), ``nll_example`` = mean of per-example mean NLLs, ``n_tokens``;
                 ``nll_answer`` = the same token-weighted NLL over the response's own text alone, the
                 template's end-of-turn left out (``n_answer_tokens``): where the gold answer is a word or two
                 (BBH), ``nll`` is mostly the model's confidence that it should stop, ``nll_answer`` the answer.
                 Where the gold answers form a closed set (:func:`.metrics.answer_labels`: True/False, (A)-(C),
                 ...), also ``label_accuracy`` and ``label_logprob`` = mean log p(gold | the labels), every label
                 scored as the whole response (its text and the end-of-turn, so no label is a prefix of another)
                 and compared by summed log-prob; a model that would rather reason first than answer at once
                 loses nothing there: only the answers are compared.
                 Meaningful for any model, even one that never produces a correct answer; it is
                 available for every eval (``protocol="loglik"``), not only its primary one.
``exact_match``  Greedy generation (:func:`~g2is_core.models.generation.greedy_answers`) and a per-task
                 answer extraction: GSM8K / SVAMP -> :func:`.metrics.extract_number`; BBH ->
                 :func:`.metrics.extract_bbh_answer` + :func:`.metrics.bbh_match`; built-in tasks ->
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
                 ``gold_logprob``: mean over questions of log p(gold | options), the log-softmax
                 of the compared option scores at the gold option (:func:`.metrics.gold_logprob`;
                 higher is better, 0 at certainty): continuous, so it moves where accuracy does not.
``f1``           TyDi QA GoldP: greedy generation, prediction = the first line of the
                 completion; SQuAD v1.1 metrics (:func:`.metrics.squad_normalize`: lowercase, drop
                 punctuation, drop the English articles a/an/the, collapse whitespace), max over
                 the gold answers. metrics: ``em`` and ``f1`` (fractions, not percent). Article
                 removal is English-only, as in the official script used for TyDi QA GoldP; for
                 the other 8 languages it is a no-op except on the rare Latin-script "a"/"the".

Every per-example dict carries at least ``id``, ``prediction``, ``gold``, ``correct``, ``score``
and ``group`` (the record's subtask).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence

from ...data.encoding import TEMPLATES
from ...data.records import Record
from ...progress import Progress
from ...settings import POSITIVE_INT, check_choice, check_rules
from .metrics import (EvalError, answer_labels, builtin_score, gold_logprob, group_metrics, loglik_metrics, mc_predict,
                      squad_scores)
from .scoring import loglik_scores, mc_scores

from .evalspec import EvalSpec


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class EvalSettings:
    """How an eval is scored (what is scored, and by which rule, is the :class:`EvalSpec`'s)."""

    batch_size: int = _opt(8, "sequences per forward pass (the numbers do not depend on it: batches are "
                              "padded with explicit positions); sequences that continue one shared prompt (a "
                              "question's options or labels) run packed, up to 256 tokens a pass, instead")
    template: str = _opt("chat", "prompt template: chat (the model's chat template, as in training) or plain "
                                 "(the Alpaca template)")
    max_length: int | None = _opt(None, "longest scored sequence for loglik / mc (None: the model's context, "
                                        "config.max_position_embeddings; a larger value is capped there); longer "
                                        "ones lose prompt tokens from the left, counted in n_truncated and shown "
                                        "beside the scores")
    max_new_tokens: int | None = _opt(None, "generation budget of exact_match / f1 evals (None: the eval's own)")
    share_prefixes: bool = _opt(True, "loglik / mc: sequences that begin with the same tokens (a few-shot prompt "
                                      "before each question, a question before each option) run them once and "
                                      "continue from their key/value cache; the numbers are equal up to float "
                                      "rounding, false scores every sequence whole")

    def __post_init__(self) -> None:
        check_rules(self, {"batch_size": POSITIVE_INT, "max_length": POSITIVE_INT, "max_new_tokens": POSITIVE_INT},
                    optional=("max_length", "max_new_tokens"))
        check_choice(self.template, "template", TEMPLATES)


@dataclass
class Scored:
    """What a protocol measured on a list of records."""

    per_example: list[dict[str, Any]]
    metrics: dict[str, float]
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)  # per subtask, where records span several
    config: dict[str, Any] = field(default_factory=dict)                 # settings the protocol resolved itself


class Protocol:
    """One way of scoring a model on an eval's records. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]
    # What its results record: raised when a protocol learns to measure more (a new metric), so a result kept from
    # an older version is not taken for a current one (the experiment runner keys its eval cache by it).
    version: ClassVar[int] = 1

    def run(self, lm, spec: EvalSpec, records: Sequence[Record], settings: EvalSettings,
            progress: Progress) -> Scored:
        """Score ``lm`` (a :class:`~g2is_core.models.LoadedModel`) on ``records`` (already prompted)."""
        raise NotImplementedError


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: add one instance of ``cls`` to :data:`PROTOCOLS` under ``cls.name``."""
    if cls.name in PROTOCOLS:
        raise ValueError(f"protocol {cls.name!r} is registered twice")
    PROTOCOLS[cls.name] = cls()
    return cls


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise EvalError(f"unknown protocol {name!r}; the protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def same_options(rec: Record) -> list[tuple[Record, str]]:
    """The mc default: each of the record's own ``choices`` after its own prompt."""
    return [(rec, c) for c in rec.choices or ()]


@register_protocol
class Loglik(Protocol):
    name = "loglik"
    version = 3  # 2: nll_answer; 3: label_accuracy and label_logprob (a closed answer set)

    def run(self, lm, spec, records, settings, progress):
        # A closed answer set (.metrics.answer_labels): every label is scored as the response, in the same pass
        # (the gold label's row is the record itself), so each prompt runs once for all its labels.
        labels = answer_labels([r.response for r in records])
        scored = [replace(r, messages=r.prompt_messages + ({"role": "assistant", "content": lab},))
                  for r in records for lab in labels] if labels else list(records)
        all_nlls, all_cut, all_answer = loglik_scores(lm, scored, template=settings.template,
                                                      max_length=settings.max_length, batch_size=settings.batch_size,
                                                      progress=progress, share_prefixes=settings.share_prefixes)
        L = len(labels) if labels else 1
        gold = [labels.index(r.response) if labels else 0 for r in records]
        pick = [k * L + g for k, g in enumerate(gold)]
        nlls, n_answer = [all_nlls[i] for i in pick], [all_answer[i] for i in pick]
        per = []
        for r, x, a in zip(records, nlls, n_answer):
            nll = sum(x) / len(x) if x else float("nan")
            p = {"id": r.id, "prediction": None, "gold": r.response, "correct": None, "score": -nll,
                 "nll": nll, "n_tokens": len(x), "group": r.subtask}
            if a is not None:
                p.update({"nll_answer": sum(x[:a]) / a if a else float("nan"), "n_answer_tokens": a})
            per.append(p)
        metrics = {**loglik_metrics(nlls), "n_truncated": float(sum(all_cut[i] for i in pick))}
        if all(a is not None for a in n_answer) and any(n_answer):
            answer = loglik_metrics([x[:a] for x, a in zip(nlls, n_answer)])
            metrics.update({"nll_answer": answer["nll"], "n_answer_tokens": answer["n_tokens"]})
        if labels:
            for k, p in enumerate(per):
                sums = [-sum(all_nlls[k * L + j]) for j in range(L)]
                pred = max(range(L), key=lambda j: (sums[j], -j))
                p.update({"label_prediction": labels[pred], "label_correct": pred == gold[k],
                          "label_logprob": gold_logprob(sums, gold[k])})
            metrics.update({"label_accuracy": sum(p["label_correct"] for p in per) / len(per),
                            "label_logprob": sum(p["label_logprob"] for p in per) / len(per),
                            "n_labels": float(L)})
        return Scored(per, metrics, group_metrics(per, {"nll_example": "nll"}))


class _Generative(Protocol):
    """Greedy completions, judged one by one (:meth:`judge`), then averaged (:attr:`means`)."""

    means: ClassVar[dict[str, str]]  # metric name -> the per-example field it averages

    def judge(self, spec: EvalSpec, rec: Record, completion: str) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, lm, spec, records, settings, progress):
        budget = settings.max_new_tokens or spec.max_new_tokens
        outs = _greedy(lm, records, budget, settings.batch_size, settings.template, progress)
        per = [self.judge(spec, r, out) for r, out in zip(records, outs)]
        n = len(per)
        metrics = {name: sum(p[k] for p in per) / n for name, k in self.means.items()}
        return Scored(per, metrics, group_metrics(per, self.means), {"max_new_tokens": budget})


@register_protocol
class ExactMatch(_Generative):
    name = "exact_match"
    means = {"accuracy": "correct"}

    def judge(self, spec, rec, completion):
        pred, ok = (spec.score or builtin_score)(rec, completion)
        return {"id": rec.id, "prediction": pred, "gold": rec.answer, "correct": bool(ok), "score": float(ok),
                "completion": completion, "group": rec.subtask}


@register_protocol
class MultipleChoice(Protocol):
    name = "mc"

    def run(self, lm, spec, records, settings, progress):
        items = [(spec.options or same_options)(r) for r in records]
        for r, it in zip(records, items):
            if len(it) < 2 or r.gold is None:
                raise EvalError(f"example {r.id!r} of {spec.name!r} has no options or no gold index to score")
        scores, n_cut = mc_scores(lm, items, template=settings.template, max_length=settings.max_length,
                                  batch_size=settings.batch_size, progress=progress,
                                  share_prefixes=settings.share_prefixes)
        per = []
        for r, sc in zip(records, scores):
            sums, lens = [s for s, _ in sc], [n for _, n in sc]
            p_sum, p_norm = mc_predict(sums, lens)
            pred = p_sum if spec.mc_primary == "sum" else p_norm
            compared = sums if spec.mc_primary == "sum" else [s / max(1, n) for s, n in zip(sums, lens)]
            per.append({"id": r.id, "prediction": pred, "gold": r.gold, "correct": pred == r.gold,
                        "gold_logprob": gold_logprob(compared, r.gold),
                        "score": sums[pred] if spec.mc_primary == "sum" else sums[pred] / max(1, lens[pred]),
                        "correct_sum": p_sum == r.gold, "correct_norm": p_norm == r.gold,
                        "logprob_sum": sums, "n_tokens": lens, "group": r.subtask})
        n = len(per)
        metrics = {"accuracy": sum(p["correct"] for p in per) / n,
                   "accuracy_sum": sum(p["correct_sum"] for p in per) / n,
                   "accuracy_norm": sum(p["correct_norm"] for p in per) / n,
                   "gold_logprob": sum(p["gold_logprob"] for p in per) / n, "n_truncated": float(n_cut)}
        by_group = group_metrics(per, {"accuracy": "correct", "accuracy_sum": "correct_sum",
                                        "accuracy_norm": "correct_norm", "gold_logprob": "gold_logprob"})
        if by_group:
            metrics["accuracy_macro"] = sum(g["accuracy"] for g in by_group.values()) / len(by_group)
        return Scored(per, metrics, by_group)


@register_protocol
class SquadF1(_Generative):
    name = "f1"
    means = {"em": "em", "f1": "f1"}

    def judge(self, spec, rec, completion):
        pred = next((ln.strip() for ln in completion.splitlines() if ln.strip()), "")
        golds = rec.metadata.get("answers") or [rec.answer or rec.response]
        em, f1 = squad_scores(pred, golds)
        return {"id": rec.id, "prediction": pred, "gold": golds, "correct": bool(em), "score": f1,
                "em": em, "f1": f1, "completion": completion, "group": rec.subtask}


def _greedy(lm, records: Sequence[Record], max_new_tokens: int, batch_size: int, template: str,
            progress: Progress) -> list[str]:
    """Greedy completions (the project's batched generator)."""
    from ...models.generation import greedy_answers
    return greedy_answers(lm, records, max_new_tokens=max_new_tokens, batch_size=batch_size, template=template,
                          progress=progress)
