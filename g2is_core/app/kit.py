"""Plain helpers behind the app's pages: tables, path rules, uploads, status lines.

No Streamlit here (pages import this, never the other way round), so every number and table a
page shows comes from a function that tests can call directly.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

from ..data.records import Record
from ..data.spec import DataSpec
from ..workspace import Workspace, canonical_json, hash_file, shared_data_root

UPLOADS = "uploads"
# The user's allow-list: folders (separated by ":", os.pathsep) the app may read besides the workspace and the
# shared data folder; set it before `g2is app` starts, e.g. G2IS_ALLOWED_PATHS=/data/corpora:/models.
ALLOW_ENV = "G2IS_ALLOWED_PATHS"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------- text and tables
def truncate(text: str | None, n: int = 120) -> str:
    """One line of at most ``n`` characters (newlines shown as " ⏎ ", an ellipsis when cut)."""
    s = (text or "").replace("\r\n", "\n").replace("\n", " ⏎ ")
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def md_text(text: str | None) -> str:
    """User text made inert inside st.markdown: every Markdown/HTML punctuation is backslash-escaped,
    so a name like ``<b>x</b>`` or ``[a](javascript:..)`` shows as typed, never as markup or a link."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text or "").split()))


def records_table(records: Sequence[Record], width: int = 120):
    """pandas DataFrame, one row per record: id, source, task, subtask, prompt, response (truncated)."""
    import pandas as pd

    return pd.DataFrame({
        "id": [r.id for r in records],
        "source": [r.source for r in records],
        "task": [r.task for r in records],
        "subtask": [r.subtask or "" for r in records],
        "prompt": [truncate(r.prompt, width) for r in records],
        "response": [truncate(r.response, width) for r in records],
    })


def count_by(records: Iterable[Record], by: str):
    """DataFrame [by, records]: how many records per value of ``by`` ("source", "task", "subtask"), most first."""
    import pandas as pd

    counts: dict[str, int] = {}
    for r in records:
        k = getattr(r, by) or "(none)"
        counts[k] = counts.get(k, 0) + 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(rows, columns=[by, "records"])


def short_json(obj: Any, n: int = 160) -> str:
    return truncate(canonical_json(obj) if obj not in (None, {}) else "", n)


def artefact_rows(workspace: Workspace, kinds: str | Sequence[str]):
    """DataFrame of finished artefacts of one or more workspace kinds, newest first.

    Columns: kind, key (directory name), created (UTC), config and inputs (short JSON), path.
    """
    import pandas as pd

    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    rows = []
    for kind in kinds:
        for d, side in workspace.list(kind):
            rows.append({"kind": kind, "key": d.name,
                         "created": side.get("produced_by", {}).get("created_utc", ""),
                         "config": short_json(side.get("config")), "inputs": short_json(side.get("inputs")),
                         "path": str(d)})
    rows.sort(key=lambda r: r["created"], reverse=True)
    return pd.DataFrame(rows, columns=["kind", "key", "created", "config", "inputs", "path"])


def stores_for_data(workspace: Workspace, data_hash: str | None):
    """Gradient stores whose sidecar says they were made from this data: one row each (key, path, summary).

    A store without ``inputs.data_hash`` in its sidecar cannot be matched and is left out.
    """
    import pandas as pd

    from ..features.store import list_stores, store_summary

    if data_hash is None:
        return pd.DataFrame(columns=["key", "path"])
    rows = [{"key": p.name, "path": str(p), **store_summary(m)} for p, m in list_stores(workspace, data_hash=data_hash)]
    return pd.DataFrame(rows, columns=None if rows else ["key", "path"])


# ----------------------------------------------------------------------------- files
def sanitize_filename(name: str, max_len: int = 120) -> str:
    """A safe file name: the base name only, characters outside [A-Za-z0-9._-] replaced by "_".

    Never empty, never hidden (no leading dot), never a path.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    safe = _SAFE.sub("_", base).strip("._") or "upload"
    if len(safe) > max_len:
        stem, dot, ext = safe.rpartition(".")
        safe = (stem[: max_len - len(ext) - 1] + "." + ext) if dot and len(ext) < 12 else safe[:max_len]
    return safe


def save_upload(name: str, data: bytes | IO[bytes], workspace: Workspace, chunk: int = 1 << 20) -> Path:
    """Store uploaded bytes (or a binary file object, copied in 1 MiB chunks: a large upload is not
    copied whole once more in memory) as ``<workspace>/uploads/<sanitised name>`` and return the path.

    The same name with different content gets the content hash appended, so an upload never
    overwrites a different earlier file; the same content is reused as is. The bytes land in a
    temp file first (fsync, then rename), so a half-written upload is never read as data.
    """
    import io
    import tempfile

    folder = workspace.dir(UPLOADS)
    safe = sanitize_filename(name)
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if hasattr(src, "seek"):
        src.seek(0)
    fd, tmp = tempfile.mkstemp(prefix=f".{safe}.", suffix=".tmp", dir=folder)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: src.read(chunk), b""):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        target = folder / safe
        if target.exists():
            if hash_file(target) == digest:
                return target
            stem, dot, ext = safe.partition(".")
            target = folder / (f"{stem}-{digest[:10]}" + (dot + ext if dot else ""))
            if target.exists():
                return target
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def allowed_roots(workspace: Workspace) -> list[Path]:
    """The folders the app may read typed paths from (the Data page's path view, the Runs page's forms):
    the workspace, the shared data folder, the experiment specs shipped with the package, and the
    user's allow-list (``G2IS_ALLOWED_PATHS``, folders separated by ``:``). Resolved, symlinks followed."""
    from ..loop.spec import DEMO_SPEC

    roots = [workspace.root]
    shared = shared_data_root()
    if shared is not None:
        roots.append(shared.resolve())
    roots.append(DEMO_SPEC.parent.resolve())
    for part in os.environ.get(ALLOW_ENV, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser().resolve())
    return list(dict.fromkeys(roots))


