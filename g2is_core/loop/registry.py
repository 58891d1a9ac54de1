"""The run registry: one SQLite database in the workspace holding every benchmark result row.

Concurrency: WAL journal (readers never block the writer), a busy timeout, and short write
transactions (``BEGIN IMMEDIATE``). A row is keyed by the hash of its full config, so two jobs
asked to do the same row cannot both record it: the first to *claim* it (status ``running``,
with its owner) does the work; a claim whose owner process is gone is taken over.
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
"""


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


@dataclass
class Registry:
    path: Path

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
        c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA busy_timeout=30000")
            c.row_factory = sqlite3.Row
            yield c
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
            out.append(d)
        return out

    def experiments(self) -> list[str]:
        with self._conn() as c:
            return [r[0] for r in c.execute("SELECT DISTINCT experiment FROM runs ORDER BY experiment")]
