"""What is left of an experiment spec, and what it will cost at the rates its finished cells measured.

A spec at the study's scale (docs/study.md) runs over several sessions: before each, the question is which cells
are missing and how many process-hours they take on this machine. :func:`plan` answers it from the run registry,
with no model, no pool and no data read:

- **missing** cells are those of :func:`.runner.all_cells` whose registry key (the hash of :func:`.runner.cell_config`)
  has no finished row; a row running under a live process is counted apart (``running``), a stale one is missing.
  The key needs the pool's content hash: it is read from the rows of a recorded version of the experiment whose
  ``pool`` section is the spec's (a spec whose pool never ran has every cell missing).
- **cost** of a missing cell = selection + training + evaluation + the rest (head patterns), each a median of
  measured cells (:class:`Rates`): evaluation and the rest per target, over its latest measured cells (they follow
  the evaluation code as it is now); training per record, over every real training (the pool's size times the
  ratio); selection per method (a variant: its base method's; a method never run is not priced). Training a random
  or full-data cell is free once its ratio and seed trained (one draw, or the whole pool, for every target), as
  :func:`.runner._run_cell` reuses it. Two methods that pick the same records train and evaluate once: a plan
  cannot know that before selecting, so ``total`` is an upper bound there.
- **likely** cost = selection + (1 - reuse share) x the rest, where the reuse share is the fraction of the method's
  finished cells at that ratio (at any ratio when none ran at it; 0 when none ran at all) that read another cell's
  training and evaluation (``eval_reused``): ``g2is-noconflict`` picks what ``g2is`` picks on most cells, and
  its price is mostly its selection. A share measured on few cells is a rough guide; the upper bound stays beside it.

The figures are this machine's rates at the load the cells ran under: say the CPU and load beside them.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from ..workspace import hash_config
from .registry import Registry, row_is_live
from .runner import all_cells, cell_config
from .spec import BASE, ExperimentSpec, spec_from_dict

#: How many of a target's latest measured cells its evaluation rate is the median of.
LATEST = 6
#: A training shorter than this (seconds) read a finished training directory: not a rate.
MIN_TRAIN_S = 1.0
#: Timings that are not the "rest" of a cell (the rest: head patterns, selection similarity, ...); and those of a
#: later ``bench remeasure`` (``remeasure_*``), which are no part of running the cell.
_PARTS = ("select_s", "train_s", "eval_s", "eval_reused")
_LATER = "remeasure"
#: The baselines whose training is one per seed and data, whatever the target: random (one draw per ratio) and full.
_SHARED_TRAINING = ("random", "full")
#: The process-hour columns of :func:`plan_table` (the report and the Benchmarks page format these).
HOUR_COLUMNS = ("train_h", "eval_h", "other_h", "total_h", "likely_h")


@dataclass
class CellCost:
    """One missing cell and its estimated seconds per part (None: no finished cell measured that part)."""
    target: str
    method: str
    ratio: float | None
    seed: int
    select_s: float | None
    train_s: float | None
    eval_s: float | None
    rest_s: float | None
    reuse: float = 0.0   # the method's measured share of cells that read another's weights (module docstring)

    @property
    def total_s(self) -> float | None:
        parts = (self.select_s, self.train_s, self.eval_s, self.rest_s)
        return None if any(p is None for p in parts) else sum(parts)

    @property
    def likely_s(self) -> float | None:
        total = self.total_s
        return None if total is None else self.select_s + (1.0 - self.reuse) * (total - self.select_s)


@dataclass
class Plan:
    """What :func:`plan` found: the spec's cell count, the finished and running ones, the missing cells' costs."""
    experiment: str
    n_cells: int
    n_done: int
    running: list[tuple[str, str, float | None, int]]
    missing: list[CellCost]
    notes: list[str] = field(default_factory=list)

    def hours(self, part: str = "total_s") -> float:
        """Process-hours of the missing cells that could be estimated (``part``: a :class:`CellCost` field)."""
        return _hours(self.missing, part)

    @property
    def unmeasured(self) -> list[CellCost]:
        return [c for c in self.missing if c.total_s is None]

    def cost_phrase(self) -> str:
        """The missing cells' price in a phrase: "about X process-hours at the measured rates (likely Y)[, N not
        priced]"."""
        n = len(self.unmeasured)
        if n == len(self.missing):
            return "not priced yet (no finished cell measured them)"
        return (f"about {self.hours():.1f} process-hours at the measured rates (likely {self.hours('likely_s'):.1f})"
                + (f", {n} not priced" if n else ""))

    def all_notes(self) -> list[str]:
        """What the figures rest on (:attr:`notes`), and the sentence on unpriced cells where there are some."""
        return self.notes + ([self.unmeasured_note()] if self.unmeasured else [])

    def unmeasured_note(self) -> str | None:
        """The sentence on the cells left out of the hours (None: every missing cell is priced)."""
        cs = self.unmeasured
        if not cs:
            return None
        methods = sorted({c.method for c in cs})
        return (f"{len(cs)} cell(s) have a part no finished cell measured (a target, a method or a training that has "
                f"not run: {', '.join(methods)}), left out of the hours; run one such cell to price them")


