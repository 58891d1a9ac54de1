"""Running a selection and the runs on disk: :func:`select` (one call for every method),
:class:`Selection` (its result), :class:`SelectionRun` (a saved run), and the pure views the pages show (:func:`walk_progress`,
:func:`compare_runs`, :func:`precision`).

On disk (:meth:`SelectionRun.save`, workspace kind ``selections``): ``selected_ids.json``,
``scores.parquet`` (every pool record: id, source, task, score, selected, rank), ``selected.jsonl``
(original format via :func:`g2is_core.data.loaders.export_original`; records without an original object,
such as the built-in suite, are written in the project's lossless record JSON), ``selected_chat.jsonl``
(chat messages), ``trajectory.parquet`` + ``components.parquet`` for g2is, and ``sidecar.json`` last
(config, inputs' hashes: pool and target data hashes and gradient store keys, timings).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import workspace as ws_mod
from ..data.records import Record
from ..progress import Progress, no_progress
from ..workspace import Workspace, hash_config
from . import methods as _methods  # noqa: F401  (fills the registry)
from .budget import resolve_budget
from .datasets import DATASETS, load_dataset, save_dataset  # noqa: F401  (re-exported)
from .features import FeatureSet, pair_features
from .registry import Context, data_hash, get_method

KIND = "selections"


# ---------------------------------------------------------------------------- select
@dataclass
class Selection:
    """The result of :func:`select`: ``ids`` ordered (best / first selected first) with their ``scores``,
    the score of every pool record (``pool_scores`` [N], pool order), the budget B asked for, and the
    method's config, timings and extras (``extra["walk"]`` is the WalkResult for g2is)."""

    method: str
    ids: list[str]
    scores: np.ndarray
    pool_ids: list[str]
    pool_scores: np.ndarray
    order: np.ndarray
    budget: int
    config: dict
    inputs: dict
    timings: dict
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def _as_records(x: Any) -> list[Record]:
    if hasattr(x, "records") and not isinstance(x, (list, tuple)):
        return list(x.records)
    return list(x)


def _as_targets(x: Any) -> list[Record]:
    if isinstance(x, Mapping):  # {subtask: [records]}: the subtask label comes from the key
        out = []
        for name, recs in x.items():
            out += [r if r.subtask else dataclasses.replace(r, subtask=str(name)) for r in recs]
        return out
    return list(x)


def select(method: str, pool: Any, targets: Any, *, ratio: float | None = None, count: int | None = None,
           train_stores: Sequence[Any] = (), target_stores: Sequence[Any] = (),
           train_features: FeatureSet | None = None, target_features: FeatureSet | None = None,
           workspace: Workspace | None = None, progress: Progress = no_progress, **opts: Any) -> Selection:
    """Select from ``pool`` (records or a tasks.Pool) for ``targets`` (records, or {subtask: records}).

    Give ``ratio`` in (0, 1] or ``count``. Gradient methods read ``train_stores``/``target_stores``
    (GradientStore, one per checkpoint) or ready :class:`FeatureSet` objects. ``opts`` are the
    method's options (see ``METHODS[name].options``). ``progress(fraction, message)``: of a method's long part
    (the pool's representations or embeddings, computed once and cached).
    """
    m = get_method(method)
    recs = _as_records(pool)
    tgts = _as_targets(targets)
    if not tgts:
        raise ValueError("there are no target examples; give at least one target record")
    budget = resolve_budget(len(recs), ratio, count)
    options = m.make_options(**opts)
    t_start = time.perf_counter()
    train = train_features if train_features is not None else (FeatureSet.from_stores(train_stores) if train_stores else None)
    target = target_features if target_features is not None else (FeatureSet.from_stores(target_stores, "target") if target_stores else None)
    if train is not None and target is not None and train_stores and target_stores:
        pair_features(train, target, train_stores, target_stores)
    ctx = Context(recs, tgts, train, target, workspace, progress=progress)
    t0 = time.perf_counter()
    out = m.run(ctx, budget, options)
    t1 = time.perf_counter()
    order = np.asarray(out.order, dtype=np.int64)
    scores = np.asarray(out.scores, dtype=np.float64)
    if scores.shape != (len(recs),):
        raise AssertionError(f"method {method} returned {scores.shape} scores for {len(recs)} records")
    inputs = {"pool_data_hash": data_hash(recs), "target_data_hash": data_hash(tgts), "n_pool": len(recs),
              "n_targets": len(tgts)}
    if train is not None and "features" in m.needs:
        inputs.update({"train_store_keys": train.keys, "target_store_keys": target.keys if target else None,
                       "checkpoint_weights": [float(w) for w in train.weights]})
    config = {"method": method, "options": dataclasses.asdict(options), "budget": budget,
              "ratio": None if ratio is None else float(ratio), "count": count}
    timings = {"method_seconds": round(t1 - t0, 4), "total_seconds": round(t1 - t_start, 4)}
    if "graph_seconds" in out.extra:
        timings["graph_seconds"] = out.extra["graph_seconds"]
    return Selection(method, [recs[i].id for i in order], scores[order], [r.id for r in recs], scores, order,
                     budget, config, inputs, timings, out.extra)


