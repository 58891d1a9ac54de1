"""Per-question scores of a benchmark cell: what the bootstrap of :mod:`.stats` resamples.

A registry row's ``metrics`` are aggregates (the accuracy over all questions); intervals over
questions need each question's own score. :func:`question_scores` takes them from an
:class:`~g2is_core.loop.evaluation.EvalResult` (its ``per_example`` dicts), and :func:`save_scores` /
:func:`load_scores` keep them in the run registry's SQLite file, in a table of their own
(``question_scores``, one row per cell, keyed by the cell's ``config_hash``), so listing rows stays as
light as before and a copied registry carries everything a report needs.

One cell's scores, keyed by question id::

    {"ids": [q1, q2, ...],                       # the eval's question ids, in eval order, unique
     "values": {"accuracy": [1.0, 0.0, ...],     # per metric: one value per question
                "nll": [1.93, 2.41, ...]},
     "weights": {"nll": [12, 30, ...]}}          # only where the aggregate is a weighted mean

A metric's aggregate is the (weighted) mean of its per-question values: ``accuracy`` the mean of
``correct``; ``nll`` the token-weighted mean of the per-question mean NLLs (weights = answer tokens),
which is exactly the loglik protocol's ``nll``. Metrics with no per-question form (``ppl``, a macro
mean) are not stored: their intervals fall back to seeds only (:mod:`.stats`).
"""
from __future__ import annotations

import json
from typing import Any, Mapping


# protocol -> {metric: (per-example field, per-example weight field or None)}
PER_QUESTION: dict[str, dict[str, tuple[str, str | None]]] = {
    "loglik": {"nll": ("nll", "n_tokens"), "nll_example": ("nll", None),
               "nll_answer": ("nll_answer", "n_answer_tokens"), "label_accuracy": ("label_correct", None),
               "label_logprob": ("label_logprob", None)},
    "mc": {"accuracy": ("correct", None), "accuracy_sum": ("correct_sum", None),
           "accuracy_norm": ("correct_norm", None), "gold_logprob": ("gold_logprob", None)},
    "exact_match": {"accuracy": ("correct", None)},
    "f1": {"em": ("em", None), "f1": ("f1", None)},
}

TABLE = """
CREATE TABLE IF NOT EXISTS question_scores (
    config_hash TEXT PRIMARY KEY,   -- the registry row (runs.config_hash) these belong to
    experiment  TEXT NOT NULL,
    scores      TEXT NOT NULL       -- JSON: {"ids": [...], "values": {metric: [...]}, "weights": {metric: [...]}}
);
CREATE INDEX IF NOT EXISTS question_scores_experiment ON question_scores(experiment);
"""


def _unique(ids: list[str]) -> list[str]:
    """Question ids made unique (a repeated id gets ``#2``, ``#3``, ... in order), so pairing by id is exact."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return out


def question_scores(protocol: str, per_example: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-question scores of one evaluation (``EvalResult.protocol``, ``EvalResult.per_example``)."""
    fields = PER_QUESTION.get(protocol, {})
    ids = _unique([str(p["id"]) for p in per_example])
    values: dict[str, list[float]] = {}
    weights: dict[str, list[float]] = {}
    for metric, (key, wkey) in fields.items():
        if not per_example or any(p.get(key) is None for p in per_example):
            continue
        values[metric] = [float(p[key]) for p in per_example]
        if wkey is not None:
            weights[metric] = [float(p[wkey]) for p in per_example]
    return {"ids": ids, "values": values, "weights": weights}


def merge_scores(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two evaluations of the same questions (the primary one and the extra loglik pass) in one record.
    Questions are matched by id; a metric of ``b`` on questions ``a`` lacks is dropped (never misaligned)."""
    if not a.get("ids"):
        return b
    pos = {q: i for i, q in enumerate(b["ids"])}
    if set(pos) != set(a["ids"]):
        return a
    order = [pos[q] for q in a["ids"]]
    out = {"ids": list(a["ids"]), "values": dict(a["values"]), "weights": dict(a["weights"])}
    for kind in ("values", "weights"):
        for m, v in b[kind].items():
            out[kind].setdefault(m, [v[i] for i in order])
    return out


def _ensure(conn) -> None:
    conn.executescript(TABLE)


def save_scores(registry, config_hash: str, experiment: str, scores: Mapping[str, Any]) -> None:
    """Store (or replace) one cell's per-question scores in the registry file. Called before
    ``Registry.finish``: a row marked done always has its scores (a kill in between redoes the cell)."""
    with registry._conn() as c:
        _ensure(c)
        c.execute("INSERT OR REPLACE INTO question_scores (config_hash, experiment, scores) VALUES (?,?,?)",
                  (config_hash, experiment, json.dumps(dict(scores), separators=(",", ":"))))  # NaN stays a number


def load_scores(registry, experiment: str | None = None) -> dict[str, dict[str, Any]]:
    """{config_hash: scores} of an experiment's cells (every experiment's when None). Rows recorded
    before per-question scores were kept have none: :mod:`.stats` then works over seeds only."""
    with registry._conn() as c:
        _ensure(c)
        q = "SELECT config_hash, scores FROM question_scores" + (" WHERE experiment=?" if experiment else "")
        return {r[0]: json.loads(r[1]) for r in c.execute(q, (experiment,) if experiment else ())}