class Rates:
    """Per-part rates from an experiment's finished rows (see the module docstring for the rules)."""

    def __init__(self, rows: Iterable[dict[str, Any]], spec: ExperimentSpec):
        self.spec = spec
        done = sorted((r for r in rows if r.get("status") == "done" and r.get("timings")),
                      key=lambda r: r.get("finished") or 0)
        self._by_target: dict[str, list[dict[str, Any]]] = {}
        for r in done:
            self._by_target.setdefault(r["target"], []).append(r)
        self._select: dict[str, list[float]] = {}
        self._reused: dict[str, dict[float | None, list[bool]]] = {}   # method -> ratio -> read another's weights
        for r in done:
            if r["method"] not in (BASE, "full") and "select_s" in r["timings"]:
                self._select.setdefault(r["method"], []).append(float(r["timings"]["select_s"]))
                self._reused.setdefault(r["method"], {}).setdefault(r.get("ratio"), []).append(
                    bool(r["timings"].get("eval_reused")))
        per_record, pool_sizes, trained_dirs = [], [], set()
        for r in done:
            n = (r.get("metrics") or {}).get("n_train")
            t = r["timings"].get("train_s")
            # one rate per training: the first row of a training dir trained it; the later ones read it
            tdir = r.get("train_dir") or (r.get("info") or {}).get("train_dir_key")   # the key of an archived row
            first = tdir not in trained_dirs
            trained_dirs.add(tdir)
            if n and t is not None and t >= MIN_TRAIN_S and first:
                per_record.append(float(t) / n)
            if n and r["method"] == "full":
                pool_sizes.append(int(n))
        self.train_per_record = statistics.median(per_record) if per_record else None
        self.pool_size = pool_sizes[-1] if pool_sizes else self._pool_size_from_ratios(done)   # the latest full
        self.machines = _machines(done)

    @staticmethod
    def _pool_size_from_ratios(done: list[dict[str, Any]]) -> int | None:
        """The pool's size from selections (n_train = round(ratio * size)) when the full-data cell never ran."""
        sizes = [(r["metrics"]["n_train"] / r["ratio"]) for r in done
                 if r.get("ratio") and (r.get("metrics") or {}).get("n_train")]
        return round(statistics.median(sizes)) if sizes else None

    def _latest(self, target: str, pick) -> float | None:
        vals = [v for v in (pick(r) for r in self._by_target.get(target, [])) if v is not None]
        return statistics.median(vals[-LATEST:]) if vals else None

    def eval_s(self, target: str) -> float | None:
        return self._latest(target, lambda r: None if r["timings"].get("eval_reused") else r["timings"].get("eval_s"))

    def rest_s(self, target: str) -> float | None:
        # a cell that read another's evaluation ran no head pattern either: no rate for the rest
        return self._latest(target, lambda r: None if r["timings"].get("eval_reused") else sum(
            float(v) for k, v in r["timings"].items() if k not in _PARTS and not k.startswith(_LATER)))

    def select_s(self, method: str) -> float | None:
        if method in (BASE, "full"):
            return 0.0
        # a method never run is not priced from the others: its first selection may compute what they never do
        # (repr: the pool's representations, the better part of an hour on one thread)
        for vals in (self._select.get(method), self._select.get(self.spec.base_method(method))):
            if vals:
                return statistics.median(vals)
        return None

    def reuse(self, method: str, ratio: float | None) -> float:
        """The share of the method's finished cells at ``ratio`` (at any ratio when none ran at it; 0 when none
        ran) that read another cell's training and evaluation."""
        by_ratio = self._reused.get(method, {})
        vals = by_ratio.get(ratio) or [v for vs in by_ratio.values() for v in vs]
        return sum(vals) / len(vals) if vals else 0.0

    def reuse_note(self) -> str | None:
        """The methods whose finished cells read others' weights, with their shares (None: none did)."""
        shares = []
        for m, by_ratio in sorted(self._reused.items()):
            parts = [f"{sum(v)} of {len(v)} at {'-' if r is None else f'{r:g}'}" for r, v in sorted(
                by_ratio.items(), key=lambda kv: kv[0] or 0) if any(v)]
            if parts:
                shares.append(f"{m} {', '.join(parts)}")
        return None if not shares else ("likely_h: the hours less the share of each method's finished cells that "
                                        "read another's weights (" + "; ".join(shares) + ")")

    def train_s(self, method: str, ratio: float | None) -> float | None:
        if method == BASE:
            return 0.0
        if self.train_per_record is None or self.pool_size is None:
            return None
        n = self.pool_size if ratio is None else max(1, round(ratio * self.pool_size))
        return self.train_per_record * n


