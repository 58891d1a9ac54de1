"""An experiment's finished cells as files to commit, and back: what outlives a lost workspace.

The run registry (``registry.sqlite``) lives in the workspace, beside gigabytes of features and weights that a new
machine does not have. A study that runs over several sessions on machines that come and go must keep its results
somewhere else: :func:`export_cells` writes each finished cell of an experiment as one small file, made to be
committed with the code (the study's are in ``bench/results/study/``), and :func:`import_cells` puts them into a
registry again, so ``g2is bench run`` skips those cells and the report regenerates every table from them.

The folder::

    versions.json                 the experiment's recorded spec versions (spec text and cell keys), oldest first
                                  (the cells are the latest version's: those its tables show)
    cells/<config_hash>.json.gz   one finished cell: its registry row, per-question scores and selected ids

A cell file holds ``{"format", "row", "scores", "selected_ids", "selected_sources", "digest"}``:
the row's config, metrics, timings and info as the registry has them, its timestamps and status. Workspace paths
(``selection``, ``train_dir``) are left out: they name folders of the machine that ran the cell; their folder names
(content keys) travel in ``info["train_dir_key"]`` / ``info["selection_key"]``, and the selected ids and their
sources in ``info["selected_ids"]`` / ``info["selected_sources"]`` of the imported row, so overlaps between methods
and the picks per source survive. An imported cell has no weights
on the new machine: ``g2is bench remeasure`` says so and leaves it.

Files are written byte-stable (canonical JSON, gzip without a timestamp): exporting an unchanged cell again writes
the same bytes, so a commit shows only new or re-measured cells. Every file is checked on import: its format,
its content against its digest, its name against its row's key and its key against the hash of its config (an
edited cell stops with a sentence naming the file). A cell the registry has already finished keeps the registry's row, unless the file's
was measured later (``bench remeasure`` on another machine).
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..workspace import canonical_json, hash_config
from .registry import Registry
from .scores import TABLE as SCORES_TABLE, load_scores
from .tables import selected_records, selection_ids

FORMAT = "g2is-cell/1"
CELLS = "cells"
VERSIONS = "versions.json"
# the row's columns a cell file keeps (selection and train_dir are workspace paths: see the module docstring)
ROW_KEYS = ("config_hash", "experiment", "target", "method", "ratio", "seed", "status", "config", "metrics",
            "timings", "info", "created", "finished")


@dataclass
class ArchiveReport:
    """What an export or import did: cell keys written/imported, unchanged, kept (import: the registry's row won)."""
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    versions: int = 0

    def sentence(self, verb: str, where: Path) -> str:
        parts = [f"{len(self.written)} cell(s) {verb}", f"{len(self.unchanged)} unchanged"]
        if self.kept:
            parts.append(f"{len(self.kept)} kept as the registry has them (measured there later)")
        return f"{where}: " + ", ".join(parts) + f"; {self.versions} spec version(s)"


def _gz_bytes(obj: Any) -> bytes:
    # mtime=0 and no file name: the same content always gives the same bytes
    return gzip.compress(canonical_json(obj).encode("utf-8"), compresslevel=9, mtime=0)


def cell_record(row: dict[str, Any], scores: dict[str, Any] | None) -> dict[str, Any]:
    """The file content of one finished registry row."""
    picked = selected_records(row)   # ids with their sources; the ids alone when the sources are not at hand
    ids = picked["id"].tolist() if picked is not None else selection_ids(row)
    info = dict(row.get("info") or {})
    # the trained weights' folder name is their content key (the same on every machine): the plan prices shared
    # trainings by it; the folder itself stays behind
    for k in ("train_dir", "selection"):
        if row.get(k):
            info[f"{k}_key"] = Path(row[k]).name
    for k in ("archived", "selected_ids", "selected_sources"):   # carried beside the row, not in it
        info.pop(k, None)
    rec = {"format": FORMAT, "row": {**{k: row.get(k) for k in ROW_KEYS}, "info": info}, "scores": scores,
           "selected_ids": ids or None,
           "selected_sources": picked["source"].tolist() if picked is not None else None}
    return {**rec, "digest": _digest(rec)}


def _digest(rec: dict[str, Any]) -> str:
    """The hash of a cell record's content (without its digest): an edited number no longer matches it."""
    return hash_config({k: v for k, v in rec.items() if k != "digest"}, length=64)


def export_cells(registry: Registry, experiment: str, dest: str | Path) -> ArchiveReport:
    """Write every finished cell of ``experiment``'s current version (the cells its tables show; rows of an earlier
    edit of the spec stay in the registry only) into ``dest``; see the module docstring."""
    dest = Path(dest)
    rows = [r for r in registry.current_rows(experiment) if r["status"] == "done"]
    if not rows:
        known = registry.experiments()
        raise ValueError(f"{registry.path}: no finished cell of experiment {experiment!r} to archive"
                         + (f"; it has: {', '.join(known)}" if known else "; run `g2is bench run SPEC` first"))
    scores = load_scores(registry, experiment)
    out = ArchiveReport()
    (dest / CELLS).mkdir(parents=True, exist_ok=True)
    for r in rows:
        data = _gz_bytes(cell_record(r, scores.get(r["config_hash"])))
        path = dest / CELLS / f"{r['config_hash']}.json.gz"
        if path.exists() and path.read_bytes() == data:
            out.unchanged.append(r["config_hash"])
            continue
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        out.written.append(r["config_hash"])
    versions = registry.versions(experiment)
    (dest / VERSIONS).write_text(json.dumps([{k: v[k] for k in ("experiment", "spec_hash", "spec", "cells", "created")}
                                             for v in versions], indent=1, sort_keys=True) + "\n", encoding="utf-8")
    out.versions = len(versions)
    return out


def read_cell(path: Path) -> dict[str, Any]:
    """One cell file, checked (format, file name = row key = hash of its config); a sentence naming it if not."""
    try:
        rec = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a g2is cell file (gzip'd JSON): {exc}; export it again with "
                         "`g2is bench archive`") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        found = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise ValueError(f"{path}: format {found!r}, expected {FORMAT!r}; export it again with `g2is bench archive`")
    row = rec.get("row") or {}
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"{path}: the row lacks {missing}; export it again with `g2is bench archive`")
    key = row["config_hash"]
    if path.name != f"{key}.json.gz":
        raise ValueError(f"{path}: holds cell {key}, so it should be named {key}.json.gz; rename it or export again")
    if rec.get("digest") != _digest(rec):
        raise ValueError(f"{path}: its content does not match its digest: the file was edited after export; take it "
                         "from version control again or export it again")
    if row["status"] != "done" or hash_config(row["config"]) != key:
        raise ValueError(f"{path}: the cell's config does not hash to its key {key} (or it is not a finished cell): "
                         "the file was edited; take it from version control again or export it again")
    return rec


