"""Typed readers of the workspace's artefacts, for the pages (no Streamlit).

Why: a page that opens ``selected_ids.json`` or ``state.json`` by name breaks silently when the
writer renames a file; here each artefact has one reader, next to the core class that writes it,
and the pages only call these. Every entry is a small frozen dataclass: the directory, its parsed
sidecar/metadata, and ``stamp()`` (a number that changes when the artefact's files change, the
key the pages' caches use). Lists are newest first.

File names below are the writers' (selection/runs.py ``SelectionRun.save``, heads/study.py,
impact/study.py, models/training.py ``train``, loop/registry.py ``Registry.open``).
"""
from __future__ import annotations

import contextlib
import os

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..workspace import SIDECAR, Workspace, read_json, read_sidecar

GRAPHS = "graphs"            # selection.methods.g2is.graph_dir and cli graph build write here
REGISTRY_FILE = "registry.sqlite"  # loop.registry.Registry.open


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _files_stamp(files: list[Path]) -> float:
    """Newest mtime of the files that exist, plus how many were asked for (a new file changes it)."""
    return max(f.stat().st_mtime for f in files if f.exists()) + len(files)


# ----------------------------------------------------------------------------- instruction graphs
@dataclass(frozen=True)
class GraphEntry:
    """A finished instruction graph (``graphs/<key>``) and its sidecar."""

    path: Path
    meta: dict[str, Any]

    @property
    def inputs(self) -> dict[str, Any]:
        return self.meta.get("inputs") or {}

    @property
    def features_key(self) -> str:
        return self.inputs.get("features_key", "")

    @property
    def data_hash(self) -> str | None:
        return self.inputs.get("data_hash")

    @property
    def train_store_keys(self) -> list[str]:
        """The pool's gradient stores the graph was built from (one per warmup checkpoint)."""
        return list(self.inputs.get("train_store_keys") or [])

    def stamp(self) -> float:
        return _mtime(self.path / SIDECAR)


def graphs(ws: Workspace) -> list[GraphEntry]:
    """Every finished instruction graph of the workspace."""
    return [GraphEntry(d, m) for d, m in ws.list(GRAPHS)]


def graph(path: str | Path) -> GraphEntry:
    """The graph in this directory (FileNotFoundError when it is not finished)."""
    return GraphEntry(Path(path), read_sidecar(path))


def run_graph(ws: Workspace, run_meta: dict[str, Any]) -> GraphEntry | None:
    """The graph a g2is selection run walked on (its ``graph_key``), or None when it is not in the workspace."""
    key = run_meta.get("graph_key")
    d = ws.root / GRAPHS / key if key else None
    if d is None or not ws.is_complete(d):
        return None
    return graph(d)


# ----------------------------------------------------------------------------- selection runs
@dataclass(frozen=True)
class RunEntry:
    """A finished selection run (``selections/<key>``) and its sidecar; :meth:`load` reads its tables."""

    path: Path
    meta: dict[str, Any]

    @property
    def method(self) -> str:
        return self.meta["config"]["method"]

    @property
    def pool_data_hash(self) -> str | None:
        return (self.meta.get("inputs") or {}).get("pool_data_hash")

    @property
    def target_data_hash(self) -> str | None:
        return (self.meta.get("inputs") or {}).get("target_data_hash")

    @property
    def target(self) -> str:
        """What the run selected for, in words: the target data as named when it ran (`g2is select
        --targets`), else the experiment's target (`g2is bench`/`demo` runs are named
        experiment/target/method/ratio/seed), else the target data's hash."""
        inputs = self.meta.get("inputs") or {}
        if inputs.get("targets"):
            return str(inputs["targets"]).removeprefix("builtin:targets:")
        parts = str(self.meta.get("name") or "").split("/")
        if len(parts) == 5 and parts[1]:
            return parts[1]
        h = self.target_data_hash
        return f"target {h[:8]}" if h else "target unknown"

    @property
    def train_store_keys(self) -> list[str]:
        """The pool's gradient stores (g2is and less runs; none for the others)."""
        return list((self.meta.get("inputs") or {}).get("train_store_keys") or [])

    @property
    def target_store_keys(self) -> list[str]:
        """The target's gradient stores (g2is and less runs with target stores; none for the others)."""
        return list((self.meta.get("inputs") or {}).get("target_store_keys") or [])

    @property
    def has_walk(self) -> bool:
        """A g2is run with its step-by-step trajectory (the Walk page replays it)."""
        return (self.path / "trajectory.parquet").exists()

    def stamp(self) -> float:
        return _mtime(self.path / SIDECAR)

    def load(self):
        """The :class:`g2is_core.selection.runs.SelectionRun` (ids, scores, trajectory, components)."""
        from ..selection import SelectionRun

        return SelectionRun.load(self.path)