def _machines(done: Sequence[dict[str, Any]]) -> str:
    """Where the rates were measured: each CPU/device with its cells and load range (``info.machine`` of a row)."""
    seen: dict[str, tuple[int, list[float]]] = {}
    unknown = 0
    for r in done:
        m = (r.get("info") or {}).get("machine")
        if not m:
            unknown += 1
            continue
        at = m["start"]
        name = f"{at['cpu'] if at.get('device', 'cpu') == 'cpu' else at['device']}, {at.get('cores')} cores, " \
               f"{at.get('threads')} thread(s)"
        n, loads = seen.get(name, (0, []))
        seen[name] = (n + 1, loads + [x["load"] for x in (m.get("start"), m.get("end"))
                                      if x and x.get("load") is not None])
    parts = [f"{n} cell(s) on {k}" + (f" at load {min(v):.1f}-{max(v):.1f}" if v else "") for k, (n, v) in seen.items()]
    if unknown:
        parts.append(f"{unknown} cell(s) run before cells recorded their machine")
    return "; ".join(parts) if parts else "no finished cell"


def spec_pool_hash(reg: Registry, spec: ExperimentSpec) -> str | None:
    """The pool content hash of the experiment's recorded versions whose pool section is the spec's (None: none)."""
    pool = spec.to_dict()["pool"]
    by_key = {r["config_hash"]: r for r in reg.rows(spec.name)}
    for v in reversed(reg.versions(spec.name)):   # the newest version first: the pool's content as it last ran
        if v["spec"].get("pool") != pool:
            continue
        for k in v["cells"]:
            h = (by_key.get(k, {}).get("config") or {}).get("pool_hash")
            if h:
                return h
    return None


