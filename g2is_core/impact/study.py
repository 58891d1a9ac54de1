"""Pretraining-data impact by machine unlearning (Zhao et al., ACL Findings 2024): unlearn each corpus
with GRACE (:mod:`g2is_core.impact.unlearning`), measure what each capability loses, relate the corpora.

Capability suite (:data:`DEFAULT_SUITE`): the project's evaluations grouped into categories. Each
capability is scored by the NLL of the GOLD answer (nats/token, per example, then averaged): the
``loglik`` protocol's response NLL, or for ``mc`` entries the gold option's NLL per token. Why not
accuracy: the 135M default model is near chance on MMLU/BBH/ARC and near zero on GSM8K, so accuracy
drops on a few examples are mostly noise; the gold-answer NLL moves continuously on every example.
The same examples are scored before and after, so a drop is a PAIRED mean difference with its
standard error (:func:`paired_drop`).

Impact vector of a corpus: per category, the mean over its evals of (NLL after - NLL before);
positive = the capability got worse when the corpus was forgotten.

Relationships (pure functions, rules in :func:`classify_pair` and docs/impact.md):
- :func:`correlation_matrix`: Pearson correlation of impact vectors across capabilities;
- :func:`classify_pair`: complementary (joint unlearning hurts more than the two individual ones
  summed, beyond noise), else correlated (impact vectors correlate, r >= 0.5), else orthogonal.

Layout (``<workspace>/impact/<key>/``, key = hash of the config and the model identity)::

    study.json                 config, model identity, categories, corpus chunk counts and samples
    base/eval.json             original model: per eval metrics and per-example gold-answer NLLs
    runs/<run>/unlearn.json    GRACE thresholds, loss curves, stop reason (run = corpus or "a+b")
    runs/<run>/eval.json       the unlearned model on the suite
    impact.npy [K, C]          drops of the K single-corpus runs over C categories (written at the end)
    impact_se.npy [K, C]       their standard errors
    findings.json              impact vectors, correlation matrix, pair classifications
    sidecar.json               written last: the study is complete

A run whose ``eval.json`` exists is done; the same command resumes with the next one.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..settings import POSITIVE_INT, check_rules
from ..progress import Progress, no_progress
from .unlearning import UnlearnConfig, encode_texts, grace_unlearn, probe_measure, record_text, shuffled_copy, \
    text_paragraphs
from ..workspace import Workspace, read_json, write_json, write_npy, write_sidecar

KIND = "impact"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ============================================================================ configuration
@dataclass(frozen=True)
class CorpusSpec:
    """A corpus: instruction data (any format :func:`g2is_core.data.loaders.load_records` reads; prompt and
    response become one text) or plain text (``fmt="text"`` or a .txt/.md file: one text per paragraph)."""

    name: str                       # letters, digits, _ . - (used in paths and as "a+b" for pairs)
    source: str                     # "shared:<path under ../shared/data>", a file or a folder
    fmt: str | None = None          # loader format; None = detect; "text" = plain text

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"corpus name {self.name!r}: use letters, digits, '_', '.' or '-' only")


@dataclass(frozen=True)
class SuiteEntry:
    """One evaluation in the capability suite."""

    category: str                   # capability it measures
    eval: str                       # name in g2is_core.loop.evaluation.EVALS
    limit: int = 6                  # examples (a fixed seeded subset; the same before and after)
    protocol: str = "loglik"        # "loglik": NLL of the gold response; "mc": NLL of the gold option per token
    shots: int | None = 0           # few-shot exemplars (0 keeps prompts short; None = the eval's default)


# The shared pool sources as the default corpora: T0 tasks, FLAN CoT families, GPTeacher, Code Alpaca.
DEFAULT_CORPORA: tuple[CorpusSpec, ...] = (
    CorpusSpec("t0", "shared:t0_train_50k/data_per_template"),
    CorpusSpec("flan_cot_aqua", "shared:flan_v2_cot/aqua_train.tsv.gz"),
    CorpusSpec("flan_cot_ecqa", "shared:flan_v2_cot/ecqa_train.tsv.gz"),
    CorpusSpec("gpteacher_roleplay", "shared:gpteacher/roleplay-simple-deduped-roleplay-instruct.json.gz"),
    CorpusSpec("gpteacher_codegen", "shared:gpteacher/codegen-instruct.json.gz"),
    CorpusSpec("code_alpaca", "shared:code_alpaca/code_alpaca_2k.json"),
)
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("gpteacher_codegen", "code_alpaca"),)

# Categories -> evals. No code eval exists in the registry, so code is not a capability here.
DEFAULT_SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry("math", "gsm8k"),                      # worked solution NLL (train-file tail, see evaluation)
    SuiteEntry("math", "foundry:svamp"),
    SuiteEntry("reasoning", "bbh:boolean_expressions"),
    SuiteEntry("reasoning", "bbh:logical_deduction_three_objects"),
    SuiteEntry("knowledge", "mmlu"),                  # gold letter after the 0-shot question
    SuiteEntry("knowledge", "arc_easy", protocol="mc", shots=None),
    SuiteEntry("commonsense", "foundry:piqa"),        # gold solution text
    SuiteEntry("commonsense", "foundry:copa"),
    SuiteEntry("reading", "tydiqa:english"),          # answer span after the passage
    SuiteEntry("reading", "boolq"),
    SuiteEntry("symbolic", "builtin:add"),
    SuiteEntry("symbolic", "builtin:sort"),
)


@dataclass(frozen=True)
class ImpactConfig:
    """An impact study (defaults: the documented default experiment, sized for a 2-core CPU)."""

    model: str = "default"
    corpora: tuple[CorpusSpec, ...] = DEFAULT_CORPORA
    pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS   # joint unlearning runs
    suite: tuple[SuiteEntry, ...] = DEFAULT_SUITE
    n_train: int = 16               # chunks per corpus to unlearn (and to descend on for the others)
    n_heldout: int = 2              # chunks per corpus kept apart for the others' held-out non-target probe
    n_probe: int = 4                # chunks in each probe set (target, shuffled, held-out non-target)
    max_tokens: int = 64            # tokens per chunk
    seed: int = 0                   # corpus sampling, shuffling, batch order, eval subsets
    unlearn: UnlearnConfig = UnlearnConfig()
    eval_batch_size: int = 8

    def __post_init__(self):
        check_rules(self, {"n_train": POSITIVE_INT, "n_heldout": POSITIVE_INT, "n_probe": POSITIVE_INT,
                           "max_tokens": POSITIVE_INT, "eval_batch_size": POSITIVE_INT})
        names = [c.name for c in self.corpora]
        if len(names) < 2:
            raise ValueError("an impact study needs at least two corpora (the others are the non-target data)")
        if len(set(names)) != len(names):
            raise ValueError(f"corpus names must be unique: {names}")
        for a, b in self.pairs:
            if a not in names or b not in names or a == b:
                raise ValueError(f"pair {a}+{b}: both must be different corpora of the study ({', '.join(names)})")
            if len(names) < 3:
                raise ValueError("a joint pair needs a third corpus as non-target data")
        if not self.suite:
            raise ValueError("the capability suite is empty")
        for e in self.suite:
            if e.protocol not in ("loglik", "mc"):
                raise ValueError(f"suite entry {e.eval}: protocol {e.protocol!r} must be 'loglik' or 'mc'")

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(e.category for e in self.suite))

    @property
    def runs(self) -> list[str]:
        """Run names: each corpus, then each pair as "a+b"."""
        return [c.name for c in self.corpora] + [f"{a}+{b}" for a, b in self.pairs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImpactConfig":
        return cls(model=d["model"], corpora=tuple(CorpusSpec(**c) for c in d["corpora"]),
                   pairs=tuple(tuple(p) for p in d["pairs"]), suite=tuple(SuiteEntry(**e) for e in d["suite"]),
                   n_train=d["n_train"], n_heldout=d["n_heldout"], n_probe=d["n_probe"], max_tokens=d["max_tokens"],
                   seed=d["seed"], unlearn=UnlearnConfig(**d["unlearn"]), eval_batch_size=d["eval_batch_size"])


# ============================================================================ pure functions
def paired_drop(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """(mean of after - before, its standard error) over paired examples; SE is nan for n < 2."""
    b, a = np.asarray(before, float), np.asarray(after, float)
    if b.shape != a.shape or b.size == 0:
        raise ValueError(f"need the same examples before and after, got {b.size} and {a.size}")
    d = a - b
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se


def impact_vector(before: dict[str, Sequence[float]], after: dict[str, Sequence[float]],
                  suite: Sequence[SuiteEntry]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, drop [C], se [C]): per category the mean over its evals of the paired mean
    NLL increase; its SE combines the evals' SEs in quadrature (divided by the number of evals)."""
    cats = list(dict.fromkeys(e.category for e in suite))
    drop, se = np.zeros(len(cats)), np.zeros(len(cats))
    for i, c in enumerate(cats):
        ds = [paired_drop(before[e.eval], after[e.eval]) for e in suite if e.category == c]
        drop[i] = np.mean([m for m, _ in ds])
        se[i] = math.sqrt(sum(s * s for _, s in ds)) / len(ds)
    return cats, drop, se