def selection_runs(ws: Workspace) -> list[RunEntry]:
    """Every finished selection run of the workspace."""
    from ..selection import list_runs

    return [RunEntry(p, m) for p, m in list_runs(ws)]


def selected_ids(run_dir: str | Path) -> list[str]:
    """The ids a selection run chose, in selection order (without reading its tables)."""
    return list(read_json(Path(run_dir) / "selected_ids.json"))


def selection_scores(run_dir: str | Path):
    """DataFrame [id, source, task, score, selected, rank] of a selection run, in pool order."""
    import pandas as pd

    return pd.read_parquet(Path(run_dir) / "scores.parquet")


def dataset_saved(ws: Workspace, data_hash: str | None) -> bool:
    """Are the records of this data hash saved in the workspace (selection.runs.save_dataset)?"""
    from ..selection.datasets import DATASETS

    return bool(data_hash) and ws.is_complete(ws.root / DATASETS / str(data_hash)[:16])


# ----------------------------------------------------------------------------- studies (heads, impact)
@dataclass(frozen=True)
class StudyEntry:
    """A study directory (partial ones too): its study.json metadata, complete or still running, and the
    files whose change means the page must read it again (``watched``: globs under the directory)."""

    path: Path
    meta: dict[str, Any]
    complete: bool
    watched: tuple[str, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    def stamp(self) -> float:
        d = self.path
        return _files_stamp([d / "study.json", d / SIDECAR, *(p for g in self.watched for p in sorted(d.glob(g)))])


def _study_entry(path: str | Path, watched: tuple[str, ...]) -> StudyEntry:
    d = Path(path)
    return StudyEntry(d, read_json(d / "study.json"), (d / SIDECAR).exists(), watched)


# head studies: heads/study.py writes runs/<task>-<seed>/run.json as each run finishes
_HEAD_WATCHED = ("runs/*/run.json",)
# impact studies: impact/study.py writes base/eval.json, then runs/<corpus>/<file>.json
_IMPACT_WATCHED = ("base/eval.json", "runs/*/*.json")


def head_studies(ws: Workspace) -> list[StudyEntry]:
    from ..heads.study import list_studies

    return [head_study(d) for d in list_studies(ws)]


def head_study(path: str | Path) -> StudyEntry:
    return _study_entry(path, _HEAD_WATCHED)


def head_findings(path: str | Path, n_perm: int) -> dict[str, Any]:
    """The study's findings: the stored ones (written by `g2is heads study` once the study is complete)
    when they were computed with ``n_perm`` permutations, else computed now."""
    from ..heads.study import HeadStudy, study_findings

    f = Path(path) / "findings.json"
    if f.exists() and (Path(path) / SIDECAR).exists():
        got = read_json(f)
        if got.get("n_perm") == n_perm and "order" in got:
            return got
    return study_findings(HeadStudy.load(path), n_perm=n_perm)


def head_mixes(ws: Workspace, study_path: str | Path) -> list[dict[str, Any]]:
    """Results of the mix application (``g2is heads mix``) run on this study, each as written by run_mix."""
    from ..heads.study import MIX_KIND

    base = ws.root / MIX_KIND
    found = sorted(base.glob("*/mix.json")) if base.is_dir() else []
    name = Path(study_path).name
    return [read_json(p) for p in found
            if Path(read_sidecar(p.parent)["inputs"].get("study", "")).name == name]


# ----------------------------------------------------------------------------- impact studies
def impact_studies(ws: Workspace) -> list[StudyEntry]:
    from ..impact.study import list_studies

    return [impact_study(d) for d in list_studies(ws)]


def impact_study(path: str | Path) -> StudyEntry:
    return _study_entry(path, _IMPACT_WATCHED)


# ----------------------------------------------------------------------------- benchmarks
def registry(ws: Workspace):
    """The workspace's run registry (:class:`g2is_core.loop.registry.Registry`), or None when no benchmark
    has run yet (reading never creates it)."""
    from ..loop.registry import Registry

    p = ws.root / REGISTRY_FILE
    return Registry(p, read_only=getattr(ws, "read_only", False)) if p.exists() else None


def question_scores(reg, experiment: str | None) -> dict[str, dict[str, Any]]:
    """{config_hash: per-question scores} of an experiment's cells (:mod:`g2is_core.loop.scores`), for the
    bootstrap intervals (:func:`g2is_core.loop.study.paired_ci_table`); empty for rows recorded before."""
    from ..loop.scores import load_scores

    if getattr(reg, "read_only", False):
        # load_scores creates its table when missing, which a read-only (immutable) registry refuses: a
        # registry written before per-question scores were kept simply has none
        with reg._conn() as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='question_scores'").fetchone() is None:
                return {}
    return load_scores(reg, experiment)


def cell_diagnostics(row: dict[str, Any]) -> dict[str, Any] | None:
    """A registry row's selection diagnostics (:mod:`g2is_core.selection.diagnostics`: composition, walk
    fill, hub share), or None for a baseline without a selection or a row recorded before they were kept."""
    return (row.get("info") or {}).get("diagnostics")


def benchmark_rows(registry_path: str | Path, experiment: str | None, read_only: bool = False) -> list[dict[str, Any]]:
    """The rows a results table shows: each experiment's latest spec version only (an edited spec rerun under
    the same name never mixes with its earlier rows; loop/registry.py, "Experiment versions")."""
    from ..loop.registry import Registry

    return Registry(Path(registry_path), read_only=read_only).current_rows(experiment)


def benchmark_version(registry_path: str | Path, experiment: str, read_only: bool = False) -> dict[str, Any]:
    """Which spec version of ``experiment`` a table shows, of how many, and the earlier rows it leaves out."""
    from ..loop.registry import Registry

    return Registry(Path(registry_path), read_only=read_only).version_summary(experiment)


def benchmark_plan(registry_path: str | Path, experiment: str, read_only: bool = False):
    """What is left of the spec ``experiment`` last ran, in process-hours at its measured rates
    (:func:`g2is_core.loop.plan.recorded_plan`; the table `g2is bench plan SPEC` prints): (plan or None, the
    sentence why there is none, or None: no spec version recorded, nothing to say)."""
    from ..data.records import DataError
    from ..loop.plan import recorded_plan
    from ..loop.registry import Registry

    try:
        p = recorded_plan(Registry(Path(registry_path), read_only=read_only), experiment)
    except DataError as exc:
        return None, f"the spec this experiment last ran does not read on this machine: {exc}"
    return p, None


def benchmark_intervals(registry_path: str | Path, experiment: str, read_only: bool = False,
                        metric: str | None = None):
    """The seed-paired differences to random and to LESS with 95% bootstrap intervals, per target and pooled
    (:func:`g2is_core.loop.study.paired_ci_table`) over the rows :func:`benchmark_rows` gives and their
    per-question scores: the table `g2is bench show EXPERIMENT --ci --metric METRIC` prints and
    bench/report_experiment.py writes. Intervals are over questions and seeds (one seed: over questions);
    rows without per-question scores fall back to seeds alone (``basis``)."""
    from ..loop.registry import Registry
    from ..loop.study import paired_ci_table

    reg = Registry(Path(registry_path), read_only=read_only)
    return paired_ci_table(reg.current_rows(experiment), question_scores(reg, experiment), metric)


def composition_shares(rows: list[dict[str, Any]], by: str = "source"):
    """The stored selection composition (:func:`cell_diagnostics`, ``composition[by]``, ``by`` = "source" or
    "task") as shares of each selection, averaged over seeds (a seed without a key counts 0): DataFrame
    [experiment, target, method, ratio, key, share, n_seeds], largest shares first per cell. Cells without
    diagnostics (baselines, rows recorded before they were kept) are left out."""
    import pandas as pd

    from ..loop.stats import latest_done

    cols = ["experiment", "target", "method", "ratio", "key", "share", "n_seeds"]
    cells: dict[tuple, list[dict[str, int]]] = {}
    for (e, t, m, r, _s), row in latest_done(rows).items():
        counts = ((cell_diagnostics(row) or {}).get("composition") or {}).get(by)
        if counts:
            cells.setdefault((e, t, m, r), []).append(counts)
    out = []
    for (e, t, m, r), seeds in cells.items():
        shares: dict[str, float] = {}
        for counts in seeds:
            n = sum(counts.values())
            for k, v in counts.items():
                shares[k] = shares.get(k, 0.0) + (v / n if n else 0.0) / len(seeds)
        out += [{"experiment": e, "target": t, "method": m, "ratio": r, "key": k, "share": v, "n_seeds": len(seeds)}
                for k, v in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))]
    return pd.DataFrame(out, columns=cols)