def outside_sentence(name: str, roots: Sequence[Path]) -> str:
    """The one sentence both pages show for a typed path outside :func:`allowed_roots`."""
    where = " or ".join(str(r) for r in roots)
    return (f"{name} is outside the folders the app may read; put the file under {where}, or upload it, or add "
            f"its folder to {ALLOW_ENV} (folders separated by ':') before starting the app")


def confine_path(text: str, workspace: Workspace, *, name: str | None = None) -> Path:
    """The existing file or folder a typed path names, confined to :func:`allowed_roots`.

    An absolute (or ``~``) path is taken as is; a relative one is tried against each root in turn.
    Symlinks are followed before the check, so a link inside a root that points outside is outside.
    Raises ValueError with :func:`outside_sentence`, or "no such file or folder under ..." when it is
    inside but missing. ``name``: how the sentence names the path (default: as typed).
    """
    raw = (text or "").strip().strip("'\"")
    if not raw:
        raise ValueError("type the path of a file or folder")
    shown = name or raw
    roots = allowed_roots(workspace)
    if "\x00" in raw or raw.lower().startswith("file:"):
        raise ValueError(outside_sentence(shown, roots))
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    escapes = False
    for c in candidates:
        real = c.resolve()
        inside = any(_is_within(real, r) for r in roots)
        if inside and real.exists():
            return real
        # a name that exists (a link out counts) or that leads out with ../ is outside, not missing
        escapes = escapes or not inside
    if escapes and (any(os.path.lexists(c) for c in candidates) or all(
            not any(_is_within(c.resolve(), r) for r in roots) for c in candidates)):
        raise ValueError(outside_sentence(shown, roots))
    raise ValueError(f"{shown}: no such file or folder under {' or '.join(str(r) for r in roots)}")


def resolve_data_spec(text: str, workspace: Workspace) -> DataSpec:
    """A typed data spec (README.md, "Naming data"), its path confined to the workspace and the shared
    data folder: the same grammar as the CLI's ``--data``, with the app's path rule on top.

    Built-in specs come back as parsed. A ``shared:`` spec is looked up under the shared folder only;
    a plain relative path is tried against each allowed root in turn; either comes back as a ``file``
    spec with the absolute path and the options kept. Raises ValueError with a sentence that names the
    allowed folders when the path is outside them or does not exist, or what the grammar accepts.
    """
    raw = (text or "").strip().strip("'\"")
    if not raw:
        raise ValueError("type the path of a data file or folder")
    spec = DataSpec.parse(raw)
    if not spec.is_path:
        return spec
    if spec.kind == "shared":
        path = spec.path()  # under the shared root; confine_path still refuses shared:../../etc
        return replace(spec, kind="file", name=str(confine_path(str(path), workspace, name=spec.name)))
    return replace(spec, kind="file", name=str(confine_path(spec.name, workspace)))


def resolve_data_path(text: str, workspace: Workspace) -> Path:
    """The confined file or folder a typed spec names (:func:`resolve_data_spec`); built-in data,
    which has no path, is refused with a sentence."""
    spec = resolve_data_spec(text, workspace)
    if not spec.is_path:
        raise ValueError(f"{spec} is built-in data, not a file or folder; choose the built-in task suite instead")
    return spec.path()