# ---------------------------------------------------------------------------- datasets and runs on disk
@dataclass
class SelectionRun:
    """A saved selection: its directory, sidecar and what the pages need (ids, scores table, trajectory)."""

    dir: Path
    meta: dict
    ids: list[str]
    scores: Any            # pandas DataFrame: id, source, task, score, selected, rank (pool order)
    trajectory: Any = None  # pandas DataFrame (g2is) with an ``id`` column, or None
    components: Any = None  # pandas DataFrame (g2is), or None

    @property
    def method(self) -> str:
        return self.meta["config"]["method"]

    @property
    def key(self) -> str:
        return self.dir.name

    @classmethod
    def load(cls, directory: str | Path) -> "SelectionRun":
        import pandas as pd

        d = Path(directory)
        meta = ws_mod.read_sidecar(d)
        if meta.get("kind") != "selection":
            raise ValueError(f"{d} is not a selection run (its sidecar says {meta.get('kind')!r})")
        ids = ws_mod.read_json(d / "selected_ids.json")
        traj = pd.read_parquet(d / "trajectory.parquet") if (d / "trajectory.parquet").exists() else None
        comps = pd.read_parquet(d / "components.parquet") if (d / "components.parquet").exists() else None
        return cls(d, meta, ids, pd.read_parquet(d / "scores.parquet"), traj, comps)

    @staticmethod
    def save(sel: Selection, pool: Any, workspace: Workspace | None = None, out_dir: str | Path | None = None,
             name: str = "") -> "SelectionRun":
        """Write a :class:`Selection` (module docstring: files) and return it loaded back."""
        import pandas as pd

        from ..data.loaders import export_chat, export_original
        from ..data.records import DataError

        ws = workspace or Workspace()
        recs = _as_records(pool)
        if [r.id for r in recs] != sel.pool_ids:
            raise ValueError("these pool records are not the ones the selection was made from; pass the same pool")
        t0 = time.perf_counter()
        # A named run gets its own folder: two users saving the same selection under their own names
        # never overwrite each other's run (unnamed runs keep the plain content key).
        key = {"config": sel.config, "inputs": sel.inputs, **({"name": name} if name else {})}
        d = Path(out_dir) if out_dir else ws.root / KIND / hash_config(key)
        d.mkdir(parents=True, exist_ok=True)
        chosen = [recs[i] for i in sel.order]
        ws_mod.write_json(d / "selected_ids.json", sel.ids)
        rank = np.full(len(recs), -1, np.int64)
        rank[sel.order] = np.arange(len(sel.order))
        table = pd.DataFrame({"id": sel.pool_ids, "source": [r.source for r in recs], "task": [r.task for r in recs],
                              "score": sel.pool_scores, "selected": rank >= 0, "rank": rank})
        with ws_mod.atomic_path(d / "scores.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        if all(r.raw is not None for r in chosen):
            export_original(chosen, d / "selected.jsonl")
            original = "original"
        else:
            try:
                export_original(chosen, d / "selected.jsonl")
                original = "original"
            except DataError:
                from ..data.loaders import save_records_jsonl

                save_records_jsonl(chosen, d / "selected.jsonl")
                original = "record-json (some records have no original object, e.g. the built-in suite)"
        export_chat(chosen, d / "selected_chat.jsonl")
        extra: dict[str, Any] = {"n_selected": len(sel.ids), "budget": sel.budget, "selected_format": original,
                                 "name": name}
        walk_res = sel.extra.get("walk")
        if walk_res is not None:
            traj = walk_res.trajectory.copy()
            traj["id"] = [sel.pool_ids[int(i)] for i in traj["node"]]
            with ws_mod.atomic_path(d / "trajectory.parquet") as tmp:
                traj.to_parquet(tmp, index=False)
            with ws_mod.atomic_path(d / "components.parquet") as tmp:
                walk_res.components.to_parquet(tmp, index=False)
            extra["walk"] = {"config": walk_res.config, "core": None if walk_res.core is None else walk_res.core.summary(),
                             "components": walk_res.components.to_dict(orient="records")}
            if sel.extra.get("graph_dir"):
                extra["graph_key"] = Path(sel.extra["graph_dir"]).name
        save_dataset(recs, ws)
        timings = {**sel.timings, "save_seconds": round(time.perf_counter() - t0, 4)}
        ws_mod.write_sidecar(d, "selection", sel.config, inputs=sel.inputs, extra={**extra, "timings": timings})
        return SelectionRun.load(d)


def list_runs(workspace: Workspace | None = None, method: str | None = None) -> list[tuple[Path, dict]]:
    """Finished selection runs (newest first), optionally only one method's."""
    out = (workspace or Workspace()).list(KIND)
    return [(p, m) for p, m in out if method is None or m.get("config", {}).get("method") == method]


def precision(selected_ids: Sequence[str], relevant: set[str]) -> float:
    """Fraction of the selected ids that are relevant (NaN for an empty selection)."""
    sel = list(selected_ids)
    return float("nan") if not sel else sum(1 for i in sel if i in relevant) / len(sel)


# ---------------------------------------------------------------------------- views of runs (pure; the pages call these)
def walk_progress(trajectory, components, step: int):
    """Per component after the first ``step`` walk steps (selection order): budget, filled, fill ratio,
    fallbacks so far and the candidates rejected so far by reason. DataFrame, one row per component.

    ``trajectory``: a g2is run's trajectory (TRAJECTORY_COLUMNS); ``components``: its components table.
    """
    import pandas as pd

    t = trajectory.sort_values(["component", "step"], kind="stable").iloc[:max(0, int(step))]
    rows = []
    for c in components.itertuples():
        part = t[t["component"] == c.component]
        rows.append({"component": int(c.component), "budget": int(c.budget), "filled": len(part),
                     "fill": len(part) / c.budget if c.budget else float("nan"),
                     "fallbacks": int((part["source"] == "fallback").sum()),
                     "rejected_conflict": int(part["nbr_conflict"].sum() + part["scan_conflict"].sum()),
                     "rejected_consistency": int(part["nbr_consistency"].sum() + part["scan_consistency"].sum()),
                     "skipped_excluded": int(part["nbr_excluded"].sum() + part["scan_excluded"].sum()),
                     "stop": getattr(c, "stop", "") if len(part) == int(c.filled) else "walking"})
    return pd.DataFrame(rows)


def compare_runs(a_ids: Sequence[str], b_ids: Sequence[str], tasks_by_id: Mapping[str, str],
                 sources_by_id: Mapping[str, str] | None = None) -> tuple[dict, Any]:
    """Overlap of two selections and their composition.

    Returns ({"a", "b", "both", "only_a", "only_b", "jaccard"}, DataFrame [group, value, a, b]) where
    the table counts each selection's records per task (and per source when given).
    """
    import pandas as pd

    a, b = set(a_ids), set(b_ids)
    union = a | b
    stats = {"a": len(a), "b": len(b), "both": len(a & b), "only_a": len(a - b), "only_b": len(b - a),
             "jaccard": len(a & b) / len(union) if union else float("nan")}
    rows = []
    for group, lookup in (("task", tasks_by_id), ("source", sources_by_id)):
        if lookup is None:
            continue
        values = sorted({lookup.get(i, "?") for i in union})
        for v in values:
            rows.append({"group": group, "value": v, "a": sum(1 for i in a if lookup.get(i, "?") == v),
                         "b": sum(1 for i in b if lookup.get(i, "?") == v)})
    return stats, pd.DataFrame(rows, columns=["group", "value", "a", "b"])
