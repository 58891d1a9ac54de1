"""The run registry: one SQLite database in the workspace holding every benchmark result row.

Concurrency: WAL journal (readers never block the writer), a busy timeout, and short write
transactions (``BEGIN IMMEDIATE``). A row is keyed by the hash of its full config, so two jobs
asked to do the same row cannot both record it: the first to *claim* it (status ``running``,
with its owner) does the work; a claim whose owner process is gone is taken over.

Experiment versions. A spec edited and run again under the same name (another lr, fewer seeds, a method
dropped) writes rows with other keys beside the earlier ones. Each ``bench run`` records its spec as a
*version* of the experiment (table ``versions``: the spec's hash, its text and the keys of ALL its cells);
:meth:`Registry.current_rows` returns only the rows of each experiment's latest version, so a table never
averages two configurations as seeds and never compares a method dropped from the spec with the new ones.
Rows of earlier versions stay in the file (``rows``), counted on the page and in ``g2is bench show``.
An experiment with no recorded version (a registry older than this table) shows all its rows, and the
table itself keeps the latest config per (target, method, ratio) (:func:`.tables.rows_frame`).

Errors: a file that is not an SQLite database, a full disk or a lock held too long are said in one sentence
naming the file (:class:`RegistryError`, a ValueError: exit 2 in the CLI, a red box in the app).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..workspace import Workspace, canonical_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    config_hash TEXT PRIMARY KEY,
    experiment  TEXT NOT NULL,
    target      TEXT NOT NULL,
    method      TEXT NOT NULL,
    ratio       REAL,
    seed        INTEGER,
    status      TEXT NOT NULL,          -- running | done | failed
    owner       TEXT,                   -- host:pid of the claimant
    config      TEXT NOT NULL,          -- JSON
    metrics     TEXT,                   -- JSON
    timings     TEXT,                   -- JSON
    selection   TEXT,                   -- selection artefact directory (or NULL for base/full)
    train_dir   TEXT,
    error       TEXT,
    created     REAL NOT NULL,
    finished    REAL,
    info        TEXT                    -- JSON: what ran, e.g. {"precision": {"train": {"precision": "fp32", ...}}}
);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs(experiment);
CREATE TABLE IF NOT EXISTS versions (
    experiment  TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,          -- hash of the spec as written (ExperimentSpec.to_dict)
    spec        TEXT NOT NULL,          -- JSON: the spec
    cells       TEXT NOT NULL,          -- JSON: config_hash of every cell of the spec
    created     REAL NOT NULL,          -- last time this version was run (a rerun of an old spec makes it current)
    PRIMARY KEY (experiment, spec_hash)
);
"""


class RegistryError(ValueError):
    """The run registry cannot be used as it is; the message names the file and what to do."""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell; assume a remote claimant is alive
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def row_is_live(row: dict[str, Any]) -> bool:
    """Whether a "running" row's claimant is still alive (a row of a killed process is not: the next run redoes it)."""
    return row.get("status") == "running" and _alive(row.get("owner"))