def correlation_matrix(M: np.ndarray) -> np.ndarray:
    """[K, K] Pearson correlation between the rows of ``M`` [K corpora, C capabilities]; 1 on the
    diagonal; nan for a pair where either row is constant (no direction to correlate)."""
    M = np.asarray(M, float)
    K = M.shape[0]
    X = M - M.mean(1, keepdims=True)
    n = np.linalg.norm(X, axis=1)
    R = np.full((K, K), np.nan)
    for i in range(K):
        for j in range(K):
            if n[i] > 1e-12 and n[j] > 1e-12:
                R[i, j] = float(X[i] @ X[j] / (n[i] * n[j]))
    np.fill_diagonal(R, 1.0)
    return R


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    return float(correlation_matrix(np.stack([np.asarray(a, float), np.asarray(b, float)]))[0, 1])


@dataclass(frozen=True)
class PairRelation:
    """How two corpora relate (see :func:`classify_pair`)."""

    a: str
    b: str
    kind: str                        # "complementary" | "correlated" | "orthogonal"
    r: float                         # Pearson r of the individual impact vectors
    total_a: float                   # sum of a's drops over capabilities
    total_b: float
    total_joint: float | None        # sum of the joint run's drops (None: not measured)
    excess: float | None             # total_joint - (total_a + total_b)
    tolerance: float | None          # the margin the excess must beat
    additivity: str | None           # "super-additive" | "additive" | "sub-additive" | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def classify_pair(a: str, b: str, drop_a: Sequence[float], drop_b: Sequence[float],
                  drop_joint: Sequence[float] | None = None, *, se_a: Sequence[float] | None = None,
                  se_b: Sequence[float] | None = None, se_joint: Sequence[float] | None = None,
                  r_threshold: float = 0.5, z: float = 2.0, rel_tol: float = 0.1) -> PairRelation:
    """The relationship rules (in order; the first that holds wins):

    1. complementary: a joint run was measured and its total drop exceeds the sum of the individual
       totals by more than ``tolerance`` = max(z * SE of the excess, rel_tol * (|T_a| + |T_b|)),
       T = sum of a drop vector over capabilities; SE of the excess = sqrt of the summed squared
       per-capability SEs of the three runs (independence assumed).
    2. correlated: the individual impact vectors correlate, Pearson r >= ``r_threshold``.
    3. orthogonal: otherwise (r < r_threshold or undefined).

    ``additivity`` describes the joint run when measured: super-additive (excess > tolerance),
    sub-additive (excess < -tolerance) or additive.
    """
    da, db = np.asarray(drop_a, float), np.asarray(drop_b, float)
    r = pearson(da, db)
    ta, tb = float(da.sum()), float(db.sum())
    tj = excess = tol = add = None
    if drop_joint is not None:
        dj = np.asarray(drop_joint, float)
        tj = float(dj.sum())
        excess = tj - (ta + tb)
        var = sum(float(np.nansum(np.square(np.asarray(s, float)))) for s in (se_a, se_b, se_joint) if s is not None)
        tol = max(z * math.sqrt(var), rel_tol * (abs(ta) + abs(tb)))
        add = "super-additive" if excess > tol else "sub-additive" if excess < -tol else "additive"
    rs = "nan" if math.isnan(r) else f"{r:+.2f}"
    if excess is not None and excess > tol:
        return PairRelation(a, b, "complementary", r, ta, tb, tj, excess, tol, add,
                            f"joint drop {tj:.3f} > {ta:.3f} + {tb:.3f} by {excess:.3f} (> tolerance {tol:.3f})")
    if not math.isnan(r) and r >= r_threshold:
        return PairRelation(a, b, "correlated", r, ta, tb, tj, excess, tol, add,
                            f"impact vectors correlate: r = {rs} >= {r_threshold}")
    return PairRelation(a, b, "orthogonal", r, ta, tb, tj, excess, tol, add,
                        f"r = {rs} < {r_threshold}" + ("" if excess is None else f"; joint is {add}"))


