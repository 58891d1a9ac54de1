"""Benchmark harness: an experiment spec (YAML/TOML) -> select, fine-tune, evaluate -> registry rows.

A spec names a pool, targets, methods, ratios, seeds, a model, and training/eval settings. Every
(target, method, ratio, seed) cell is one row of the run registry (SQLite), keyed by the hash of
its full config, so ``g2is bench run SPEC`` resumes after a kill without redoing finished rows.
The random and full-data baselines, and the untrained base model, are part of every table: they
are added to the spec's methods whether or not it lists them.

Example (YAML)::

    name: builtin-demo
    model: default                 # default | tiny | a model directory | a .gguf file
    pool: {builtin: {seed: 0}}     # or {files: [path, ...], per_file: 500, seed: 0}
    targets:
      - {name: add_reverse, select: "builtin:add_reverse", eval: "builtin:add_reverse", eval_limit: 64}
    methods: [g2is, less, bm25, embedding]
    ratios: [0.05]
    seeds: [0, 1]
    train: {lr: 2.0e-4, epochs: 2, batch_size: 8, max_length: 256, lora: {r: 8, alpha: 32, dropout: 0.0}}
    selection: {}                  # options passed to the selection methods (features, delta, k, ...)
    eval: {loglik: true}           # evaluate() options; loglik: also score the gold answer's NLL; dtype: bf16
    full_seeds: [0]                # optional: train the full-data baseline with fewer seeds (it costs the most)

A target may override its eval's protocol (``protocol: loglik`` scores the gold answer of a generative
eval instead of generating) and few-shot count (``shots: 0``).
"""
from __future__ import annotations

import json
import random
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..progress import Progress, no_progress
from ..data.records import DataError, Record
from .registry import Registry
from ..runtime import resolve_bf16
from ..workspace import Workspace, hash_config, write_json

BASELINES = ("random", "full")
GRADIENT_METHODS = ("g2is", "less")
BASE = "base"  # the model before any fine-tuning


@dataclass
class TargetSpec:
    name: str
    select: str          # where the target (selection) examples come from
    eval: str            # evaluation registry name
    eval_limit: int | None = None
    n_select: int = 32   # target examples used for selection
    protocol: str | None = None  # override the eval's primary protocol (e.g. "loglik" for a generative eval)
    shots: int | None = None     # override the eval's default number of few-shot exemplars

    def config(self) -> dict[str, Any]:
        """What identifies the target in a cell's config (unset overrides left out, so older rows keep their keys)."""
        return {k: v for k, v in self.__dict__.items() if v is not None or k not in ("protocol", "shots")}