@dataclass
class Registry:
    path: Path
    # read_only: opened immutable (no WAL, no lock files): a registry shipped read-only (the demo pack)
    read_only: bool = False

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> "Registry":
        ws = workspace or Workspace()
        reg = cls(ws.root / "registry.sqlite")
        with reg._conn() as c:
            c.executescript(SCHEMA)
            # A registry made before the info column: add it (older rows keep NULL there; nothing is rewritten).
            if "info" not in {r["name"] for r in c.execute("PRAGMA table_info(runs)")}:
                c.execute("ALTER TABLE runs ADD COLUMN info TEXT")
        return reg

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.read_only:
                c = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                    isolation_level=None)
            else:
                c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryError(_sentence(self.path, exc)) from exc
        try:
            if not self.read_only:
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA busy_timeout=30000")
            c.row_factory = sqlite3.Row
            yield c
        except sqlite3.Error as exc:  # a corrupt file, a full disk, a lock: the user's to fix, said with the path
            if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError)):
                raise  # our SQL is wrong: a bug, not the file's fault
            raise RegistryError(_sentence(self.path, exc)) from exc
        finally:
            c.close()

    def claim(self, config_hash: str, experiment: str, target: str, method: str, ratio: float | None,
              seed: int | None, config: dict[str, Any]) -> bool:
        """Claim a row for this process. False when it is done, or running under a live owner."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT status, owner FROM runs WHERE config_hash=?", (config_hash,)).fetchone()
                if row is not None and (row["status"] == "done" or (row["status"] == "running" and _alive(row["owner"])
                                                                     and row["owner"] != _owner())):
                    c.execute("COMMIT")
                    return False
                c.execute("INSERT OR REPLACE INTO runs (config_hash, experiment, target, method, ratio, seed, status,"
                          " owner, config, created) VALUES (?,?,?,?,?,?, 'running', ?, ?, ?)",
                          (config_hash, experiment, target, method, ratio, seed, _owner(), canonical_json(config),
                           time.time()))
                c.execute("COMMIT")
                return True
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def finish(self, config_hash: str, *, metrics: dict[str, Any], timings: dict[str, Any],
               selection: str | None = None, train_dir: str | None = None, info: dict[str, Any] | None = None) -> None:
        """Record a claimed row as done. ``info``: how it ran (the precision actually used), kept beside the
        config, not in it, so the row's key stays the hash of its settings."""
        with self._conn() as c:
            c.execute("UPDATE runs SET status='done', metrics=?, timings=?, selection=?, train_dir=?, finished=?,"
                      " error=NULL, info=? WHERE config_hash=? AND owner=?",
                      (canonical_json(metrics), canonical_json(timings), selection, train_dir, time.time(),
                       canonical_json(info) if info is not None else None, config_hash, _owner()))

    def update_measurement(self, config_hash: str, *, metrics: dict[str, Any], timings: dict[str, Any],
                           info: dict[str, Any]) -> None:
        """Replace a done row's measurement (``bench remeasure``): its metrics, timings and info; the rest stays."""
        with self._conn() as c:
            cur = c.execute("UPDATE runs SET metrics=?, timings=?, info=? WHERE config_hash=? AND status='done'",
                            (canonical_json(metrics), canonical_json(timings), canonical_json(info), config_hash))
            if cur.rowcount != 1:
                raise ValueError(f"registry row {config_hash}: not a finished row, so it has no measurement to replace")

    def fail(self, config_hash: str, error: str) -> None:
        with self._conn() as c:
            c.execute("UPDATE runs SET status='failed', error=?, finished=? WHERE config_hash=? AND owner=?",
                      (error[:2000], time.time(), config_hash, _owner()))

    def status(self, config_hash: str) -> str | None:
        with self._conn() as c:
            row = c.execute("SELECT status FROM runs WHERE config_hash=?", (config_hash,)).fetchone()
        return row["status"] if row else None

    def rows(self, experiment: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM runs" + (" WHERE experiment=?" if experiment else "") + " ORDER BY created"
        with self._conn() as c:
            rows = c.execute(q, (experiment,) if experiment else ()).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("config", "metrics", "timings", "info"):
                d[k] = json.loads(d[k]) if d[k] else None
            for k in ("selection", "train_dir"):  # a relative path (a shipped pack) is relative to the registry
                if d.get(k) and not Path(d[k]).is_absolute():
                    d[k] = str(Path(self.path).resolve().parent / d[k])
            out.append(d)
        return out

    # ------------------------------------------------------------------ experiment versions
    def record_version(self, experiment: str, spec_hash: str, spec: dict[str, Any], cells: list[str]) -> None:
        """Record that ``spec`` (with these cell keys) was run under ``experiment``: it becomes the current version."""
        with self._conn() as c:
            self._ensure_versions(c)
            c.execute("INSERT OR REPLACE INTO versions (experiment, spec_hash, spec, cells, created) VALUES (?,?,?,?,?)",
                      (experiment, spec_hash, canonical_json(spec), canonical_json(sorted(set(cells))), time.time()))

    def versions(self, experiment: str) -> list[dict[str, Any]]:
        """The recorded versions of an experiment, oldest first: spec_hash, spec, cells, created, number (1-based)."""
        with self._conn() as c:
            if not self._has_versions(c):
                return []
            rows = c.execute("SELECT * FROM versions WHERE experiment=? ORDER BY created", (experiment,)).fetchall()
        return [{"experiment": r["experiment"], "spec_hash": r["spec_hash"], "spec": json.loads(r["spec"]),
                 "cells": json.loads(r["cells"]), "created": r["created"], "number": i + 1}
                for i, r in enumerate(rows)]

    def current_rows(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """The rows of each experiment's latest version (all rows of an experiment without a recorded one)."""
        rows = self.rows(experiment)
        keep: dict[str, set[str] | None] = {}
        for e in {r["experiment"] for r in rows}:
            vs = self.versions(e)
            keep[e] = set(vs[-1]["cells"]) if vs else None
        return [r for r in rows if keep[r["experiment"]] is None or r["config_hash"] in keep[r["experiment"]]]

    def version_summary(self, experiment: str) -> dict[str, Any]:
        """What a table of ``experiment`` shows: its version number of how many, when it ran, and the finished
        rows of earlier versions that it leaves out (``hidden``)."""
        vs = self.versions(experiment)
        done = [r for r in self.rows(experiment) if r["status"] == "done"]
        if not vs:
            return {"version": None, "n_versions": 0, "created": None, "hidden": 0, "spec_hash": None}
        cur = set(vs[-1]["cells"])
        return {"version": vs[-1]["number"], "n_versions": len(vs), "created": vs[-1]["created"],
                "hidden": sum(r["config_hash"] not in cur for r in done), "spec_hash": vs[-1]["spec_hash"]}

    @staticmethod
    def _has_versions(c: sqlite3.Connection) -> bool:
        return c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='versions'").fetchone() is not None

    def _ensure_versions(self, c: sqlite3.Connection) -> None:
        if not self._has_versions(c):  # a registry opened without open() (the app reads it as it is)
            c.executescript(SCHEMA)

    def experiments(self) -> list[str]:
        with self._conn() as c:
            return [r[0] for r in c.execute("SELECT DISTINCT experiment FROM runs ORDER BY experiment")]


def _sentence(path: Path, exc: sqlite3.Error) -> str:
    """One sentence for an SQLite failure: what is wrong with the file and what to do."""
    msg = " ".join(str(exc).split())
    low = msg.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (f"{path}: the run registry is damaged ({msg}); move it aside (its results are then lost) or restore "
                "it from a backup, then run again")
    if "disk is full" in low or "disk i/o" in low:
        return f"{path}: the run registry could not be written ({msg}); free some disk space and run again"
    if "locked" in low or "busy" in low:
        return (f"{path}: the run registry stayed locked by another process for 30 s ({msg}); wait for it to finish "
                "or stop it, then run again")
    if "readonly" in low or "unable to open" in low or "read-only" in low:
        return f"{path}: the run registry cannot be opened for writing ({msg}); check the workspace's permissions"
    return f"{path}: the run registry could not be used ({msg}); check the file, or move it aside and run again"