def import_cells(registry: Registry, src: str | Path) -> ArchiveReport:
    """Put the cells of an archive folder into ``registry`` (see the module docstring); every file is read and
    checked before any is written, so a bad file leaves the registry as it was."""
    src = Path(src)
    files = sorted((src / CELLS).glob("*.json.gz"))
    if not files:
        raise ValueError(f"{src}: no cell files under {src / CELLS}; give the folder `g2is bench archive` wrote")
    recs = [read_cell(f) for f in files]
    versions = json.loads((src / VERSIONS).read_text(encoding="utf-8")) if (src / VERSIONS).exists() else []
    have = {r["config_hash"]: r for r in registry.rows()}
    out = ArchiveReport()
    with registry._conn() as c:
        c.executescript(SCORES_TABLE)
        c.execute("BEGIN IMMEDIATE")
        try:
            for rec in recs:
                row = rec["row"]
                key = row["config_hash"]
                old = have.get(key)
                if old is not None and old["status"] == "done":
                    if (old.get("finished") or 0) >= (row.get("finished") or 0) or _same(old, row):
                        (out.unchanged if _same(old, row) else out.kept).append(key)
                        continue
                info = dict(row.get("info") or {})
                for k in ("selected_ids", "selected_sources"):
                    if rec.get(k):
                        info[k] = rec[k]
                info["archived"] = {"from": str(src), "imported": time.time()}
                c.execute("INSERT OR REPLACE INTO runs (config_hash, experiment, target, method, ratio, seed, status,"
                          " owner, config, metrics, timings, selection, train_dir, error, created, finished, info)"
                          " VALUES (?,?,?,?,?,?,'done',NULL,?,?,?,NULL,NULL,NULL,?,?,?)",
                          (key, row["experiment"], row["target"], row["method"], row["ratio"], row["seed"],
                           canonical_json(row["config"]), canonical_json(row["metrics"]),
                           canonical_json(row["timings"]), row["created"], row["finished"], canonical_json(info)))
                if rec.get("scores"):  # in the same transaction: a row marked done always has its scores
                    c.execute("INSERT OR REPLACE INTO question_scores (config_hash, experiment, scores) VALUES (?,?,?)",
                              (key, row["experiment"], json.dumps(rec["scores"], separators=(",", ":"))))
                out.written.append(key)
            for v in versions:
                c.execute("INSERT OR IGNORE INTO versions (experiment, spec_hash, spec, cells, created) "
                          "VALUES (?,?,?,?,?)", (v["experiment"], v["spec_hash"], canonical_json(v["spec"]),
                                                 canonical_json(sorted(set(v["cells"]))), v["created"]))
            out.versions = len(versions)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
    return out


def _same(old: dict[str, Any], row: dict[str, Any]) -> bool:
    return old.get("metrics") == row.get("metrics") and old.get("finished") == row.get("finished")