@dataclass
class ExperimentSpec:
    name: str
    model: str = "default"
    pool: dict[str, Any] = field(default_factory=lambda: {"builtin": {"seed": 0}})
    targets: list[TargetSpec] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    ratios: list[float] = field(default_factory=lambda: [0.05])
    seeds: list[int] = field(default_factory=lambda: [0])
    full_seeds: list[int] | None = None  # training seeds of the full-data baseline (None: the spec's seeds)
    train: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {method, options}

    def base_method(self, name: str) -> str:
        """The selection method a (possibly variant) method name runs."""
        return self.variants[name]["method"] if name in self.variants else name

    def all_methods(self) -> list[str]:
        out = [BASE]
        for m in list(BASELINES) + list(self.methods):
            if m not in out:
                out.append(m)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "pool": self.pool,
                "targets": [t.config() for t in self.targets],
                "methods": [{"name": m, **self.variants[m]} if m in self.variants else m for m in self.methods],
                "ratios": self.ratios,
                "seeds": self.seeds, "train": self.train, "selection": self.selection, "eval": self.eval,
                **({"full_seeds": self.full_seeds} if self.full_seeds is not None else {})}


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML or TOML spec; errors name the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such experiment spec")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)  # YAML errors draw a caret over several lines; say it in one
        why = (f"{getattr(exc, 'problem', None) or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
               if mark is not None else " ".join(str(exc).split()))
        raise DataError(f"not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {why}", path=str(p)) from exc
    if not isinstance(raw, dict):
        raise DataError("the spec must be a mapping with at least 'name' and 'targets'", path=str(p))
    known = set(ExperimentSpec.__dataclass_fields__) - {"source"}
    unknown = set(raw) - known
    if unknown:
        raise DataError(f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}", path=str(p))
    if not raw.get("name"):
        raise DataError("missing 'name'", path=str(p), field="name")
    targets = []
    for i, t in enumerate(raw.get("targets") or []):
        if not isinstance(t, dict) or "name" not in t:
            raise DataError(f"target {i} needs at least a 'name'", path=str(p), field="targets")
        targets.append(TargetSpec(name=t["name"], select=t.get("select", f"builtin:{t['name']}"),
                                  eval=t.get("eval", f"builtin:{t['name']}"), eval_limit=t.get("eval_limit"),
                                  n_select=int(t.get("n_select", 32)), protocol=t.get("protocol"),
                                  shots=None if t.get("shots") is None else int(t["shots"])))
        unknown_t = set(t) - set(TargetSpec.__dataclass_fields__)
        if unknown_t:
            raise DataError(f"target {t['name']!r}: unknown field(s) {sorted(unknown_t)}; known: "
                            f"{sorted(TargetSpec.__dataclass_fields__)}", path=str(p), field="targets")
    if not targets:
        raise DataError("no targets; list at least one under 'targets'", path=str(p), field="targets")
    for r in raw.get("ratios", [0.05]):
        if not isinstance(r, (int, float)) or not (0 < float(r) <= 1):
            raise DataError(f"ratio {r!r} must be a number in (0, 1]", path=str(p), field="ratios")
    names, variants = _methods(raw.get("methods") or [], p)
    spec = ExperimentSpec(name=str(raw["name"]), model=str(raw.get("model", "default")),
                          pool=raw.get("pool") or {"builtin": {"seed": 0}}, targets=targets,
                          methods=names, variants=variants, ratios=[float(r) for r in raw.get("ratios", [0.05])],
                          seeds=[int(s) for s in raw.get("seeds", [0])],
                          full_seeds=None if raw.get("full_seeds") is None else [int(s) for s in raw["full_seeds"]],
                          train=raw.get("train") or {},
                          selection=raw.get("selection") or {}, eval=raw.get("eval") or {}, source=str(p))
    return spec


