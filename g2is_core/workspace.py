"""The workspace: where computed artefacts live, keyed by content, each with a sidecar.

Layout (default root ``cache/`` next to the project, or ``G2IS_WORKSPACE``)::

    <root>/<kind>/<key>/            one artefact (key = short content hash of what produced it)
    <root>/<kind>/<key>/sidecar.json what produced it: kind, config, inputs' hashes, code version

Rules kept here so every module follows them:
- nothing is pickled; arrays are safetensors / numpy / parquet, metadata is JSON;
- every write is atomic (write to a temp name in the same directory, fsync, rename), so a crash
  never leaves a half-written file under the final name;
- an artefact directory is complete only when its sidecar exists (the sidecar is written last);
- the sidecar lists the size and sha256 of every file beside it (``files``), so a file swapped,
  truncated or half-rewritten after the sidecar was written is caught by :func:`verify_artefact`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import __version__

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIDECAR = "sidecar.json"


def default_root() -> Path:
    env = os.environ.get("G2IS_WORKSPACE")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "cache"


def shared_data_root() -> Path | None:
    """The shared real-data folder (``../shared/data`` beside the checkout), if present."""
    env = os.environ.get("G2IS_SHARED_DATA")
    cand = Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"
    return cand if cand.is_dir() else None


# ----------------------------------------------------------------------------- hashing
def _canonical(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON; hash its spelling
        return "NaN"
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_config(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able config (dict key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def hash_strings(items: Iterable[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def hash_array(a: Any) -> str:
    """sha256 of an array's shape, dtype and bytes (row blocks of 8192, so a memmap is never read whole)."""
    import numpy as np

    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    for r0 in range(0, a.shape[0], 8192):
        h.update(np.ascontiguousarray(a[r0:r0 + 8192]).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``final``; on success fsync and rename it over ``final``.

    On any exception the temp file is removed and ``final`` is untouched (the previous version,
    if any, survives: this is also what keeps a disk-full write from destroying it).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


class LockBusy(Exception):
    """:func:`exclusive_lock` with ``wait=False`` found the lock held by another process."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, on_wait: Any = None, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if absent) for the ``with`` block.

    The lock is ``fcntl.flock``: the kernel drops it when the holder's process ends, however it ends
    (kill -9 included), so a crash never leaves a stale lock behind. When another process holds it,
    ``on_wait()`` is called once (to say so) and this one waits its turn; with ``wait=False`` it raises
    :class:`LockBusy` instead (the caller does other work first). Where ``fcntl`` does not exist
    (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockBusy(str(path)) from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")  # who holds it, for the message of the next one
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_canonical(obj), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


def write_npy(path: str | Path, array: Any) -> Path:
    """Save an array as .npy atomically (never pickled: object arrays are refused)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); delete it to recompute") from exc