def head_loop_targets(rows: list[dict[str, Any]]) -> list[str]:
    """Targets whose finished rows carry the closed loop's head patterns (none for rows recorded without
    ``eval.head_pattern``; :mod:`g2is_core.loop.bridge`)."""
    from ..loop.bridge import loop_targets

    return loop_targets(rows)


def head_loop(rows: list[dict[str, Any]], target: str, metric: str | None, n_perm: int | None = None):
    """The closed loop of one target (:class:`g2is_core.loop.bridge.TargetLoop`: the change heatmaps, the points
    of the two scatters and their correlation tests), or None when its rows carry no head pattern."""
    from ..loop.bridge import N_PERM, closed_loop

    return closed_loop(rows, target, metric, n_perm=N_PERM if n_perm is None else n_perm)


def training_losses(train_dir: str | Path) -> list[dict[str, Any]] | None:
    """The loss curve of a fine-tuning run ([{"samples", "loss", ...}] from its state.json), or None."""
    p = Path(train_dir) / "state.json"
    return read_json(p)["losses"] if p.exists() else None


# ----------------------------------------------------------------------------- the workspace at a glance
STORES = "grads"             # features.store.KIND: one gradient store per directory


def train_store_keys(ws: Workspace) -> list[str]:
    """Keys of the workspace's pool (train, Adam-direction) gradient stores, newest first."""
    return [d.name for d, m in ws.list(STORES) if (m.get("config") or {}).get("kind") == "adam"]


