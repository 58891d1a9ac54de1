"""Benchmark runner: an experiment spec -> select, fine-tune, evaluate -> run-registry rows.

Every (target, method, ratio, seed) cell of a spec (:mod:`.spec`) is one row of the run registry
(SQLite), keyed by the hash of its full config (:func:`cell_config`), so ``g2is bench run SPEC``
resumes after a kill without redoing finished rows. The random and full-data baselines, and the
untrained base model, are part of every table: they are added to the spec's methods whether or
not it lists them. Gradient methods (those whose registry entry ``needs`` features) get the LESS
stores from :func:`gradient_stores`, cached by content in the workspace.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..data.records import Record
from ..progress import Progress, no_progress
from ..runtime import cpu_model, machine_info, resolve_bf16, resolve_precision
from ..workspace import LockBusy, Workspace, hash_config, provenance, read_json, write_json
from . import bridge
from .experiment import load_pool, load_target
from .registry import Registry
from .scores import merge_scores, question_scores, save_scores
from .spec import BASE, ExperimentSpec, TargetSpec


def needs_features(method: str) -> bool:
    """Whether a selection method scores gradient features (its registry entry's ``needs``), so a cell of
    it needs the warmup and the gradient stores first."""
    from ..selection import METHODS

    m = METHODS.get(method)
    return m is not None and "features" in m.needs


def needs_head_signatures(spec: ExperimentSpec) -> bool:
    """Whether the spec's gradient stores carry head signatures: when any method of the spec reads them
    (registry ``needs``), or when the closed loop is on (``eval.head_pattern``) and the spec extracts stores
    anyway (a gradient method): then every selection's head similarity to the target's pattern is measured
    from them (:mod:`.bridge`). Same pass as the features (docs/bridge.md); all methods share one set of stores."""
    from ..selection import METHODS

    if any("head_signatures" in getattr(METHODS.get(spec.base_method(m)), "needs", ()) for m in spec.all_methods()):
        return True
    return spec.eval.head_pattern > 0 and any(needs_features(spec.base_method(m)) for m in spec.methods)


def cell_config(spec: ExperimentSpec, target: TargetSpec, method: str, ratio: float | None, seed: int,
                pool_hash: str) -> dict[str, Any]:
    """What identifies one cell: its registry key is the hash of this (settings as the spec file wrote them)."""
    return {"experiment": spec.name, "model": spec.model, "pool_hash": pool_hash, "target": target.config(),
            "method": method, "ratio": ratio, "seed": seed,
            "train": spec.train.as_written() if method != BASE else None,
            "selection": spec.selection.as_written() if method not in (BASE, "full", "random") else None,
            "eval": spec.eval.as_written(),
            **({"variant": asdict(spec.variants[method])} if method in spec.variants else {})}


def all_cells(spec: ExperimentSpec) -> list[tuple[TargetSpec, str, float | None, int]]:
    """Every (target, method, ratio, seed) cell of a spec, in run order."""
    cells = []
    for t in spec.targets:
        for m in spec.all_methods():
            for r in ([None] if m in (BASE, "full") else spec.ratios):
                seeds = [spec.seeds[0]] if m == BASE else (spec.full_seeds or spec.seeds) if m == "full" else spec.seeds
                for s in seeds:
                    cells.append((t, m, r, s))
    return cells


def chosen_cells(spec: ExperimentSpec, methods: set[str] | None = None, targets: set[str] | None = None,
                 ratios: set[float] | None = None, seeds: set[int] | None = None,
                 ) -> list[tuple[TargetSpec, str, float | None, int]]:
    """The cells of :func:`all_cells` whose method is one of ``methods``, target name one of ``targets``, ratio
    one of ``ratios`` (base and full have none: kept) and seed one of ``seeds`` (None = all), in run order."""
    return [c for c in all_cells(spec) if (methods is None or c[1] in methods)
            and (targets is None or c[0].name in targets) and (ratios is None or c[2] is None or c[2] in ratios)
            and (seeds is None or c[3] in seeds)]


def run_experiment(spec: ExperimentSpec, workspace: Workspace | None = None, progress: Progress = no_progress,
                   log=print, methods: set[str] | None = None, targets: set[str] | None = None,
                   ratios: set[float] | None = None, seeds: set[int] | None = None) -> list[dict[str, Any]]:
    """Run every missing cell of the spec (only those :func:`chosen_cells` keeps for ``methods``, ``targets``,
    ``ratios`` and ``seeds``, when given); return the registry rows of this experiment.

    Several processes may run the same spec at once: each claims a cell in the registry before it
    runs it, so they share the work (``prepare_features`` first, so they do not both extract them)."""
    from ..data.loaders import data_hash

    ws = workspace or Workspace()
    reg = Registry.open(ws)
    pool = load_pool(spec.pool)
    pool_hash = data_hash(pool)
    cells = chosen_cells(spec, methods, targets, ratios, seeds)
    spec_hash = hash_config(spec.to_dict())
    exp_dir = ws.dir("experiments", spec_hash)
    write_json(exp_dir / "spec.json", spec.to_dict())
    # This spec becomes the experiment's current version: its tables show only the cells listed here (every
    # cell of the spec, also those another `--methods` subset runs), never rows of an earlier edit of it.
    all_keys = [hash_config(cell_config(spec, t, m, r, s, pool_hash)) for t, m, r, s in all_cells(spec)]
    check_precision(spec, reg.rows(spec.name), set(all_keys))
    reg.record_version(spec.name, spec_hash, spec.to_dict(), all_keys)
    for i, (t, m, r, s) in enumerate(cells):
        cfg = cell_config(spec, t, m, r, s, pool_hash)
        key = hash_config(cfg)
        label = f"{t.name} / {m} / ratio {r} / seed {s}"
        if not reg.claim(key, spec.name, t.name, m, r, s, cfg):
            log(f"[{i + 1}/{len(cells)}] {label}: done already (or running elsewhere), skipped")
            continue
        progress(i / len(cells), label)
        try:
            metrics, timings, sel_dir, train_dir, info = _run_cell(
                spec, t, m, r, s, pool, ws, key, lambda f, msg: progress((i + f) / len(cells), f"{label}: {msg}"))
        except Exception as exc:
            reg.fail(key, f"{type(exc).__name__}: {exc}")
            raise
        qs = info.pop("question_scores", None)
        if qs:  # before finish: a row marked done always has its per-question scores (.scores)
            save_scores(reg, key, spec.name, qs)
        reg.finish(key, metrics=metrics, timings=timings, selection=sel_dir, train_dir=train_dir, info=info)
        log(f"[{i + 1}/{len(cells)}] {label}: {json.dumps(metrics)}")
    progress(1.0, "experiment finished")
    return reg.current_rows(spec.name)


# the bf16 switches of a spec, as a cell's info["precision"] names them, and where the spec sets each
_SWITCHES = {"train": ("training", lambda sp: sp.train.bf16, "train.bf16"),
             "features": ("feature extraction", lambda sp: sp.selection.features.bf16, "selection.features.bf16"),
             "eval": ("evaluation", lambda sp: sp.eval.dtype, "eval.dtype")}


def check_precision(spec: ExperimentSpec, rows: list[dict[str, Any]], keys: set[str]) -> None:
    """Refuse to add cells to an experiment whose finished cells (those of ``keys``: this spec's) ran a bf16 switch
    at another precision than it resolves to here. A cell's key holds the switch as written (``auto``), not what it
    resolved to, so without this a study run over machines with and without native bf16 (AVX512-BF16/AMX) would
    pair fp32 and bf16 cells in one table, silently (rows restored from an archive carry their precision too)."""
    here, other = {}, {}
    for name, (what, get, _) in _SWITCHES.items():
        here[name] = resolve_precision(get(spec), what=what).name
    for r in rows:
        if r.get("status") != "done" or r["config_hash"] not in keys:
            continue
        ran = (r.get("info") or {}).get("precision") or {}
        for name in _SWITCHES:
            p = (ran.get(name) or {}).get("precision")
            if p and p != here[name]:
                other.setdefault((name, p), []).append(r["config_hash"])
    if not other:
        return
    (name, p), hit = sorted(other.items())[0]
    what, get, field = _SWITCHES[name]
    raise ValueError(f"{spec.source or spec.name}: {field}: {get(spec)} runs {what} in {here[name]} on this machine "
                     f"({cpu_model()}), but {len(hit)} finished cell(s) of experiment {spec.name!r} ran it in {p} "
                     f"(e.g. {hit[0]}); one table must not mix precisions. Run it where {get(spec)} gives {p}, or "
                     f"pin {field} in the spec ({'false' if p == 'fp32' else 'true'} runs {p} everywhere; the "
                     "finished cells, keyed by the switch as written, are then not part of it), or run it under "
                     "another name")


def remeasure_experiment(spec: ExperimentSpec, workspace: Workspace | None = None, progress: Progress = no_progress,
                         log=print, methods: set[str] | None = None, targets: set[str] | None = None,
                         ratios: set[float] | None = None, seeds: set[int] | None = None) -> int:
    """Measure the finished cells again with today's evaluation, after a protocol learnt a new metric
    (``Protocol.version``), from their trained weights: no selection, no training. Each row's metrics, per-question
    scores and closed-loop pattern are replaced; its timings stay those of the run, with ``remeasure_s`` added.
    A row measured under the current versions already is skipped, so a killed remeasure resumes. Cells not run yet
    are left to ``bench run``. Returns the number of rows measured again.

    (Run it as one process per experiment: two would both measure a row, and the second would read the first's
    kept result, so the rows agree, but the time is spent twice.)"""
    from dataclasses import replace

    from ..data.loaders import data_hash
    from ..models.loading import load_model
    from ..models.lora import attach_lora
    from ..models.training import load_trained

    ws = workspace or Workspace()
    reg = Registry.open(ws)
    pool_hash = data_hash(load_pool(spec.pool))
    rows = {r["config_hash"]: r for r in reg.rows(spec.name)}
    check_precision(spec, list(rows.values()),   # a measurement made here must not mix precisions with the rest
                    {hash_config(cell_config(spec, t, m, r, s, pool_hash)) for t, m, r, s in all_cells(spec)})
    cells = chosen_cells(spec, methods, targets, ratios, seeds)
    ev_precision = resolve_precision(spec.eval.dtype, what="evaluation")
    model_key = load_model(spec.model, workspace=ws).key   # for the eval keys; a measured cell loads its own copy
    n = 0
    for i, (t, m, r, s) in enumerate(cells):
        key = hash_config(cell_config(spec, t, m, r, s, pool_hash))
        label = f"{t.name} / {m} / ratio {r} / seed {s}"
        row = rows.get(key)
        if row is None or row["status"] != "done":
            log(f"[{i + 1}/{len(cells)}] {label}: not finished, left to `g2is bench run`")
            continue
        train_dir = row["train_dir"]
        if not train_dir and m != BASE:   # a cell imported from an archive (loop/archive.py): its weights stayed behind
            log(f"[{i + 1}/{len(cells)}] {label}: its trained weights are not on this machine (the row was imported "
                "from an archive), left as it is; to measure it again, run the cell here")
            continue
        if Path((row["info"] or {}).get("eval_dir", "")).name == _eval_key(spec, t, model_key, train_dir,
                                                                            ev_precision.bf16):
            log(f"[{i + 1}/{len(cells)}] {label}: measured with today's evaluation already, skipped")
            continue
        t0 = time.perf_counter()
        lm = load_model(spec.model, workspace=ws)
        step = lambda f, msg, i=i, label=label: progress((i + f) / len(cells), f"{label}: {msg}")  # noqa: E731
        if train_dir:
            lm.model = (attach_lora(lm.model, replace(spec.train.lora, seed=s)) if not spec.train.full
                        else lm.model.requires_grad_(True))
            load_trained(train_dir, lm.model)
        kept, ev_dir, ev_timings = _measured(spec, t, lm, train_dir, ws, key, ev_precision.bf16, step)
        qs = kept["question_scores"]
        if qs:
            save_scores(reg, key, spec.name, qs)
        info = {**(row["info"] or {}), "eval_dir": str(ev_dir),
                **{k: v for k, v in _measurement_info(kept).items() if k != "question_scores"}}  # saved just above
        timings = {**(row["timings"] or {}), "remeasure_s": time.perf_counter() - t0,
                   **({"remeasure_reused": 1.0} if ev_timings.get("eval_reused") else {})}
        metrics = {**kept["metrics"], "n_train": (row["metrics"] or {}).get("n_train", 0)}
        reg.update_measurement(key, metrics=metrics, timings=timings, info=info)
        n += 1
        log(f"[{i + 1}/{len(cells)}] {label}: {json.dumps(metrics)}")
    progress(1.0, "remeasure finished")
    return n


def _run_cell(spec: ExperimentSpec, target: TargetSpec, method: str, ratio: float | None, seed: int,
              pool: list[Record], ws: Workspace, key: str, progress: Progress):
    from dataclasses import replace

    from ..data.encoding import encode_all
    from ..models.loading import load_model
    from ..models.lora import attach_lora
    from ..models.training import train

    timings: dict[str, float] = {}
    machine = {"start": machine_info()}  # where the timings were measured, and under what load (registry "info")
    precision: dict[str, Any] = {}  # what each bf16 switch resolved to here (registry "info", not the key)
    sel_dir = None
    train_dir = None
    diagnostics = None  # what the selection looks like (selection.diagnostics), stored in the row's info
    stores: dict[str, Any] = {}  # the gradient stores a gradient method read (train_stores, target_stores)
    t0 = time.perf_counter()
    if method == BASE:
        chosen: list[Record] = []
    elif method == "full":
        chosen = list(pool)
    else:
        from ..selection import SelectionRun, select

        targets = load_target(target.select, target.n_select, seed=0)
        name, method = method, spec.base_method(method)
        opts = spec.selection.method_options(method)
        if name in spec.variants:
            opts.update(spec.variants[name].options)
        if needs_features(method):
            precision["features"] = resolve_precision(spec.selection.features.bf16, what="feature extraction").to_dict()
            stores = gradient_stores(spec, pool, targets, ws, lambda f, m: progress(0.25 * f, f"features: {m}"))
        if method == "random":
            opts.setdefault("seed", seed)
        sel = select(method, pool, targets, ratio=ratio, workspace=ws, **stores, **opts,
                     progress=lambda f, m: progress(0.25 * f, f"select: {m}"))
        run = SelectionRun.save(sel, pool, workspace=ws, name=f"{spec.name}/{target.name}/{name}/{ratio}/{seed}")
        from ..selection.diagnostics import selection_diagnostics

        diagnostics = selection_diagnostics(sel, pool)
        by_id = {r.id: r for r in pool}
        chosen = [by_id[i] for i in run.ids]
        sel_dir = str(run.dir)
    timings["select_s"] = time.perf_counter() - t0
    similarity: dict[str, Any] = {}
    if chosen and spec.eval.head_pattern and needs_head_signatures(spec):
        similarity = _selection_similarity(spec, target, pool, [r.id for r in chosen], ws, stores, progress)
    lm = load_model(spec.model, workspace=ws)
    if chosen:
        ts = spec.train
        cfg = ts.train_config(seed)
        model = lm.model
        if ts.full:
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            model = attach_lora(model, replace(ts.lora, seed=seed))
        enc, _ = encode_all(lm.tokenizer, chosen, max_length=ts.max_length)
        from ..data.loaders import data_hash

        # Keyed by what determines the weights (model, settings, seed, the data itself), not by the
        # cell: the full-data model, or two methods that select the same set, are trained once.
        # ("auto" precision keyed by what it resolved to here; specs without the switch keep their keys)
        written = ts.as_written()
        train_key = {**written, "bf16": cfg.bf16} if "bf16" in written else written
        train_dir = ws.dir("training", hash_config({"model": lm.key, "train": train_key, "seed": seed,
                                                    "data": data_hash(chosen)}))
        t1 = time.perf_counter()
        res_train = train(model, enc, cfg, pad_id=lm.tokenizer.pad_token_id, out_dir=train_dir,
                          progress=lambda f, m: progress(0.3 + 0.5 * f, f"train: {m}"))
        # what ran, with what the spec asked for (cfg.bf16 is already resolved)
        precision["train"] = {**res_train.precision, "requested": resolve_precision(ts.bf16, what="training").requested}
        timings["train_s"] = time.perf_counter() - t1
        lm.model = model
        train_dir = str(train_dir)
    ev_precision = resolve_precision(spec.eval.dtype, what="evaluation")
    precision["eval"] = ev_precision.to_dict()
    kept, ev_dir, ev_timings = _measured(spec, target, lm, train_dir, ws, key, ev_precision.bf16, progress)
    timings.update(ev_timings)
    metrics = {**kept["metrics"], "n_train": len(chosen)}
    machine["end"] = machine_info()
    info: dict[str, Any] = {"precision": precision, "eval_dir": str(ev_dir), "machine": machine}
    if diagnostics is not None:
        info["diagnostics"] = diagnostics
    info.update(similarity)
    return metrics, timings, sel_dir, train_dir, {**info, **_measurement_info(kept)}


def _measurement_info(kept: dict[str, Any]) -> dict[str, Any]:
    """The row ``info`` entries of a measurement: its per-question scores and the closed loop's pattern."""
    return {"question_scores": kept["question_scores"],
            **({bridge.PATTERN: kept["pattern"]} if kept.get("pattern") is not None else {})}


def _measured(spec: ExperimentSpec, target: TargetSpec, lm, train_dir: str | None, ws: Workspace, key: str,
              bf16: bool, progress: Progress) -> tuple[dict[str, Any], Path, dict[str, float]]:
    """The measurement of ``lm`` (weights ``train_dir``, or the base model) on ``target``: (what :func:`_measure`
    returns, the eval dir it is kept in, the timings). Two cells whose models are the same weights (one training
    dir: an ablation that picked what G2IS picked, at the same seed; or the base model) measure the same on the same
    target: the second reads the first's result."""
    ev_dir = ws.dir("evals", _eval_key(spec, target, lm.key, train_dir, bf16))
    t2 = time.perf_counter()
    if (ev_dir / "result.json").exists():
        progress(0.9, "eval: the same weights were measured on this target before; their result is read")
        # the cost was the measuring cell's
        return read_json(ev_dir / "result.json"), ev_dir, {"eval_s": time.perf_counter() - t2, "eval_reused": 1.0}
    kept = _measure(spec, target, lm, bf16, progress)
    write_json(ev_dir / "result.json", {**kept, "made_by": {"cell": key, "model": lm.identity,
                                                            "weights": train_dir, **provenance()}})
    return kept, ev_dir, kept["timings"]


def _eval_key(spec: ExperimentSpec, target: TargetSpec, model_key: str, train_dir: str | None, bf16: bool) -> str:
    """What a cell's measurement depends on: the weights (the base model's key and the training dir, itself keyed by
    model, settings, seed and data), the target's eval and selection examples by content, and the eval settings."""
    from ..data.loaders import data_hash
    from .evaluation import eval_records, get_spec

    ev = spec.eval
    shots = target.shots if target.shots is not None else ev.shots
    evals = eval_records(get_spec(target.eval), limit=target.eval_limit, seed=0, shots=shots)
    probe = load_target(target.select, target.n_select, seed=0)[:ev.head_pattern] if ev.head_pattern else []
    return hash_config({"model": model_key, "weights": Path(train_dir).name if train_dir else None,
                        "target": target.config(), "eval_data": data_hash(evals),
                        "probe_data": data_hash(probe) if probe else None, "eval": ev.as_written(), "bf16": bf16,
                        "max_length": spec.train.max_length, **_measure_versions(spec, target)})


def _measure_versions(spec: ExperimentSpec, target: TargetSpec) -> dict[str, Any]:
    """The versions of the protocols a cell's measurement runs (``Protocol.version``), where past 1: a result kept
    before a protocol learnt a new metric is then not read as a current one. Empty at version 1 everywhere, so
    the results kept before protocols had versions keep their keys."""
    from .evaluation import get_protocol, get_spec

    ev = spec.eval
    main = target.protocol or ev.protocol or get_spec(target.eval).protocol
    names = {main} | ({"loglik"} if ev.loglik and main != "loglik" else set())
    versions = {n: get_protocol(n).version for n in sorted(names) if get_protocol(n).version > 1}
    return {"measure": versions} if versions else {}


def _measure(spec: ExperimentSpec, target: TargetSpec, lm, bf16: bool, progress: Progress) -> dict[str, Any]:
    """A cell's model measured on its target: the head pattern (closed loop) and the eval. Returns the metrics,
    the per-question scores, the pattern (or None) and the timings, as kept in the eval's result file."""
    from .evaluation import EvalSettings, evaluate

    ev = spec.eval
    pattern = None
    own: dict[str, float] = {}
    if ev.head_pattern:  # before the eval: measured in fp32 on the weights as trained (bridge.py)
        t3 = time.perf_counter()
        progress(0.8, "head pattern of the target")
        pattern = target_head_pattern(lm, target, ev.head_pattern, spec.train.max_length)
        own["head_pattern_s"] = time.perf_counter() - t3
    t2 = time.perf_counter()
    if bf16:
        import torch

        lm.model = lm.model.to(torch.bfloat16)  # scoring only: bf16 matmuls (AVX512-BF16 / AMX / tensor cores)
    scoring = {f.name: getattr(ev, f.name) for f in fields(EvalSettings)}
    res = evaluate(lm, target.eval, limit=target.eval_limit, seed=0, **scoring,
                   protocol=target.protocol if target.protocol is not None else ev.protocol,
                   shots=target.shots if target.shots is not None else ev.shots,
                   progress=lambda f, m: progress(0.8 + 0.1 * f, f"eval: {m}"))
    # n_truncated: prompts cut to fit the scored length (the model's context unless eval.max_length says
    # otherwise); every protocol reports it (generation cuts nothing: 0), so the tables can show it beside the score
    metrics = {"n_truncated": 0.0, **res.metrics, "n_eval": res.n}
    per_q = question_scores(res.protocol, res.per_example)
    if ev.loglik and res.protocol != "loglik":
        # The gold answer's log-likelihood moves even when a small model's exact match stays at 0.
        # (Scored with evaluate()'s defaults and the target's shots only, as the rows on record were.)
        ll = evaluate(lm, target.eval, limit=target.eval_limit, seed=0, protocol="loglik", shots=target.shots,
                      progress=lambda f, m: progress(0.9 + 0.1 * f, f"eval (loglik): {m}"))
        metrics.update({"nll": ll.metrics["nll"], "ppl": ll.metrics["ppl"],
                        "n_truncated_loglik": ll.metrics.get("n_truncated", 0.0)})
        per_q = merge_scores(per_q, question_scores("loglik", ll.per_example))
    own["eval_s"] = time.perf_counter() - t2
    return {"metrics": metrics, "question_scores": per_q, "pattern": pattern, "timings": own}


def target_head_pattern(lm, target: TargetSpec, n: int, max_length: int) -> dict[str, Any]:
    """The closed loop's pattern of one cell (:func:`.bridge.pattern_record`): the activation pattern [L, H] of
    ``lm.model`` as it is (trained or base) on the first ``n`` of the target's selection examples, encoded as
    training encodes them (``max_length`` tokens), gate route, fp32. The same examples for every cell of a
    target: the target's selection examples are drawn with seed 0 whatever the cell's seed."""
    from ..data.encoding import encode_all
    from ..heads.patterns import activation_pattern

    recs = load_target(target.select, target.n_select, seed=0)[:n]
    enc, _ = encode_all(lm.tokenizer, recs, max_length=max_length)
    ap = activation_pattern(lm.model, enc, pad_id=lm.tokenizer.pad_token_id)
    return bridge.pattern_record(ap.values, ap.ids, n_kv_heads=ap.n_kv_heads, max_length=max_length, route=ap.route)


def _selection_similarity(spec: ExperimentSpec, target: TargetSpec, pool: list[Record], ids: list[str],
                          ws: Workspace, stores: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The row ``info`` entries of a cell's selection: its head similarity and its gradient similarity to the
    target (:func:`.bridge.selection_head_similarity`, :func:`.bridge.selection_gradient_similarity`), from the
    spec's gradient stores (those the cell's method read, else the cached ones of :func:`gradient_stores`: a
    non-gradient method's cell reads them only for this)."""
    from ..selection import FeatureSet

    if not stores:
        targets = load_target(target.select, target.n_select, seed=0)
        stores = gradient_stores(spec, pool, targets, ws, lambda f, m: progress(0.25 * f, f"features: {m}"))
    train = FeatureSet.from_stores(stores["train_stores"])
    tgt = FeatureSet.from_stores(stores["target_stores"], "target")
    return {bridge.SIMILARITY: bridge.selection_head_similarity(train, tgt, ids),
            bridge.GRADIENT: bridge.selection_gradient_similarity(train, tgt, ids)}


def prepare_features(spec: ExperimentSpec, workspace: Workspace | None = None,
                     progress: Progress = no_progress) -> int:
    """Warmup and every gradient store the spec's gradient methods need (cached by content), up front.

    Returns the number of targets prepared (0 when the spec lists no gradient method)."""
    if not any(needs_features(spec.base_method(m)) for m in spec.methods):
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
    Settings: ``spec.selection.features`` (:class:`~g2is_core.loop.spec.FeatureSettings`).
    """
    from ..data.loaders import data_hash
    from ..features.extract import FeatureConfig, extract_store
    from ..features.warmup import warmup
    from ..models.loading import load_model

    fs = spec.selection.features
    wcfg = fs.warmup.config()
    max_length = fs.max_length if fs.max_length is not None else wcfg.max_length
    bf16 = resolve_bf16(fs.bf16, what="feature extraction")  # fast path: the feature pass's precision (true/false/auto)
    proj = fs.projector_config()
    heads = needs_head_signatures(spec)
    lm = load_model(spec.model, workspace=ws)
    pool_hash = data_hash(pool)
    w = warmup(lm, pool, wcfg, data_hash=pool_hash, workspace=ws, progress=lambda f, m: progress(0.2 * f, m))
    n = len(w.checkpoints)
    # One job per (checkpoint, side). A store another process is writing is left for later (wait=False) and this
    # process takes the next one, so several `bench features`/`bench run` processes split the extraction; the
    # jobs left over are then waited for (their writer finishes them, or this process resumes a dead one's).
    jobs = [(i, side) for i in range(n) for side in ("pool", "target")]
    done: dict[tuple[int, str], Any] = {}
    models: dict[int, Any] = {}

    def extract_job(job: tuple[int, str], wait: bool):
        i, side = job
        ck = w.checkpoints[i]
        recs, kind, lo, span = (pool, "adam", 0.0, 0.9) if side == "pool" else (targets, "sgd", 0.9, 0.1)
        if i not in models:  # one load per checkpoint: its pool and target stores share the prepared model
            models[i] = load_model(spec.model, workspace=ws)
        return extract_store(models[i], recs, w, ck.epoch,
                             FeatureConfig(kind=kind, max_length=max_length, bf16=bf16, head_signatures=heads),
                             proj, data_hash=pool_hash if side == "pool" else data_hash(targets), workspace=ws,
                             progress=lambda f, m: progress(0.2 + 0.8 * (i + lo + span * f) / n, m), wait=wait)

    for job in jobs:
        with contextlib.suppress(LockBusy):
            done[job] = extract_job(job, wait=False)
    for job in jobs:
        if job not in done:
            done[job] = extract_job(job, wait=True)
    train_stores = [done[(i, "pool")] for i in range(n)]
    target_stores = [done[(i, "target")] for i in range(n)]
    return {"train_stores": train_stores, "target_stores": target_stores}