def _is_within(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def content_key(path: str | Path) -> str:
    """sha256 of a file's bytes, or of (relative name, file hash) over a folder's files."""
    p = Path(path)
    if p.is_file():
        return hash_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(str(f.relative_to(p)).encode("utf-8"))
        h.update(hash_file(f).encode())
    return h.hexdigest()


def file_stamp(path: str | Path) -> tuple:
    """(path, size, mtime) of a file, or of every file under a folder: a cheap key to memoise content_key."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return (str(p),) + tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


# ----------------------------------------------------------------------------- model and tokens
@dataclass(frozen=True)
class ModelStatus:
    ready: bool
    path: Path
    message: str


def model_status(workspace: Workspace) -> ModelStatus:
    """Is the default model converted in this workspace? With a sentence saying what to do if not."""
    from ..models.loading import DEFAULT_MODEL, default_model_dir

    d = default_model_dir(workspace)
    if workspace.is_complete(d):
        return ModelStatus(True, d, f"{DEFAULT_MODEL.name} ready")
    return ModelStatus(False, d, f"{DEFAULT_MODEL.name} not fetched yet: run `g2is model fetch` "
                                 "or launch “Fetch the default model” on the Runs page")


def load_tokenizer(workspace: Workspace):
    """(tokenizer, description): the default model's tokenizer if converted, else the byte-level one."""
    from ..models.loading import tiny_tokenizer

    st = model_status(workspace)
    if st.ready:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(st.path))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok, f"the default model's tokenizer ({st.path.name})"
    return tiny_tokenizer(), "the byte-level tokenizer (1 token per UTF-8 byte; the default model is not fetched yet)"


@dataclass(frozen=True)
class TokenStats:
    """Token lengths of records (full, untruncated) and what a max length would cut.

    ``lengths``: one int per record, in order. ``n_cut`` sequences would be cut at ``max_length``,
    losing ``cut_prompt_tokens`` (from the left of prompts) and ``cut_response_tokens``.
    """

    lengths: tuple[int, ...]
    max_length: int
    n: int
    n_cut: int
    cut_prompt_tokens: int
    cut_response_tokens: int
    summary: str


def token_stats(tok, records: Sequence[Record], max_length: int, template: str = "chat") -> TokenStats:
    from ..data.encoding import encode_all

    full, _ = encode_all(tok, records, max_length=1 << 30, template=template, require_response=False)
    _, rep = encode_all(tok, records, max_length=max_length, template=template, require_response=False)
    return TokenStats(tuple(e.length for e in full), max_length, rep.n, rep.n_cut, rep.cut_prompt_tokens,
                      rep.cut_response_tokens, rep.summary())


def limits_help(limits) -> str:
    """One sentence on what a load may read (:class:`g2is_core.data.limits.InputLimits`), for the Data page."""
    return (f"A load reads at most {limits.describe('max_bytes')} decompressed ({limits.env('max_bytes')}), lines "
            f"and whole JSON files of {limits.describe('max_line_bytes')} ({limits.env('max_line_bytes')}) and "
            f"{limits.describe('max_records')} records ({limits.env('max_records')}); set these before starting "
            "the app to change them.")


def skipped_table(skipped: Sequence[tuple[int, str]]):
    """DataFrame [line, reason] of a load report's skipped units."""
    import pandas as pd

    return pd.DataFrame(list(skipped), columns=["line", "reason"])


# ----------------------------------------------------------------------------- jobs
STATUS_COLOURS = {"queued": "gray", "running": "blue", "done": "green", "failed": "red", "cancelled": "orange"}


def elapsed(started: str | None, ended: str | None = None) -> str:
    """"1 h 02 min", "3 min 05 s" or "12 s" between two ISO times (``ended`` None = now); "" if not started."""
    import datetime as dt

    if not started:
        return ""
    try:
        a = dt.datetime.fromisoformat(started)
        b = dt.datetime.fromisoformat(ended) if ended else dt.datetime.now(dt.timezone.utc)
    except ValueError:
        return ""
    s = max(0, int((b - a).total_seconds()))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# ----------------------------------------------------------------------------- benchmark noise, for the page
def with_noise_marks(table):
    """The results table (:func:`g2is_core.loop.tables.summary_table`) as the Benchmarks page shows it:
    ``std`` blank with fewer than 2 seeds (one seed has no spread: 0.000 would claim one), and a ``noise``
    column: "one seed" (no spread to judge by), "inside the seed spread" when |vs_random| <= the row's
    std, else empty."""
    import numpy as np

    t = table.copy()
    single = t["n_seeds"] < 2
    t.loc[single, "std"] = np.nan
    vs = t["vs_random"] if "vs_random" in t else np.nan
    inside = (~single) & (np.abs(vs) <= t["std"])
    t["noise"] = np.where(single, "one seed", np.where(inside, "inside the seed spread", ""))
    return t


def with_paired_noise(paired):
    """The seed-matched differences (:func:`g2is_core.loop.tables.paired_vs_random`) as the page shows
    them: ``better`` blank from one pair (a count of 1 of 1 is no evidence), and a ``noise`` column: "one
    seed", "seeds disagree on the sign" (min <= 0 <= max: inside the noise), else empty."""
    import numpy as np

    p = paired.copy()
    single = p["n_pairs"] < 2
    p["better"] = p["better"].astype("float").where(~single)
    mixed = (~single) & (p["min_diff"] <= 0) & (p["max_diff"] >= 0)
    p["noise"] = np.where(single, "one seed", np.where(mixed, "seeds disagree on the sign", ""))
    return p