@dataclass(frozen=True)
class WorkspaceState:
    """What the workspace holds, for the overview page: one count per artefact the other pages show."""

    root: Path
    model_ready: bool
    model_message: str            # a sentence (what to do when the model is missing)
    stores: int                   # gradient stores (the Data page, `g2is grads`)
    graphs: int                   # instruction graphs (the Instruction graph page)
    selections: int               # selection runs (the Walk page)
    head_studies: int             # (the Heads page)
    impact_studies: int           # (the Data impact page)
    benchmark_rows: int           # finished cells in the run registry (the Benchmarks page)
    jobs: tuple[tuple[str, bool], ...]  # (argv[0], still running) of every job, newest first

    @property
    def has_results(self) -> bool:
        return bool(self.graphs or self.selections or self.head_studies or self.impact_studies or self.benchmark_rows)

    def running(self, command: str) -> bool:
        """Is a job of this command (``demo``, ``model``) running now?"""
        return any(cmd == command and active for cmd, active in self.jobs)

    @property
    def next_step(self) -> str:
        """``fetch`` (no model yet), ``demo`` (a model, no results) or ``data`` (load your own)."""
        if not self.model_ready:
            return "fetch"
        return "data" if self.has_results else "demo"


def workspace_state(ws: Workspace) -> WorkspaceState:
    """Counts of the workspace's artefacts (reading never creates any)."""
    from .. import jobs as jobs_mod
    from .kit import model_status

    status = model_status(ws)
    reg = registry(ws)
    return WorkspaceState(
        root=ws.root, model_ready=status.ready, model_message=status.message, stores=len(ws.list(STORES)),
        graphs=len(graphs(ws)), selections=len(selection_runs(ws)), head_studies=len(head_studies(ws)),
        impact_studies=len(impact_studies(ws)), benchmark_rows=len(reg.rows()) if reg is not None else 0,
        jobs=tuple(((j.argv or [""])[0], j.is_active) for j in jobs_mod.list_jobs(ws)))


# ----------------------------------------------------------------------------- the demo
def demo_status(ws: Workspace) -> dict[str, Any] | None:
    """The workspace's last ``g2is demo`` (started in a terminal or from the Runs page): its stage, fraction,
    message and seconds per stage, with ``running`` (its process alive, not finished); None if none ran."""
    from ..demo.run import read_status, status_running

    st = read_status(ws)
    return None if st is None else {**st, "running": status_running(st)}


def workspace_stamp(ws: Workspace, kinds: tuple[str, ...] | None = None) -> tuple:
    """A cheap fingerprint of what the workspace holds (each kind folder's entries and mtime, the registry's
    size and mtime; only ``kinds`` when given): it changes when an artefact appears, so a page waiting for
    one knows to redraw, and a cache keyed by it (the graph map's layouts) is read again."""
    out = []
    try:
        entries = sorted(os.scandir(ws.root), key=lambda e: e.name)
    except OSError:
        return ()
    for e in entries:
        if kinds is not None and e.name not in kinds:
            continue
        with contextlib.suppress(OSError):
            st = e.stat()
            n = len(os.listdir(e.path)) if e.is_dir() else st.st_size
            out.append((e.name, n, st.st_mtime_ns))
    return tuple(out)