def plan(spec: ExperimentSpec, reg: Registry, cells: Sequence[tuple] | None = None) -> Plan:
    """The missing cells of ``spec`` (of ``cells``, default all: e.g. :func:`.runner.chosen_cells`) and their
    estimated cost from the experiment's finished rows (module docstring)."""
    cells = list(all_cells(spec) if cells is None else cells)
    rows = reg.rows(spec.name)
    pool_hash = spec_pool_hash(reg, spec)
    by_key = {r["config_hash"]: r for r in rows}
    rates = Rates(rows, spec)
    notes = []
    if pool_hash is None:
        notes.append("no cell of this pool has run under this experiment's name: every cell is missing")
    n_done, running, missing = 0, [], []
    # a random draw (the same records for every target) and the full pool train once per (method, ratio, seed) of
    # this model, pool and training settings: what the runner's training dir is keyed by
    trained = {(r["method"], r["ratio"], r["seed"]) for r in rows
               if r["method"] in _SHARED_TRAINING and r["status"] == "done" and r.get("train_dir")
               and (r.get("config") or {}).get("pool_hash") == pool_hash and r["config"].get("model") == spec.model
               and r["config"].get("train") == spec.train.as_written()}
    for t, m, r, s in cells:
        row = by_key.get(hash_config(cell_config(spec, t, m, r, s, pool_hash))) if pool_hash else None
        if row is not None and row["status"] == "done":
            n_done += 1
            continue
        if row is not None and row["status"] == "running" and row_is_live(row):
            running.append((t.name, m, r, s))
            continue
        train = rates.train_s(m, r)
        if m in _SHARED_TRAINING:
            if (m, r, s) in trained:
                train = 0.0
            trained.add((m, r, s))
        missing.append(CellCost(t.name, m, r, s, rates.select_s(m), train, rates.eval_s(t.name), rates.rest_s(t.name),
                                rates.reuse(m, r)))
    if rates.train_per_record is not None:
        notes.append(f"training: {rates.train_per_record:.2f} s per record (median of the finished trainings) x "
                     f"the records of the cell's ratio (pool of {rates.pool_size})")
    notes.append(f"rates from {rates.machines}")
    reuse = rates.reuse_note()
    if reuse:
        notes.append(reuse)
    return Plan(spec.name, len(cells), n_done, running, missing, notes)


def recorded_plan(reg: Registry, experiment: str) -> Plan | None:
    """:func:`plan` of the spec an experiment last ran (its latest recorded version: what the Benchmarks page
    shows, with no spec file at hand); None when none is recorded. A recorded spec that no longer reads here (a
    target file by path that this machine lacks) raises the spec reader's error, which names the field."""
    vs = reg.versions(experiment)
    if not vs:
        return None
    return plan(spec_from_dict(vs[-1]["spec"], f"{reg.path} (the spec experiment {experiment!r} last ran)"), reg)


def plan_table(p: Plan, processes: int = 1) -> pd.DataFrame:
    """The missing cells grouped by (ratio, method): cells, targets, process-hours per part and in all; a last
    line ``all`` with the totals and the wall-clock hours at ``processes`` processes (a lower bound: cells are
    claimed whole). ``total_h`` is the upper bound, ``likely_h`` less the measured reuse (module docstring). Cells
    with an unmeasured part are counted in ``unmeasured`` and left out of the hours."""
    cols = ["ratio", "method", "cells", "targets", "unmeasured", *HOUR_COLUMNS]
    recs = []
    groups: dict[tuple, list[CellCost]] = {}
    for c in p.missing:
        groups.setdefault((c.ratio, c.method), []).append(c)
    for (r, m), cs in sorted(groups.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or 0, kv[0][1])):
        recs.append(_line("-" if r is None else f"{r:g}", m, cs))
    n = max(processes, 1)
    total = _line("all", f"wall at {processes} process{'es' if processes > 1 else ''}: "
                         f"{p.hours() / n:.1f} h (likely {p.hours('likely_s') / n:.1f} h)", p.missing)
    return pd.DataFrame(recs + [total], columns=cols)


def _hours(cs: Sequence[CellCost], part: str = "total_s") -> float:
    return sum(getattr(c, part) for c in cs if c.total_s is not None) / 3600


def _line(ratio: str, method: str, cs: Sequence[CellCost]) -> dict[str, Any]:
    return {"ratio": ratio, "method": method, "cells": len(cs), "targets": len({c.target for c in cs}),
            "unmeasured": sum(c.total_s is None for c in cs), "train_h": _hours(cs, "train_s"),
            "eval_h": _hours(cs, "eval_s"), "other_h": _hours(cs, "select_s") + _hours(cs, "rest_s"),
            "total_h": _hours(cs), "likely_h": _hours(cs, "likely_s")}