def relationship_edges(names: Sequence[str], M: np.ndarray, joint: dict[tuple[str, str], PairRelation] | None = None,
                       *, r_threshold: float = 0.5) -> list[dict[str, Any]]:
    """Edges of the relationship graph: every pair with r >= r_threshold ("correlated") and every
    pair measured jointly (its classified kind). Each: a, b, kind, r, joint (bool)."""
    R = correlation_matrix(M) if len(names) else np.zeros((0, 0))
    out: list[dict[str, Any]] = []
    joint = joint or {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            key = (names[i], names[j]) if (names[i], names[j]) in joint else (names[j], names[i])
            r = float(R[i, j])
            if key in joint:
                out.append({"a": names[i], "b": names[j], "kind": joint[key].kind, "r": r, "joint": True})
            elif not math.isnan(r) and r >= r_threshold:
                out.append({"a": names[i], "b": names[j], "kind": "correlated", "r": r, "joint": False})
    return out


def circle_layout(n: int) -> np.ndarray:
    """[n, 2] node positions evenly on the unit circle, the first at the top."""
    t = np.pi / 2 - 2 * np.pi * np.arange(n) / max(1, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def example_losses(result) -> list[float]:
    """Per-example gold-answer NLL (nats/token) from an :class:`~g2is_core.loop.evaluation.EvalResult`:
    loglik -> the example's mean response NLL; mc -> -log p(gold option) / its token count."""
    out = []
    for p in result.per_example:
        if result.protocol == "loglik":
            out.append(float(p["nll"]))
        elif result.protocol == "mc":
            g = int(p["gold"])
            out.append(-float(p["logprob_sum"][g]) / max(1, int(p["n_tokens"][g])))
        else:
            raise ValueError(f"{result.name}: protocol {result.protocol!r} has no gold-answer NLL")
    return out


# ============================================================================ data
def _resolve(source: str) -> Path:
    from ..workspace import PROJECT_ROOT, shared_data_root

    if source.startswith("shared:"):
        root = shared_data_root()
        if root is None:
            raise FileNotFoundError(f"{source}: needs the shared data folder ../shared/data, which is absent here; "
                                    "give a file or folder path instead")
        return root / source.split(":", 1)[1]
    p = Path(source).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def corpus_texts(spec: CorpusSpec, n: int, seed: int) -> list[str]:
    """``n`` texts of a corpus drawn with ``seed`` (all of them if it has fewer)."""
    path = _resolve(spec.source)
    if not path.exists():
        raise FileNotFoundError(f"corpus {spec.name}: {path} does not exist; give a text file, a data file or a folder")
    if spec.fmt == "text" or (spec.fmt is None and path.is_file() and path.suffix.lower() in (".txt", ".md")):
        files = sorted(path.rglob("*.txt")) + sorted(path.rglob("*.md")) if path.is_dir() else [path]
        from ..data.loaders import read_text_file  # bounded (data.limits), regular files only

        texts = [p for f in files for p in text_paragraphs(read_text_file(f, errors="replace"))]
    else:
        from ..data.loaders import load_records

        texts = [record_text(r) for r in load_records(path, spec.fmt, lenient=True).records]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"corpus {spec.name}: no text found in {path}")
    return random.Random(f"{spec.name}:{seed}").sample(texts, min(n, len(texts)))


def _round_robin(groups: Sequence[Sequence[Any]], cap: int | None = None) -> list[Any]:
    out: list[Any] = []
    for k in range(max((len(g) for g in groups), default=0)):
        for g in groups:
            if k < len(g):
                out.append(g[k])
    return out[:cap] if cap is not None else out


# ============================================================================ the study
def study_dir(cfg: ImpactConfig, workspace: Workspace | None = None, model_key: str | None = None) -> Path:
    ws = workspace or Workspace()
    return ws.artefact_dir(KIND, {"study": cfg.to_dict(), "model": model_key, "code": 1})


def _evaluate_suite(lm, cfg: ImpactConfig, progress: Progress) -> dict[str, Any]:
    from ..loop.evaluation import evaluate

    out: dict[str, Any] = {}
    t0 = time.time()
    for i, e in enumerate(cfg.suite):
        progress(i / len(cfg.suite), f"evaluating {e.eval}")
        res = evaluate(lm, e.eval, limit=e.limit, seed=cfg.seed, protocol=e.protocol, shots=e.shots,
                       batch_size=cfg.eval_batch_size)
        metrics = {k: float(v) for k, v in res.metrics.items()}
        out[e.eval] = {"category": e.category, "protocol": res.protocol, "n": res.n, "metrics": metrics,
                       "ids": [p["id"] for p in res.per_example], "losses": example_losses(res)}
    progress(1.0, "suite evaluated")
    return {"evals": out, "seconds": time.time() - t0}


def run_study(cfg: ImpactConfig, workspace: Workspace | None = None, *, progress: Progress = no_progress,
              log=print) -> "ImpactStudy":
    """Run (or resume) an impact study; returns it loaded from disk."""
    import torch

    from ..models.loading import load_model

    ws = workspace or Workspace()
    lm = load_model(cfg.model, workspace=ws)
    tok, model = lm.tokenizer, lm.model
    out = study_dir(cfg, ws, lm.key)
    if ws.is_complete(out):
        progress(1.0, f"study already complete at {out}")
        return ImpactStudy.load(out)
    t_start = time.time()
    # Chunks per corpus: n_train to unlearn / descend on, n_heldout for the others' held-out probe.
    train, heldout, info = {}, {}, {}
    for c in cfg.corpora:
        texts = corpus_texts(c, cfg.n_train + cfg.n_heldout, cfg.seed)
        enc = encode_texts(tok, texts, max_tokens=cfg.max_tokens, ids=[f"{c.name}:{i}" for i in range(len(texts))])
        if len(enc) < cfg.n_heldout + 2:
            raise ValueError(f"corpus {c.name}: only {len(enc)} chunks of >= 8 tokens; it needs at least "
                             f"{cfg.n_heldout + 2} texts")
        heldout[c.name], train[c.name] = enc[:cfg.n_heldout], enc[cfg.n_heldout:]
        info[c.name] = {"source": c.source, "fmt": c.fmt, "n_train": len(train[c.name]), "n_heldout": cfg.n_heldout,
                        "tokens": sum(e.length for e in enc), "sample": [t[:300] for t in texts[:3]]}
    write_json(out / "study.json", {"config": cfg.to_dict(), "categories": cfg.categories, "runs": cfg.runs,
                                    "model": {"spec": cfg.model, "identity": lm.identity, "key": lm.key},
                                    "corpora": info})
    runs = cfg.runs
    n_units = len(runs) + 1
    base_path = out / "base" / "eval.json"
    if not base_path.exists():
        log("[base] evaluating the original model")
        write_json(base_path, _evaluate_suite(lm, cfg, lambda f, m: progress(f / n_units, f"base: {m}")))
    for p in model.parameters():
        p.requires_grad_(True)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, run in enumerate(runs, start=1):
        rdir = out / "runs" / run
        if (rdir / "eval.json").exists():
            continue
        t0 = time.time()
        targets = run.split("+")
        others = [c.name for c in cfg.corpora if c.name not in targets]
        target = _round_robin([train[t] for t in targets])
        probe_t = _round_robin([train[t] for t in targets], cfg.n_probe)
        probes = {"target": probe_t,
                  "shuffled": shuffled_copy(tok, probe_t, random.Random(f"{cfg.seed}:{run}")),
                  "retain": _round_robin([heldout[o] for o in others], cfg.n_probe)}
        retain = _round_robin([train[o] for o in others])

        def prog(f, m, k=k):
            progress((k + f) / n_units, f"{run}: {m}")
        log(f"[{run}] unlearning {len(target)} chunks; {len(retain)} non-target chunks from {', '.join(others)}")
        res = grace_unlearn(model, target, retain, cfg.unlearn, pad_id=tok.pad_token_id,
                            measure=probe_measure(probes, tok.pad_token_id), progress=lambda f, m: prog(0.5 * f, m))
        rdir.mkdir(parents=True, exist_ok=True)
        write_json(rdir / "unlearn.json", {"run": run, "targets": targets, "non_targets": others, **res.to_json()})
        log(f"[{run}] {res.reason} after {res.steps} steps ({res.n_descent} descent); target "
            f"{res.thresholds.target_original:.3f} -> {res.curve[-1]['target']:.3f} (stop > {res.thresholds.target_stop:.3f}); "
            f"{res.seconds:.0f} s")
        ev = _evaluate_suite(lm, cfg, lambda f, m: prog(0.5 + 0.5 * f, m))
        write_json(rdir / "eval.json", ev)
        with torch.no_grad():
            model.load_state_dict(original)
        log(f"[{run}] done in {time.time() - t0:.0f} s ({k}/{len(runs)} runs, {(time.time() - t_start) / 60:.1f} min)")
    st = ImpactStudy.load(out)
    M, SE = st.impact_matrix()
    for name, arr in (("impact.npy", M), ("impact_se.npy", SE)):
        write_npy(out / name, arr)
    write_json(out / "findings.json", st.findings())
    write_sidecar(out, KIND, cfg.to_dict(), inputs={"model": lm.identity}, extra={"seconds": time.time() - t_start})
    progress(1.0, f"study complete at {out}")
    return ImpactStudy.load(out)


@dataclass
class ImpactStudy:
    """A stored impact study (see the module docstring for the layout); partial studies load too."""

    dir: Path
    meta: dict[str, Any]
    base: dict[str, Any] | None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)       # run -> {"unlearn", "eval"}
    complete: bool = False

    @classmethod
    def load(cls, directory: str | Path) -> "ImpactStudy":
        d = Path(directory)
        if not (d / "study.json").exists():
            raise FileNotFoundError(f"{d}: not an impact study (no study.json); run `g2is impact run` first")
        base = read_json(d / "base" / "eval.json") if (d / "base" / "eval.json").exists() else None
        runs = {}
        for rd in sorted((d / "runs").glob("*")):
            if (rd / "unlearn.json").exists():
                runs[rd.name] = {"unlearn": read_json(rd / "unlearn.json"),
                                 "eval": read_json(rd / "eval.json") if (rd / "eval.json").exists() else None}
        return cls(d, read_json(d / "study.json"), base, runs, (d / "sidecar.json").exists())

    @property
    def config(self) -> ImpactConfig:
        return ImpactConfig.from_dict(self.meta["config"])

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    @property
    def corpora(self) -> list[str]:
        """Corpora whose single-corpus run is evaluated, in config order."""
        return [c["name"] for c in self.meta["config"]["corpora"] if self._done(c["name"])]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.meta["config"]["pairs"]
                if self._done(f"{a}+{b}") and self._done(a) and self._done(b)]

    def _done(self, run: str) -> bool:
        return self.base is not None and run in self.runs and self.runs[run]["eval"] is not None

    def losses(self, run: str | None) -> dict[str, list[float]]:
        """eval -> per-example gold-answer NLLs of the original model (None) or after ``run``."""
        ev = self.base if run is None else self.runs[run]["eval"]
        return {k: v["losses"] for k, v in ev["evals"].items()}

    def impact(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        """(drop [C], se [C]) of one run."""
        _, d, s = impact_vector(self.losses(None), self.losses(run), self.config.suite)
        return d, s

    def impact_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(M [K, C], SE [K, C]) over the evaluated single-corpus runs (rows: :attr:`corpora`)."""
        rows = [self.impact(c) for c in self.corpora]
        C = len(self.categories)
        if not rows:
            return np.zeros((0, C)), np.zeros((0, C))
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def eval_table(self) -> list[dict[str, Any]]:
        """Per eval and run: mean gold-answer NLL (and accuracy where the protocol has one)."""
        rows = []
        for run in [None] + [r for r in self.runs if self._done(r)]:
            ev = self.base if run is None else self.runs[run]["eval"]
            for name, v in ev["evals"].items():
                rows.append({"run": run or "original", "eval": name, "category": v["category"],
                             "nll": float(np.mean(v["losses"])), "accuracy": v["metrics"].get("accuracy"), "n": v["n"]})
        return rows

    def relations(self, *, r_threshold: float = 0.5, z: float = 2.0) -> list[PairRelation]:
        """Every pair of evaluated corpora classified (joint runs used where measured)."""
        names = self.corpora
        vec = {c: self.impact(c) for c in names}
        measured = set(self.pairs)
        out = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = names[i], names[j]
                key = (a, b) if (a, b) in measured else (b, a) if (b, a) in measured else None
                dj = sj = None
                if key is not None:
                    dj, sj = self.impact(f"{key[0]}+{key[1]}")
                out.append(classify_pair(a, b, vec[a][0], vec[b][0], dj, se_a=vec[a][1], se_b=vec[b][1], se_joint=sj,
                                         r_threshold=r_threshold, z=z))
        return out

    def findings(self, *, r_threshold: float = 0.5, z: float = 2.0) -> dict[str, Any]:
        """Everything the report, the page and docs/impact.md show, as plain JSON-able numbers."""
        M, SE = self.impact_matrix()
        rel = self.relations(r_threshold=r_threshold, z=z)
        joint = {(p.a, p.b): p for p in rel if p.total_joint is not None}
        return {"corpora": self.corpora, "categories": self.categories, "impact": M.tolist(), "impact_se": SE.tolist(),
                "correlation": correlation_matrix(M).tolist() if len(M) else [],
                "relations": [p.to_json() for p in rel],
                "edges": relationship_edges(self.corpora, M, joint, r_threshold=r_threshold),
                "unlearning": {r: {k: v["unlearn"][k] for k in ("steps", "forgotten", "reason", "n_descent", "seconds")}
                               | {"thresholds": v["unlearn"]["thresholds"],
                                  "target_final": v["unlearn"]["curve"][-1]["target"]}
                               for r, v in self.runs.items()},
                "pairs_joint": {f"{a}+{b}": self.impact(f"{a}+{b}")[0].tolist() for a, b in self.pairs},
                "r_threshold": r_threshold, "z": z}


def list_studies(workspace: Workspace | None = None) -> list[Path]:
    """Study directories with at least the original model evaluated, newest first (partial ones too)."""
    ws = workspace or Workspace()
    base = ws.root / KIND
    if not base.is_dir():
        return []
    dirs = [d for d in base.iterdir() if (d / "study.json").exists() and (d / "base" / "eval.json").exists()]
    return sorted(dirs, key=lambda d: (d / "study.json").stat().st_mtime, reverse=True)
