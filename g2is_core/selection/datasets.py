"""The pool records a selection or a graph was made from, saved once per data hash (workspace kind
``datasets``), so that pages can show the text of any node or selected row later.

Its own module so that the G2IS pipeline (:mod:`.methods.g2is`) and the selection runs (:mod:`.runs`)
both use it without importing each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data.records import Record
from .. import workspace as ws_mod
from ..workspace import Workspace

DATASETS = "datasets"


def dataset_dir(data_hash: str, workspace: Workspace) -> Path:
    """Where the records of ``data_hash`` are saved (``datasets/<first 16 hex digits>``)."""
    return workspace.root / DATASETS / data_hash[:16]


def save_dataset(records: Sequence[Record], workspace: Workspace | None = None, name: str = "") -> Path:
    """Save records losslessly under ``datasets/<data hash>`` (records.jsonl + sidecar), once per content.

    Graphs and selection runs refer to their pool by data hash; the pages read the records from here.
    """
    from ..data.loaders import data_hash, save_records_jsonl

    ws = workspace or Workspace()
    h = data_hash(records)
    d = dataset_dir(h, ws)
    if not ws.is_complete(d):
        d.mkdir(parents=True, exist_ok=True)
        save_records_jsonl(records, d / "records.jsonl")
        ws_mod.write_sidecar(d, "dataset", {"name": name}, inputs={"data_hash": h},
                             extra={"n_records": len(records)})
    return d


def load_dataset(data_hash: str, workspace: Workspace | None = None) -> list[Record] | None:
    """Records saved by :func:`save_dataset` for this data hash, or None when they are not in the workspace."""
    from ..data.loaders import read_records_jsonl

    ws = workspace or Workspace()
    d = dataset_dir(str(data_hash), ws)
    if not ws.is_complete(d):
        return None
    return read_records_jsonl(d / "records.jsonl")