# ----------------------------------------------------------------------------- sidecars
def provenance() -> dict[str, Any]:
    """What produced an artefact, beyond its config: code and library versions, time, host."""
    info: dict[str, Any] = {
        "g2is_core": __version__,
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for mod in ("torch", "transformers", "peft", "numpy"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    return info


def write_sidecar(directory: str | Path, kind: str, config: Any, inputs: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``directory/sidecar.json`` last: its presence marks the artefact complete."""
    body = {"kind": kind, "config": _canonical(config), "inputs": _canonical(inputs or {}),
            "produced_by": provenance()}
    if extra:
        body.update(_canonical(extra))
    body["files"] = file_checksums(directory)
    return write_json(Path(directory) / SIDECAR, body)


def file_checksums(directory: str | Path) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes", "sha256"}}`` of the finished files directly in ``directory`` (not the sidecar,
    not hidden temp files, not sub-folders: those are artefacts or scratch of their own)."""
    d = Path(directory)
    return {p.name: {"bytes": p.stat().st_size, "sha256": hash_file(p)}
            for p in sorted(d.iterdir()) if p.is_file() and p.name != SIDECAR and not p.name.startswith(".")}


class ArtefactError(ValueError):
    """An artefact on disk is damaged, busy, or does not fit with another one it is used with. The message
    names the folder or file (and the differing field) and says what to do."""


VERIFIED = ".verified.json"  # hidden: not listed in the sidecar's checksums (file_checksums skips dot-files)


def _stamp(p: Path) -> list[int]:
    """What changes whenever a file's bytes can have changed: size, mtime, ctime (no user can set it) and inode
    (a file replaced by another, even with ``cp -p``, gets a new inode or ctime)."""
    st = p.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _verified_stamps(directory: Path) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        return dict(json.loads((directory / VERIFIED).read_text(encoding="utf-8")))
    return {}


def mark_verified(directory: str | Path) -> None:
    """Record that the files of ``directory`` match its sidecar as they are now (its writer just hashed them),
    so :func:`verify_artefact` with ``cache=True`` does not hash them again until one changes."""
    d = Path(directory)
    meta = read_sidecar(d)
    stamps = {name: _stamp(d / name) for name in (meta.get("files") or {}) if (d / name).is_file()}
    with contextlib.suppress(OSError):  # a read-only workspace: the next use hashes again
        write_json(d / VERIFIED, {"sidecar": _stamp(d / SIDECAR), "files": stamps})


def verify_artefact(directory: str | Path, *, cache: bool = False) -> dict[str, Any]:
    """Check a finished artefact against its sidecar's checksums; return the sidecar.

    Raises FileNotFoundError when the sidecar is missing (not finished) and :class:`ArtefactError` naming
    the first file that is missing or differs (a half-rewritten, truncated, replaced or tampered artefact).
    Files added after the sidecar (e.g. a findings note) are allowed. Sidecars written before checksums were
    recorded have nothing to check and pass.

    ``cache``: skip the sha256 of a file whose size, mtime, ctime and inode are those recorded at its last
    successful check (``.verified.json``), so an artefact used on every run (a store of gigabytes, an
    adapter) is hashed once, and again only after it changed on disk.
    """
    d = Path(directory)
    meta = read_sidecar(d)
    seen = _verified_stamps(d) if cache else {}
    if seen.get("sidecar") != _stamp(d / SIDECAR):
        seen = {}
    ok, fresh = seen.get("files") or {}, False
    for name, want in (meta.get("files") or {}).items():
        p = d / name
        if not p.is_file():
            raise ArtefactError(f"{directory}: {name} is listed in the sidecar but missing; delete the folder and "
                                "run again")
        if ok.get(name) == _stamp(p):
            continue
        if p.stat().st_size != want.get("bytes") or hash_file(p) != want.get("sha256"):
            raise ArtefactError(f"{directory}: {name} differs from the checksum in its sidecar (an interrupted "
                                "rewrite, an edit or a replaced file); delete the folder and run again")
        fresh = True
    if cache and (fresh or not seen):
        mark_verified(d)
    return meta


def read_sidecar(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / SIDECAR
    if not p.exists():
        raise FileNotFoundError(f"{directory} has no {SIDECAR}: it is not a finished artefact (an interrupted run?)")
    return read_json(p)


class Workspace:
    """A root directory holding artefacts by kind and content key."""

    def __init__(self, root: str | Path | None = None, *, read_only: bool = False):
        self.root = Path(root).expanduser().resolve() if root else default_root()
        # read_only: a workspace shown, never written (the demo pack shipped in the package)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r}{', read_only=True' if self.read_only else ''})"

    def dir(self, kind: str, key: str | None = None) -> Path:
        d = self.root / kind if key is None else self.root / kind / key
        if self.read_only:
            raise PermissionError(f"{self.root} is read-only (the shipped demo pack); work happens in your own "
                                  "workspace (G2IS_WORKSPACE, or cache/ in the project)")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def artefact_dir(self, kind: str, config: Any) -> Path:
        """The directory for the artefact that ``config`` (a JSON-able dict) produces."""
        return self.dir(kind, hash_config(config))

    def is_complete(self, directory: str | Path) -> bool:
        return (Path(directory) / SIDECAR).exists()

    def list(self, kind: str) -> list[tuple[Path, dict[str, Any]]]:
        """Finished artefacts of a kind, newest first, with their sidecars."""
        base = self.root / kind
        out = []
        if base.is_dir():
            for d in base.iterdir():
                if d.is_dir() and (d / SIDECAR).exists():
                    with contextlib.suppress(ValueError, OSError):
                        out.append((d, read_sidecar(d)))
        out.sort(key=lambda t: t[1].get("produced_by", {}).get("created_utc", ""), reverse=True)
        return out

    def contains(self, path: str | Path) -> bool:
        try:
            Path(path).resolve().relative_to(self.root)
            return True
        except ValueError:
            return False
