"""The demo pack: the demo's results shipped inside the package, so the app shows them on first open.

A pack is a small read-only workspace (the same layout the pages read), made by ``g2is demo --pack``
from a demo workspace:

    pack.json                    what produced it: command, code version, model identity and hash, the
                                 demo spec, the built-in suite's fingerprint and the data hashes, cost;
                                 the size and sha256 of every file (written last: the pack is complete)
    registry.sqlite              the demo experiment's rows (paths relative to the pack, no WAL)
    graphs/ layouts/ datasets/   the instruction graphs with their 2-D layouts and the records they show
    selections/                  every selection of the demo's cells (walk trajectories included)
    grads/                       the gradient stores those refer to (features and head signatures: a few
                                 hundred KB for the demo's 56-record pool)
    training/<key>/state.json    loss curves only (the adapters stay in the demo workspace)
    heads/<key>/                 the head study

:func:`check_pack` verifies a pack against the current code: every file's checksum, and that the
recorded inputs (the built-in suite, the pool and targets its spec names) are what the code makes now.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..workspace import PROJECT_ROOT, Workspace, canonical_json, hash_config, hash_file, read_json, write_json

PACK_DIR = Path(__file__).resolve().parent.parent / "demo_pack"   # shipped in the package (pyproject package-data)
PACK_FILE = "pack.json"
REGISTRY_FILE = "registry.sqlite"
# Workspace kinds copied whole when the demo's results refer to them (the rest is selected file by file).
_KINDS = ("graphs", "layouts", "datasets", "selections", "heads", "grads")


class PackError(ValueError):
    """A pack that cannot be read or does not match the current code (the sentence says what to do)."""


@dataclass(frozen=True)
class PackInfo:
    root: Path
    meta: dict[str, Any]

    @property
    def command(self) -> str:
        return self.meta.get("command", "")

    @property
    def created(self) -> str:
        return self.meta.get("created_utc", "")

    @property
    def code_version(self) -> str:
        return self.meta.get("code_version", "")

    @property
    def model_hash(self) -> str:
        return (self.meta.get("model") or {}).get("key", "")

    def workspace(self) -> Workspace:
        return Workspace(self.root, read_only=True)


def code_version() -> str:
    """Package version plus the git commit of the checkout (``+dirty`` when it has uncommitted changes)."""
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"{__version__}+{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def suite_fingerprint() -> str:
    """Hash of the built-in task suite as the code defines it (names, kinds, ingredients, samples)."""
    from ..data.tasks import describe_suite

    return hash_config(describe_suite(0))


def spec_inputs(spec) -> dict[str, Any]:
    """Data hashes of what a demo spec names (its pool, each target's selection examples): what the pack recorded."""
    from ..data.loaders import data_hash
    from ..loop.experiment import load_pool, load_target

    return {"pool": data_hash(load_pool(spec.pool)),
            "targets": {t.name: data_hash(load_target(t.select, t.n_select, seed=0)) for t in spec.targets}}


def write_pack(result, workspace: Workspace, out: str | Path = PACK_DIR, *, command: str) -> PackInfo:
    """Copy a finished demo's results (:class:`~.run.DemoResult`) from ``workspace`` into a pack at ``out``.

    The old pack at ``out`` is replaced only once the new one is complete (built beside it, then renamed)."""
    from ..loop.registry import SCHEMA
    from ..selection.datasets import dataset_dir

    out = Path(out).resolve()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ws = workspace.root
    wanted: set[Path] = set(result.graphs)
    if result.study is not None:
        wanted.add(Path(result.study))
    for g in result.graphs:
        side = read_json(Path(g) / "sidecar.json")
        fkey = (side.get("inputs") or {}).get("features_key")
        dh = (side.get("inputs") or {}).get("data_hash")
        for d in (ws / "layouts").glob("*"):
            if (d / "sidecar.json").exists() and (read_json(d / "sidecar.json").get("inputs") or {}).get("features_key") == fkey:
                wanted.add(d)
        if dh and dataset_dir(dh, workspace).is_dir():
            wanted.add(dataset_dir(dh, workspace))
    rows = [r for r in result.rows if r.get("status") == "done"]
    stores: set[str] = set()
    for g in result.graphs:  # the gradient stores (features and head signatures) the graph and walk views read
        stores |= set((read_json(Path(g) / "sidecar.json").get("inputs") or {}).get("train_store_keys") or [])
    for r in rows:
        if r.get("selection"):
            wanted.add(Path(r["selection"]))
            inputs = read_json(Path(r["selection"]) / "sidecar.json").get("inputs") or {}
            stores |= set(inputs.get("train_store_keys") or []) | set(inputs.get("target_store_keys") or [])
    wanted |= {ws / "grads" / k for k in stores if (ws / "grads" / k / "sidecar.json").is_file()}
    for d in sorted(wanted):
        rel = Path(d).resolve().relative_to(ws)
        if rel.parts[0] not in _KINDS:
            raise PackError(f"{d}: not a kind the pack carries ({', '.join(_KINDS)})")
        # hidden files are local caches (.verified.json, .lock): not part of what the pack ships
        shutil.copytree(d, tmp / rel, ignore=shutil.ignore_patterns(".*"))
    for r in rows:  # loss curves only: the adapters are megabytes each and no page needs them
        if r.get("train_dir") and (Path(r["train_dir"]) / "state.json").is_file():
            rel = Path(r["train_dir"]).resolve().relative_to(ws)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(r["train_dir"]) / "state.json", tmp / rel / "state.json")
    _write_registry(tmp / REGISTRY_FILE, rows, ws, SCHEMA)
    meta = {"kind": "demo-pack", "command": command, "code_version": code_version(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "experiment": result.spec.name, "spec": result.spec.to_dict(), "model": _model_identity(result.spec, workspace),
            "suite": suite_fingerprint(), "inputs": spec_inputs(result.spec),
            # stage times of the run that wrote the pack (a rerun over finished stages takes seconds; the
            # demo's cost from nothing is measured in docs/benchmarks.md)
            "seconds_of_this_run": result.seconds,
            "files": file_checksums_deep(tmp)}
    write_json(tmp / PACK_FILE, meta)
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return PackInfo(out, meta)


def _model_identity(spec, ws: Workspace) -> dict[str, Any]:
    from ..models.loading import load_model

    lm = load_model(spec.model, workspace=ws)
    return {"spec": spec.model, "key": lm.key, "identity": lm.identity}


def _write_registry(path: Path, rows: list[dict[str, Any]], ws: Path, schema: str) -> None:
    """A plain (rollback-journal) SQLite file with the rows; artefact paths made relative to the pack."""
    def rel(p: str | None) -> str | None:
        return None if not p else str(Path(p).resolve().relative_to(ws))

    con = sqlite3.connect(path)
    try:
        con.executescript(schema)
        cols = ("config_hash", "experiment", "target", "method", "ratio", "seed", "status", "owner", "config", "metrics",
                "timings", "selection", "train_dir", "error", "created", "finished", "info")
        for r in rows:
            vals = {**r, "owner": None, "selection": rel(r.get("selection")), "train_dir": rel(r.get("train_dir"))}
            vals.update({k: canonical_json(vals[k]) if vals.get(k) is not None else None
                         for k in ("config", "metrics", "timings", "info")})
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        tuple(vals.get(c) for c in cols))
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()