def _methods(entries: list, p: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Spec methods: names (``g2is``), or variants ``{name: g2is-centred, method: g2is, options: {...}}``
    that run a method with other options under their own name (a column of their own in every table)."""
    from ..selection import METHODS

    known = sorted(set(METHODS) | set(BASELINES))
    names: list[str] = []
    variants: dict[str, dict[str, Any]] = {}
    for e in entries:
        if isinstance(e, dict):
            name, method, options = e.get("name"), e.get("method"), e.get("options") or {}
            extra = set(e) - {"name", "method", "options"}
            if not name or not method or extra or not isinstance(options, dict):
                raise DataError(f"a method variant needs 'name', 'method' and optionally 'options' (a mapping); got "
                                f"{e!r}", path=str(p), field="methods")
            if method not in METHODS:
                raise DataError(f"variant {name!r}: unknown method {method!r}; known: {sorted(METHODS)}",
                                path=str(p), field="methods")
            if name in METHODS or name in BASELINES or name == BASE:
                raise DataError(f"variant name {name!r} is a method's own name; give it a name of its own",
                                path=str(p), field="methods")
            try:
                METHODS[method].make_options(**options)
            except (TypeError, ValueError) as exc:
                raise DataError(f"variant {name!r}: {exc}", path=str(p), field="methods") from exc
            variants[str(name)] = {"method": str(method), "options": dict(options)}
            name = str(name)
        else:
            name = str(e)
            if name not in METHODS and name not in BASELINES:
                raise DataError(f"unknown method {name!r}; known: {known}", path=str(p), field="methods")
        if name in names:
            raise DataError(f"method {name!r} is listed twice", path=str(p), field="methods")
        names.append(name)
    return names, variants


# ----------------------------------------------------------------------------- data
def load_pool(pool: dict[str, Any]) -> list[Record]:
    """The candidate pool of a spec: the built-in mixed pool, or a seeded sample of files."""
    if "builtin" in pool:
        from ..data.tasks import make_pool

        return list(make_pool(**(pool["builtin"] or {})).records)
    if "files" in pool:
        from ..data.loaders import load_records

        rng = random.Random(pool.get("seed", 0))
        out: list[Record] = []
        for f in pool["files"]:
            recs = load_records(_resolve(f), lenient=True).records
            k = pool.get("per_file")
            if k and len(recs) > k:
                recs = rng.sample(recs, k)
            out += recs
        return out
    raise DataError("pool must be {builtin: {...}} or {files: [...]}", field="pool")


def load_target(select: str, n: int, seed: int = 0) -> list[Record]:
    """Target examples used for selection, sampled (seeded) to at most ``n``:

    - ``builtin:<composite>``: the built-in composite's dev split;
    - ``bbh-cot:<task>``: the 3 chain-of-thought exemplars of a BBH task (LESS's BBH target set);
    - a data file or folder (``shared:`` prefix = the shared data root), optionally with a row range
      ``path[a:b]`` so that target rows stay apart from rows an evaluation uses.
    """
    if select.startswith("builtin:"):
        from ..data.tasks import make_targets

        name = select.split(":", 1)[1]
        targets = make_targets(seed=seed, n_per_target=n)
        if name not in targets:
            raise DataError(f"no built-in target {name!r}; choose from {sorted(targets)}", field="targets")
        return targets[name]
    if select.startswith("bbh-cot:"):
        from ..data.loaders import bbh_cot_exemplars

        root = _resolve("shared:bbh/cot-prompts")
        return bbh_cot_exemplars(root / f"{select.split(':', 1)[1]}.txt")[:n]
    from ..data.loaders import load_records

    path, lo, hi = select, None, None
    if select.endswith("]") and "[" in select:
        path, rng = select[:-1].rsplit("[", 1)
        a, _, b = rng.partition(":")
        lo, hi = (int(a) if a else None), (int(b) if b else None)
    recs = load_records(_resolve(path), lenient=True).records[lo:hi]
    if len(recs) > n:
        recs = random.Random(seed).sample(recs, n)
    return recs


def _resolve(path: str) -> Path:
    """Paths in specs are relative to the shared data root when they start with 'shared:'."""
    from ..workspace import PROJECT_ROOT, shared_data_root

    if path.startswith("shared:"):
        root = shared_data_root()
        if root is None:
            raise DataError(f"{path}: needs the shared data folder (../shared/data), which is absent here")
        return root / path.split(":", 1)[1]
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


# ----------------------------------------------------------------------------- running
def cell_config(spec: ExperimentSpec, target: TargetSpec, method: str, ratio: float | None, seed: int,
                pool_hash: str) -> dict[str, Any]:
    return {"experiment": spec.name, "model": spec.model, "pool_hash": pool_hash, "target": target.config(),
            "method": method, "ratio": ratio, "seed": seed,
            "train": spec.train if method != BASE else None,
            "selection": spec.selection if method not in (BASE, "full", "random") else None,
            "eval": spec.eval, **({"variant": spec.variants[method]} if method in spec.variants else {})}


def run_experiment(spec: ExperimentSpec, workspace: Workspace | None = None, progress: Progress = no_progress,
                   log=print, methods: set[str] | None = None) -> list[dict[str, Any]]:
    """Run every missing cell of the spec (only those of ``methods``, when given); return the registry
    rows of this experiment.

    Several processes may run the same spec at once: each claims a cell in the registry before it
    runs it, so they share the work (``prepare_features`` first, so they do not both extract them)."""
    from ..data.loaders import data_hash

    ws = workspace or Workspace()
    reg = Registry.open(ws)
    pool = load_pool(spec.pool)
    pool_hash = data_hash(pool)
    cells = []
    for t in spec.targets:
        for m in spec.all_methods():
            if methods is not None and m not in methods:
                continue
            for r in ([None] if m in (BASE, "full") else spec.ratios):
                seeds = [spec.seeds[0]] if m == BASE else (spec.full_seeds or spec.seeds) if m == "full" else spec.seeds
                for s in seeds:
                    cells.append((t, m, r, s))
    exp_dir = ws.dir("experiments", hash_config(spec.to_dict()))
    write_json(exp_dir / "spec.json", spec.to_dict())
    for i, (t, m, r, s) in enumerate(cells):
        cfg = cell_config(spec, t, m, r, s, pool_hash)
        key = hash_config(cfg)
        label = f"{t.name} / {m} / ratio {r} / seed {s}"
        if not reg.claim(key, spec.name, t.name, m, r, s, cfg):
            log(f"[{i + 1}/{len(cells)}] {label}: done already (or running elsewhere), skipped")
            continue
        progress(i / len(cells), label)
        try:
            metrics, timings, sel_dir, train_dir = _run_cell(spec, t, m, r, s, pool, ws, key,
                                                              lambda f, msg: progress((i + f) / len(cells), f"{label}: {msg}"))
        except Exception as exc:
            reg.fail(key, f"{type(exc).__name__}: {exc}")
            raise
        reg.finish(key, metrics=metrics, timings=timings, selection=sel_dir, train_dir=train_dir)
        log(f"[{i + 1}/{len(cells)}] {label}: {json.dumps(metrics)}")
    progress(1.0, "experiment finished")
    return reg.rows(spec.name)


def _run_cell(spec: ExperimentSpec, target: TargetSpec, method: str, ratio: float | None, seed: int,
              pool: list[Record], ws: Workspace, key: str, progress: Progress):
    from ..data.encoding import encode_all
    from .evaluation import evaluate
    from ..models.loading import LoraSettings, attach_lora, load_model
    from .training import TrainConfig, train

    timings: dict[str, float] = {}
    sel_dir = None
    train_dir = None
    t0 = time.perf_counter()
    if method == BASE:
        chosen: list[Record] = []
    elif method == "full":
        chosen = list(pool)
    else:
        from ..selection import SelectionRun, select

        targets = load_target(target.select, target.n_select, seed=0)
        name, method = method, spec.base_method(method)
        opts = dict(spec.selection.get(method, {}) if isinstance(spec.selection.get(method), dict) else {})
        opts.update(spec.variants.get(name, {}).get("options", {}))
        stores: dict[str, Any] = {}
        if method in GRADIENT_METHODS:
            stores = gradient_stores(spec, pool, targets, ws, lambda f, m: progress(0.25 * f, f"features: {m}"))
        if method == "random":
            opts.setdefault("seed", seed)
        sel = select(method, pool, targets, ratio=ratio, workspace=ws, **stores, **opts)
        run = SelectionRun.save(sel, pool, workspace=ws, name=f"{spec.name}/{target.name}/{name}/{ratio}/{seed}")
        by_id = {r.id: r for r in pool}
        chosen = [by_id[i] for i in run.ids]
        sel_dir = str(run.dir)
    timings["select_s"] = time.perf_counter() - t0
    lm = load_model(spec.model, workspace=ws)
    if chosen:
        tcfg = dict(spec.train)
        lora = tcfg.pop("lora", {"r": 8, "alpha": 32, "dropout": 0.0})
        max_length = int(tcfg.pop("max_length", 256))
        full_ft = bool(tcfg.pop("full", False))
        tcfg["bf16"] = resolve_bf16(tcfg.get("bf16", False))
        cfg = TrainConfig(**{"lr": 2e-4, "epochs": 2, "batch_size": 8, "save_every": 20, **tcfg, "seed": seed})
        model = lm.model
        if full_ft:
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            model = attach_lora(model, LoraSettings(**{**lora, "seed": seed}))
        enc, _ = encode_all(lm.tokenizer, chosen, max_length=max_length)
        from ..data.loaders import data_hash

        # Keyed by what determines the weights (model, settings, seed, the data itself), not by the
        # cell: the full-data model, or two methods that select the same set, are trained once.
        # ("auto" precision keyed by what it resolved to here; specs without the switch keep their keys)
        train_key = {**spec.train, "bf16": tcfg["bf16"]} if "bf16" in spec.train else spec.train
        train_dir = ws.dir("training", hash_config({"model": lm.key, "train": train_key, "seed": seed,
                                                    "data": data_hash(chosen)}))
        t1 = time.perf_counter()
        train(model, enc, cfg, pad_id=lm.tokenizer.pad_token_id, out_dir=train_dir,
              progress=lambda f, m: progress(0.3 + 0.5 * f, f"train: {m}"))
        timings["train_s"] = time.perf_counter() - t1
        lm.model = model
        train_dir = str(train_dir)
    t2 = time.perf_counter()
    if resolve_bf16(spec.eval.get("dtype", False)):
        import torch

        lm.model = lm.model.to(torch.bfloat16)  # scoring only: bf16 matmuls (AVX512-BF16 / AMX / tensor cores)
    eval_kw = {k: v for k, v in spec.eval.items() if k not in ("loglik", "dtype")}
    if target.shots is not None:
        eval_kw["shots"] = target.shots
    if target.protocol is not None:
        eval_kw["protocol"] = target.protocol
    res = evaluate(lm, target.eval, limit=target.eval_limit, seed=0, **eval_kw,
                   progress=lambda f, m: progress(0.8 + 0.1 * f, f"eval: {m}"))
    metrics = {**res.metrics, "n_eval": res.n, "n_train": len(chosen)}
    if spec.eval.get("loglik") and res.protocol != "loglik":
        # The gold answer's log-likelihood moves even when a small model's exact match stays at 0.
        ll = evaluate(lm, target.eval, limit=target.eval_limit, seed=0, protocol="loglik",
                      **({"shots": target.shots} if target.shots is not None else {}),
                      progress=lambda f, m: progress(0.9 + 0.1 * f, f"eval (loglik): {m}"))
        metrics.update({"nll": ll.metrics["nll"], "ppl": ll.metrics["ppl"]})
    timings["eval_s"] = time.perf_counter() - t2
    return metrics, timings, sel_dir, train_dir


def prepare_features(spec: ExperimentSpec, workspace: Workspace | None = None,
                     progress: Progress = no_progress) -> int:
    """Warmup and every gradient store the spec's gradient methods need (cached by content), up front.

    Returns the number of targets prepared (0 when the spec lists no gradient method)."""
    if not any(spec.base_method(m) in GRADIENT_METHODS for m in spec.methods):
        return 0
    ws = workspace or Workspace()
    pool = load_pool(spec.pool)
    n = len(spec.targets)
    for i, t in enumerate(spec.targets):
        gradient_stores(spec, pool, load_target(t.select, t.n_select, seed=0), ws,
                        lambda f, m: progress((i + f) / n, f"{t.name}: {m}"))
    progress(1.0, "features ready")
    return n


def gradient_stores(spec: ExperimentSpec, pool: list[Record], targets: list[Record], ws: Workspace,
                    progress: Progress = no_progress) -> dict[str, Any]:
    """LESS features for a spec: warmup on the pool, then pool (Adam) and target (SGD) stores per checkpoint.

    Everything is cached by content in the workspace (warmup, stores), so methods and targets share it.
    Settings come from ``spec.selection["features"]``: warmup fields (fraction, epochs, lr, ...) under
    ``warmup``, projection under ``dim``/``proj_seed``, ``max_length`` and ``bf16``.
    """
    from dataclasses import replace

    from ..data.loaders import data_hash
    from ..features.gradients import FeatureConfig, ProjectorConfig, WarmupConfig, extract_store, warmup
    from ..models.loading import load_model

    fcfg = dict(spec.selection.get("features") or {})
    wraw = dict(fcfg.get("warmup") or {})
    if "bf16" in wraw:
        wraw["bf16"] = resolve_bf16(wraw["bf16"])
    wcfg = replace(WarmupConfig(), **wraw)
    max_length = int(fcfg.get("max_length", wcfg.max_length))
    bf16 = resolve_bf16(fcfg.get("bf16", False))  # fast path: autocast the feature pass to bf16 (true/false/auto)
    proj = replace(ProjectorConfig(), **{k: v for k, v in {"dim": fcfg.get("dim"), "seed": fcfg.get("proj_seed")}.items()
                                         if v is not None})
    lm = load_model(spec.model, workspace=ws)
    pool_hash = data_hash(pool)
    w = warmup(lm, pool, wcfg, data_hash=pool_hash, workspace=ws, progress=lambda f, m: progress(0.2 * f, m))
    train_stores, target_stores = [], []
    n = len(w.checkpoints)
    for i, ck in enumerate(w.checkpoints):
        lm = load_model(spec.model, workspace=ws)
        train_stores.append(extract_store(lm, pool, w, ck.epoch, FeatureConfig(kind="adam", max_length=max_length, bf16=bf16),
                                          proj, data_hash=pool_hash, workspace=ws,
                                          progress=lambda f, m: progress(0.2 + 0.8 * (i + 0.9 * f) / n, m)))
        target_stores.append(extract_store(lm, targets, w, ck.epoch, FeatureConfig(kind="sgd", max_length=max_length, bf16=bf16),
                                           proj, data_hash=data_hash(targets), workspace=ws,
                                           progress=lambda f, m: progress(0.2 + 0.8 * (i + 0.9 + 0.1 * f) / n, m)))
    return {"train_stores": train_stores, "target_stores": target_stores}
