"""Evaluation of a model on a target task: a registry of evals, a registry of protocols, pure metrics.

One entry point, :func:`evaluate` (``lm``, an eval name) -> :class:`EvalResult`, and two registries
that drive it: :data:`EVALS` (eval name -> :class:`EvalSpec`: where the examples come from and how
they are prompted) and :data:`PROTOCOLS` (protocol name -> :class:`Protocol`: how they are scored).

    metrics.py    pure functions: answer extraction, SQuAD EM/F1, perplexity, subsets, answer scorers
    scoring.py    model log-probs: sequence_logprobs, next_token_logprobs, mc_scores, loglik_scores
    protocols.py  the protocols (loglik, exact_match, mc, f1), one registered class each
    families.py   EvalSpec, EVALS and the eval families (built-in tasks, GSM8K, BBH, MMLU,
                  LLM-Adapters, llm-foundry, TyDi QA), eval_records

Every number comes from a pure function in :mod:`.metrics` (:func:`extract_number`,
:func:`extract_bbh_answer`, :func:`mc_predict`, :func:`squad_f1`, ...) that is tested on hand-made
inputs; the model code only produces log-probs and completions. docs/evaluation.md has the rules.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...progress import Progress, no_progress
from .families import (BBH_TASKS, BUILTIN_TEST_N, EVALS, GSM8K_EVAL_ROWS, MMLU_SUBJECTS, TYDIQA_LANGS, EvalSpec,
                       eval_names, eval_records, get_spec, mmlu_block, mmlu_header, register_eval)
from .metrics import (EvalError, answer_labels, bbh_match, extract_bbh_answer, extract_number, gold_logprob,
                      loglik_metrics, mc_predict, normalize_number, perplexity, squad_em, squad_f1, squad_normalize,
                      squad_scores, subset)
from .protocols import PROTOCOLS, EvalSettings, Protocol, Scored, get_protocol, register_protocol
from .scoring import (loglik_scores, scored_length, mc_scores, next_token_logprobs, prefix_groups, prefix_plan,
                      sequence_logprobs)

__all__ = [
    "EVALS", "EvalSpec", "EvalResult", "EvalError", "EvalSettings", "evaluate", "eval_records", "eval_names",
    "get_spec", "register_eval", "PROTOCOLS", "Protocol", "Scored", "get_protocol", "register_protocol",
    "BBH_TASKS", "BUILTIN_TEST_N", "GSM8K_EVAL_ROWS", "MMLU_SUBJECTS", "TYDIQA_LANGS", "mmlu_block", "mmlu_header",
    "sequence_logprobs", "next_token_logprobs", "prefix_groups", "prefix_plan", "mc_scores", "loglik_scores",
    "scored_length", "extract_number", "normalize_number", "extract_bbh_answer", "bbh_match", "mc_predict",
    "gold_logprob", "answer_labels",
    "squad_normalize", "squad_em", "squad_f1", "squad_scores", "perplexity", "loglik_metrics", "subset",
]


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


def evaluate(lm, eval_name: str | EvalSpec, *, limit: int | None = None, seed: int = 0,
             batch_size: int = EvalSettings.batch_size, protocol: str | None = None, shots: int | None = None,
             template: str = EvalSettings.template, max_new_tokens: int | None = EvalSettings.max_new_tokens,
             max_length: int | None = EvalSettings.max_length, share_prefixes: bool = EvalSettings.share_prefixes,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate ``lm`` (a :class:`~g2is_core.models.LoadedModel`) on one registered eval.

    limit: number of examples (a deterministic subset drawn with ``seed``; None = all).
    protocol: override the spec's primary protocol (only "loglik" is accepted as an alternative).
    shots: few-shot exemplars (None = the benchmark's default; 0 allowed).
    batch_size, template, max_new_tokens, max_length, share_prefixes: :class:`EvalSettings` (help text there).
    """
    spec = get_spec(eval_name)
    proto = protocol or spec.protocol
    if proto not in spec.protocols:
        raise EvalError(f"the eval {spec.name!r} supports the protocols {', '.join(spec.protocols)}, not {proto!r}")
    runner = get_protocol(proto)
    settings = EvalSettings(batch_size=batch_size, template=template, max_length=max_length,
                            max_new_tokens=max_new_tokens, share_prefixes=share_prefixes)
    records = eval_records(spec, limit=limit, seed=seed, shots=shots)
    if not records:
        raise EvalError(f"the eval {spec.name!r} has no examples to score")
    # max_length: what was scored (None resolved to the model's context), so a cut is explained by its limit
    config = {"limit": limit, "seed": seed, "shots": spec.shots if shots is None else shots, "template": template,
              "batch_size": batch_size, "max_length": scored_length(lm, max_length), "share_prefixes": share_prefixes,
              "model": getattr(lm, "identity", {})}
    out = runner.run(lm, spec, records, settings, progress or no_progress)
    return EvalResult(spec.name, proto, len(out.per_example), out.metrics, out.per_example, {**config, **out.config},
                      out.by_group)