def file_checksums_deep(root: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file under ``root`` (pack.json and hidden caches such as a
    store's ``.verified.json``, written when a page opens it, excluded)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != PACK_FILE and not p.name.startswith("."):
            out[str(p.relative_to(root))] = {"bytes": p.stat().st_size, "sha256": hash_file(p)}
    return out


# ----------------------------------------------------------------------------- reading
def find_pack(root: str | Path | None = None) -> PackInfo | None:
    """The pack at ``root`` (default: the shipped one, or ``G2IS_DEMO_PACK``), or None when there is none."""
    env = os.environ.get("G2IS_DEMO_PACK")
    if root is None and env is not None:
        if env in ("", "none", "off"):
            return None
        root = env
    p = Path(root) if root is not None else PACK_DIR
    if not (p / PACK_FILE).is_file():
        return None
    try:
        return PackInfo(p.resolve(), read_json(p / PACK_FILE))
    except (OSError, ValueError):
        return None


def check_pack(info: PackInfo, *, inputs: bool = True) -> list[str]:
    """What is wrong with a pack, as sentences (empty: readable and current).

    Files: every file listed in pack.json has its recorded size and sha256, and nothing unlisted is there.
    Inputs (``inputs=True``): the built-in suite and the data the pack's spec names hash as recorded."""
    problems = []
    listed = info.meta.get("files") or {}
    present = file_checksums_deep(info.root)
    for rel, rec in listed.items():
        got = present.get(rel)
        if got is None:
            problems.append(f"{rel}: listed in {PACK_FILE} but missing")
        elif got != rec:
            problems.append(f"{rel}: changed since the pack was made (size or sha256 differ)")
    for rel in sorted(set(present) - set(listed)):
        problems.append(f"{rel}: not listed in {PACK_FILE}")
    if inputs:
        from ..loop.spec import spec_from_dict

        if info.meta.get("suite") != suite_fingerprint():
            problems.append("the built-in task suite changed since the pack was made; regenerate it with "
                            f"`{info.command or 'g2is demo --pack'}`")
        spec = spec_from_dict(info.meta["spec"], where=f"{info.root / PACK_FILE}: spec")
        if spec_inputs(spec) != info.meta.get("inputs"):
            problems.append("the pool or targets the pack's spec names are not the data the code makes now; "
                            f"regenerate it with `{info.command or 'g2is demo --pack'}`")
    return problems
