"""Instruction-data loaders: every file layout in ``shared/data`` (and generic JSONL/CSV) -> Record.

One entry point, :func:`load_records` (or the streaming :func:`iter_records`), and one registry,
:data:`FORMATS`. A format is a *reader* that cuts a file into units (a JSONL line, a JSON-list
element, a CSV row, a BBH example, a SQuAD question) and a *converter* that turns one unit into
records. Adding a format means writing one converter function under ``@_format(...)``.

Errors. Anything wrong with the input raises :class:`~g2is_core.records.DataError` naming the
file, the line (or example) and the field, with what to do. With ``lenient=True`` a bad *unit*
is skipped and listed in :attr:`LoadReport.skipped`; file-level problems (unreadable gzip, a JSON
document that does not parse, a CSV header without the mapped columns) still raise, and so does
a load that yields no record at all.

Ids. The file's own id when it has one (Self-Instruct, TyDi QA, OASST, chat ``id``, a mapped
``id`` column); otherwise ``"<source>:<file stem>:<n>"`` where n is the 1-based line for
line-based files (JSONL, CSV, TSV) and the 0-based element index for JSON lists and documents.
Ids are deterministic and must be unique within one load.

Streaming and limits. JSONL, CSV and TSV are read line by line; JSON lists and documents (BBH,
TyDi QA) are read whole, as one piece. Every read is bounded by :mod:`.limits` (decompressed bytes
per load, the largest piece parsed at once, records per load; environment variables raise them):
a line is read with a size limit and decompressed bytes are counted as they come, so a gzip bomb
or an endless line stops at the cap with a :class:`~.limits.InputLimitError` naming the file, the
line, the cap and its variable. Only regular files are read: a FIFO, a device such as /dev/zero, a
socket or a folder where a file is expected is refused before a byte is read. Gzip is detected by
its magic bytes, so ``.gz`` files and misnamed ones both work; a UTF-8 BOM is stripped, CRLF is
accepted.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .limits import InputLimitError, InputLimits, input_limits, resident_bytes
from .records import DataError, Record, check_messages, simple
from ..workspace import atomic_path, canonical_json, hash_strings, shared_data_root

__all__ = [
    "FORMATS", "Format", "LoadReport", "LoadResult", "load_records", "iter_records", "detect_format",
    "load_bbh_cot_prompt", "bbh_cot_exemplars", "save_records_jsonl", "read_records_jsonl",
    "export_original", "export_chat", "data_hash", "read_text_file",
]

# How a user fixes a load, in the words of each place they load from: the CLI's flags (--lenient,
# --fmt, --columns) and a data spec's options (README "Naming data"); never a Python keyword.
LENIENT_HINT = "lenient loading skips it: --lenient, or ?lenient=true in a data spec"
FMT_HINT = "--fmt, or ?fmt= in a data spec"
COLUMNS_HINT = ("--columns '{\"prompt\": \"<column>\", \"response\": \"<column>\"}', or "
                "?columns=prompt:<column>,response:<column> in a data spec")
_DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Folder names that say which split or layout a file is, not which dataset it belongs to.
_GENERIC_DIRS = {"data", "dev", "val", "valid", "validation", "test", "train", "data_per_template",
                 "language_data", "splits", "raw"}


# ============================================================================ report / result
@dataclass
class LoadReport:
    """What a load did. ``skipped`` holds ``(line, reason)``: the line (or the element index for
    JSON documents) and the full error sentence, which names the file."""
    path: str
    fmt: str
    n_read: int = 0                      # units read (lines / rows / elements), skipped ones included
    n_loaded: int = 0                    # records produced
    skipped: list[tuple[int, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # folder loads: (file, why)
    truncated: bool = False              # stopped early because ``limit`` was reached


@dataclass
class LoadResult:
    records: list[Record]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)


# ============================================================================ file access
class _Budget:
    """What one load may still read (:class:`~.limits.InputLimits`): decompressed bytes are counted as
    they come, across every file of a folder load, and the first byte past the cap is an error."""

    def __init__(self, limits: InputLimits | None = None):
        self.limits = limits if limits is not None else input_limits()
        self.used = 0
        self._rss0: int | None = None
        self._checked_at = 0

    def check_memory(self, n_read: int, path: Path, line: int | None) -> None:
        """Every 256 records or 2 MiB read: stop when the process has grown past ``max_memory`` since
        the load began (the byte caps bound the input, not what Python makes of it)."""
        if n_read % 256 and self.used - self._checked_at < (2 << 20):
            return
        self._checked_at = self.used
        rss = resident_bytes()
        if self._rss0 is None:
            self._rss0 = rss
            return
        lim = self.limits
        if rss - self._rss0 > lim.max_memory:
            raise InputLimitError(
                f"loading has grown this process's memory by more than {lim.describe('max_memory')} "
                f"({lim.env('max_memory')}; records of many small values cost far more memory than their bytes). "
                f"Load a smaller file or folder, or raise the limit, e.g. {lim.raise_hint('max_memory')}",
                path=str(path), line=line, limit="max_memory")

    def take(self, n: int, path: Path, line: int | None) -> None:
        self.used += n
        if self.used > self.limits.max_bytes:
            lim = self.limits
            raise InputLimitError(
                f"the data passes {lim.describe('max_bytes')} (decompressed), the most one load reads "
                f"({lim.env('max_bytes')}; the files of a folder count together). Load a smaller file or folder, "
                f"or raise the limit, e.g. {lim.raise_hint('max_bytes')}", path=str(path), line=line,
                limit="max_bytes")


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> DataError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    if stat.S_ISDIR(mode):
        return DataError("is a folder where a data file is expected; name one of its files", path=str(path))
    return DataError(f"is {kind}, not a regular file; only regular files are read as data (a pipe or a device "
                     "may never end). Save the data to a file and load that", path=str(path))


@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for binary reading, decompressing transparently when it starts with gzip magic.

    Why stat, then open with O_NONBLOCK, then fstat: opening a FIFO for reading blocks until a writer
    comes, and /dev/zero never ends, so anything but a regular file is refused before it is read; the
    fstat of the opened descriptor closes the race with a path swapped after the first check."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DataError(f"cannot open the file ({exc.strerror or exc}); check the path and permissions",
                        path=str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        if f.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            yield f


def _read_error(path: Path, exc: BaseException, line: int | None = None) -> DataError:
    return DataError(f"could not read the file ({type(exc).__name__}: {exc}); if it is gzipped, check that "
                     "it is complete (gzip -t)", path=str(path), line=line)


def _line_too_long(path: Path, line: int, limits: InputLimits) -> InputLimitError:
    return InputLimitError(
        f"the line is longer than {limits.describe('max_line_bytes')}, the longest line the loader reads "
        f"({limits.env('max_line_bytes')}); check that the file is line-based data, skip the line ({LENIENT_HINT}), "
        f"or raise the limit, e.g. {limits.raise_hint('max_line_bytes')}", path=str(path), line=line,
        limit="max_line_bytes")


def _iter_lines(path: Path, budget: _Budget | None = None) -> Iterator[tuple[int, str | None, DataError | None]]:
    """Yield ``(line number, text with its line ending, error)``; text is None on bad UTF-8 or a line
    over the line cap. Memory: one line of at most the cap; a longer one is read past in chunks (its
    bytes still count against the load's byte cap) and reported as an error for that line."""
    budget = budget if budget is not None else _Budget()
    cap = budget.limits.max_line_bytes
    ln = 0
    with _open_binary(path) as fb:
        try:
            while True:
                raw = fb.readline(cap + 1)
                if not raw:
                    return
                ln += 1
                budget.take(len(raw), path, ln)
                if len(raw) > cap:
                    # Said first (a caller that stops at the error reads no further), then read past the
                    # rest of the line 1 MiB at a time for a caller that skips it.
                    yield ln, None, _line_too_long(path, ln, budget.limits)
                    while not raw.endswith(b"\n"):
                        raw = fb.readline(1 << 20)
                        if not raw:
                            break
                        budget.take(len(raw), path, ln)
                    continue
                if ln == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    yield ln, raw.decode("utf-8"), None
                except UnicodeDecodeError as exc:
                    yield ln, None, DataError(f"invalid UTF-8 at byte {exc.start} of the line; re-save the file "
                                              "as UTF-8", path=str(path), line=ln)
        except (OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, exc, ln + 1) from None


def _read_bytes(path: Path, cap: int, budget: _Budget, too_big: Callable[[int], DataError]) -> bytes:
    """The whole (decompressed) file, refused with ``too_big(line)`` past ``cap`` bytes; never holds more
    than cap + 1 bytes."""
    with _open_binary(path) as fb:
        try:
            data = fb.read(cap + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, exc) from None
    if len(data) > cap:
        raise too_big(data.count(b"\n") + 1)
    budget.take(len(data), path, None)
    return data


def _decode(path: Path, data: bytes, errors: str = "strict") -> str:
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"invalid UTF-8 at byte {exc.start}; re-save the file as UTF-8", path=str(path),
                        line=line) from None


def _read_text(path: Path, budget: _Budget | None = None) -> str:
    """The whole file as text (gzip-aware, BOM stripped, UTF-8 checked), for JSON lists and documents:
    parsed as one piece, so capped by the line cap (a JSON value costs up to ~21x its bytes in objects)."""
    budget = budget if budget is not None else _Budget()
    lim = budget.limits

    def too_big(line: int) -> DataError:
        return InputLimitError(
            f"the file is larger than {lim.describe('max_line_bytes')}, the most the loader parses at once "
            f"({lim.env('max_line_bytes')}; a JSON list or document is parsed whole). Convert it to JSON Lines "
            "(one record per line, read as a stream: jq -c '.[]' FILE.json > FILE.jsonl), or raise the limit, "
            f"e.g. {lim.raise_hint('max_line_bytes')}", path=str(path), line=line, limit="max_line_bytes")

    return _decode(path, _read_bytes(path, lim.max_line_bytes, budget, too_big))


def read_text_file(path: str | Path, *, errors: str = "strict", limits: InputLimits | None = None) -> str:
    """A plain-text data file (a .txt corpus) as text, gzip-aware, under the load's byte cap
    (:mod:`.limits`); only a regular file. ``errors``: as ``bytes.decode`` ("replace" keeps going)."""
    p = Path(path)
    budget = _Budget(limits)
    lim = budget.limits

    def too_big(line: int) -> DataError:
        return InputLimitError(
            f"the file passes {lim.describe('max_bytes')} (decompressed), the most one load reads "
            f"({lim.env('max_bytes')}); use a smaller file or raise the limit, e.g. {lim.raise_hint('max_bytes')}",
            path=str(p), line=line, limit="max_bytes")

    return _decode(p, _read_bytes(p, lim.max_bytes, budget, too_big), errors)


def _first_char(path: Path, limits: InputLimits | None = None) -> str:
    """The first character that is not whitespace (a BOM skipped), "" when there is none within the line
    cap; reads in 64 KiB chunks, never a whole line."""
    cap = (limits or input_limits()).max_line_bytes
    seen = 0
    with _open_binary(path) as fb:
        try:
            while seen <= cap:
                chunk = fb.read(1 << 16)
                if not chunk:
                    return ""
                if seen == 0 and chunk.startswith(_BOM):
                    chunk = chunk[len(_BOM):]
                seen += len(chunk)
                rest = chunk.lstrip(b" \t\r\n")
                if rest:
                    return chr(rest[0]) if rest[0] < 128 else "?"
        except (OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, exc) from None
    return ""


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return name.rsplit(".", 1)[0] if "." in name else name


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return "." + name.rsplit(".", 1)[1] if "." in name else ""


def _data_files(folder: Path) -> list[Path]:
    # Not p.is_file(): a FIFO or a device named like data is listed, then refused with a sentence when read.
    files = sorted(p for p in folder.rglob("*") if not p.is_dir() and not p.name.startswith(".")
                   and _suffix(p) in _DATA_SUFFIXES)
    if not files:
        raise DataError(f"the folder has no data files ({', '.join(_DATA_SUFFIXES)}, optionally .gz); "
                        "point at a data file or a folder of them", path=str(folder))
    return files


def _default_source(path: Path) -> str:
    """The dataset folder name: the top folder under shared/data, else the nearest non-generic parent."""
    root = shared_data_root()
    if root is not None:
        with contextlib.suppress(ValueError, OSError):
            rel = path.resolve().relative_to(root.resolve())
            if len(rel.parts) > 1:
                return rel.parts[0]
    for d in path.resolve().parents:
        if d.name and d.name.lower() not in _GENERIC_DIRS and d.parent.name != d.name:
            return d.name
    return _stem(path)


# ============================================================================ units and rows
@dataclass(frozen=True)
class _Unit:
    """One piece of a file a converter turns into records."""
    key: int                       # the number used in default ids: 1-based line, or 0-based index
    line: int | None               # the file line it starts on, when known
    where: str                     # how a message names it: "line 12", "example 3"
    obj: Any = None
    error: DataError | None = None  # set when the unit itself could not be read


@dataclass(frozen=True)
class _Ctx:
    path: Path
    stem: str
    id_stem: str                   # the stem in default ids; "ARC-Easy/test" where the stem alone is generic
    source: str
    task: str | None
    fmt: str
    columns: dict[str, str] | None
    budget: _Budget = field(default_factory=_Budget, compare=False)  # shared by every file of one load


@dataclass(frozen=True)
class _Row:
    """A unit being converted: its object plus helpers that raise well-formed DataErrors."""
    obj: Any
    unit: _Unit
    ctx: _Ctx

    def err(self, message: str, field: str | None = None) -> DataError:
        if self.unit.line is None:
            message = f"{self.unit.where}: {message}"
        return DataError(message, path=str(self.ctx.path), line=self.unit.line, field=field)

    def as_dict(self) -> dict[str, Any]:
        if not isinstance(self.obj, dict):
            raise self.err(f"expected a JSON object for format {self.ctx.fmt!r}, got {_kind(self.obj)}; "
                           "check fmt= or fix the line")
        return self.obj

    def text(self, *keys: str, required: bool = True, nonempty: bool = True) -> str:
        """The first present of ``keys`` as text. Optional fields default to ""; null counts as absent."""
        d = self.as_dict()
        key = next((k for k in keys if k in d and d[k] is not None), None)
        if key is None:
            if not required:
                return ""
            names = " or ".join(repr(k) for k in keys)
            raise self.err(f"missing field {names}; every record of format {self.ctx.fmt!r} needs it", keys[0])
        value = d[key]
        if not isinstance(value, str):
            raise self.err(f"field is {_kind(value)}, expected text", key)
        if nonempty and required and not value.strip():
            raise self.err(f"field is empty; fill it in or drop the record ({LENIENT_HINT})", key)
        return value

    def value(self, key: str, types: tuple[type, ...], what: str) -> Any:
        d = self.as_dict()
        if key not in d:
            raise self.err(f"missing field {key!r}; every record of format {self.ctx.fmt!r} needs it", key)
        v = d[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise self.err(f"field is {_kind(v)}, expected {what}", key)
        return v

    def gold(self, key: str, n: int) -> int:
        g = self.value(key, (int,), "an integer index")
        if not 0 <= g < n:
            raise self.err(f"gold index {g} is out of range for {n} choices", key)
        return g

    def id(self, own: Any = None, suffix: str | None = None) -> str:
        if own is not None and (isinstance(own, bool) or not isinstance(own, (str, int))):
            raise self.err(f"id is {_kind(own)}, expected text or an integer", "id")
        rid = str(own) if own not in (None, "") else f"{self.ctx.source}:{self.ctx.id_stem}:{self.unit.key}"
        return rid + (f"#{suffix}" if suffix is not None else "")

    def record(self, prompt: str, response: str | None, *, task: str, own_id: Any = None,
               id_suffix: str | None = None, raw: Any = None, **kw: Any) -> Record:
        """A single-turn record; ``raw`` defaults to the unit's own object."""
        raw_obj = self.obj if raw is None else raw
        return simple(self.id(own_id, id_suffix), prompt, response, source=self.ctx.source,
                      task=self.ctx.task or task, raw=raw_obj if isinstance(raw_obj, dict) else None,
                      fmt=self.ctx.fmt, **kw)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


# ============================================================================ readers
Reader = Callable[[_Ctx], Iterator[_Unit]]
_WS = re.compile(r"[ \t\n\r]*")


def _json_error(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    return f"not valid JSON ({exc.__class__.__name__}: {exc})"


def _read_json_items(ctx: _Ctx) -> Iterator[_Unit]:
    """A JSON list (one unit per element) or JSON Lines (one unit per non-blank line)."""
    if _first_char(ctx.path, ctx.budget.limits) == "[":
        yield from _read_json_list(ctx)
        return
    for ln, text, err in _iter_lines(ctx.path, ctx.budget):
        if err is not None:
            yield _Unit(ln, ln, f"line {ln}", error=err)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield _Unit(ln, ln, f"line {ln}", error=DataError(
                f"{_json_error(exc)}; each line must be one JSON value (JSON Lines) or the whole file one "
                f"JSON list. Fix or remove the line ({LENIENT_HINT})", path=str(ctx.path), line=ln))
            continue
        yield _Unit(ln, ln, f"line {ln}", obj)


def _read_json_list(ctx: _Ctx) -> Iterator[_Unit]:
    """Elements of a top-level JSON list, each with the line it starts on. A syntax error is fatal:
    nothing after it can be located."""
    text = _read_text(ctx.path, ctx.budget)
    dec = json.JSONDecoder()
    i = _WS.match(text, 0).end() + 1  # past "["
    line, last, idx = 1, 0, 0
    try:
        while True:
            i = _WS.match(text, i).end()
            if i < len(text) and text[i] == "]":
                if text[_WS.match(text, i + 1).end():]:
                    raise json.JSONDecodeError("extra data after the closing ']'", text, i + 1)
                return
            if idx > 0:
                if i >= len(text) or text[i] != ",":
                    raise json.JSONDecodeError("expected ',' or ']' between elements", text, i)
                i = _WS.match(text, i + 1).end()
            line += text.count("\n", last, i)
            last = i
            obj, i = dec.raw_decode(text, i)
            yield _Unit(idx, line, f"element {idx} (line {line})", obj)
            idx += 1
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg}); the file is one JSON list, so it cannot be read past "
                        "this point. Fix the file", path=str(ctx.path), line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{_json_error(exc)}; fix the file", path=str(ctx.path), line=line) from None


def _read_json_doc(ctx: _Ctx) -> Any:
    text = _read_text(ctx.path, ctx.budget)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno}); fix the file", path=str(ctx.path),
                        line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{_json_error(exc)}; fix the file", path=str(ctx.path)) from None


def _read_csv(ctx: _Ctx, delimiter: str, header: bool) -> Iterator[_Unit]:
    """CSV/TSV rows (RFC 4180 quoting), streamed. With ``header`` each unit is a dict by column name."""
    bad: dict[int, DataError] = {}

    def lines() -> Iterator[str]:
        for ln, text, err in _iter_lines(ctx.path, ctx.budget):
            if err is not None:
                bad[ln] = err
                yield "\n"
            else:
                yield text

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    names: list[str] | None = None
    prev = 0
    while True:
        try:
            row = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            row, error = None, DataError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'} row ({exc}); "
                                         "check the quoting", path=str(ctx.path), line=prev + 1)
        start, prev = prev + 1, reader.line_num
        hit = [bad[n] for n in range(start, prev + 1) if n in bad]
        error = error or (hit[0] if hit else None)
        if error is None and (not row or all(not c.strip() for c in row)):
            continue
        if header and names is None:
            if error is not None:
                raise error
            names = [c.strip() for c in row]
            _check_mapping(ctx, names)
            continue
        if error is not None:
            yield _Unit(start, start, f"line {start}", error=error)
            continue
        row = [c.replace("\r\n", "\n") for c in row]
        if header:
            if len(row) != len(names):
                yield _Unit(start, start, f"line {start}", error=DataError(
                    f"the row has {len(row)} fields but the header has {len(names)}; check the delimiter "
                    "and quoting", path=str(ctx.path), line=start))
                continue
            row = dict(zip(names, row))
        yield _Unit(start, start, f"line {start}", row)


# ============================================================================ the registry
@dataclass(frozen=True)
class Format:
    """A loader format: how to cut a file into units and how to turn one unit into records."""
    name: str
    read: Reader
    convert: Callable[[_Row], Iterable[Record]]
    doc: str


FORMATS: dict[str, Format] = {}


def _format(name: str, read: Reader = _read_json_items) -> Callable:
    def register(fn: Callable[[_Row], Iterable[Record]]) -> Callable[[_Row], Iterable[Record]]:
        FORMATS[name] = Format(name, read, fn, (fn.__doc__ or "").strip())
        return fn
    return register


def _join(instruction: str, inp: str) -> str:
    return instruction + ("\n\n" + inp if inp.strip() else "")


# ---------------------------------------------------------------------------- candidate pool
@_format("alpaca")
def _alpaca(r: _Row) -> Iterable[Record]:
    """JSON list or JSONL of {instruction, input?, output} ("response" accepted, as in GPTeacher).
    Prompt = instruction + "\\n\\n" + input when input is non-empty."""
    prompt = _join(r.text("instruction"), r.text("input", required=False))
    yield r.record(prompt, r.text("output", "response"), task=r.ctx.source)


_ALPACA_WRAP = re.compile(
    r"^Below is an instruction that describes a task(?:, paired with an input that provides further context)?\. "
    r"Write a response that appropriately completes the request\.\n\n### Instruction:\n(.*?)"
    r"(?:\n\n### Input:\n(.*?))?\n\n### Response:\n?$", re.S)


@_format("prompt_completion")
def _prompt_completion(r: _Row) -> Iterable[Record]:
    """JSONL {prompt, completion} (T0 style; a trailing "<|endoftext|>" is stripped) or {prompt, response}
    (dolly_hhrlhf). A prompt already wrapped in the Alpaca template is unwrapped (metadata template=alpaca)
    so that a chat template is not applied twice; ``raw`` keeps the original."""
    prompt = r.text("prompt")
    response = _strip_eot(r, r.text("completion", "response", nonempty=False))
    meta: dict[str, Any] = {}
    m = _ALPACA_WRAP.match(prompt)
    if m and m.group(1).strip():
        prompt, meta["template"] = _join(m.group(1), m.group(2) or ""), "alpaca"
    yield r.record(prompt, response, task=r.ctx.source, metadata=meta)


def _strip_eot(r: _Row, completion: str) -> str:
    key = "completion" if "completion" in r.as_dict() else "response"
    if completion.endswith("<|endoftext|>"):
        completion = completion[: -len("<|endoftext|>")]
    if not completion.strip():
        raise r.err("field is empty (after removing <|endoftext|>); fill it in or drop the record "
                    f"({LENIENT_HINT})", key)
    return completion


# The 34 P3 datasets in t0_train_50k (MANIFEST.md), longest first so "wiki_qa" beats "wiki".
_T0_DATASETS = sorted((
    "adversarial_qa", "ag_news", "amazon_polarity", "app_reviews", "cnn_dailymail", "common_gen",
    "commonsense_qa", "cosmos_qa", "dbpedia_14", "dream", "duorc", "gigaword", "glue_mrpc", "glue_qqp", "imdb",
    "kilt_tasks_hotpotqa", "multi_news", "paws", "qasc", "quarel", "quartz", "quoref", "ropes", "rotten_tomatoes",
    "samsum", "sciq", "social_i_qa", "trec", "wiki_bio", "wiki_hop", "wiki_qa", "wiqa", "xsum", "yelp"),
    key=len, reverse=True)


@_format("t0")
def _t0(r: _Row) -> Iterable[Record]:
    """T0 data_per_template JSONL {prompt, completion}: task "t0", subtask = file stem (the P3 template),
    metadata dataset = the P3 dataset the template belongs to."""
    stem = r.ctx.stem
    dataset = next((d for d in _T0_DATASETS if stem == d or stem.startswith(d + "_")), stem.split("_")[0])
    response = _strip_eot(r, r.text("completion", "response", nonempty=False))
    yield r.record(r.text("prompt"), response, task="t0", subtask=stem,
                   metadata={"dataset": dataset, "template": stem})


_CHAT_ROLES = {"user": "user", "human": "user", "prompter": "user", "system": "system",
               "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
               "bard": "assistant", "model": "assistant"}


@_format("chat")
def _chat(r: _Row) -> Iterable[Record]:
    """JSONL with "messages" [{role, content}] (OpenAI style) or "conversations" [{from, value}]
    (ShareGPT style: human/gpt/system). An optional top-level "system" string is prepended."""
    d = r.as_dict()
    key = "messages" if "messages" in d else "conversations"
    turns = r.value(key, (list,), "a list of messages")
    msgs: list[dict[str, Any]] = []
    sys_text = d.get("system")
    if isinstance(sys_text, str) and sys_text.strip():
        msgs.append({"role": "system", "content": sys_text})
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise r.err(f"message {i} is {_kind(t)}, expected an object", key)
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        mapped = _CHAT_ROLES.get(role.lower()) if isinstance(role, str) else None
        if mapped is None:
            raise r.err(f"message {i} has role {role!r}; use one of user/assistant/system "
                        "(or human/gpt for ShareGPT)", key)
        msgs.append({"role": mapped, "content": content})
    try:
        messages = check_messages(msgs)
    except DataError as exc:
        raise r.err(exc.reason, key) from None
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise r.err("the conversation has no non-empty assistant message to train on; add one or drop the "
                    f"record ({LENIENT_HINT})", key)
    return [Record(id=r.id(d.get("id")), source=r.ctx.source, task=r.ctx.task or r.ctx.source,
                   messages=messages, raw=d, fmt=r.ctx.fmt)]


@_format("self_instruct")
def _self_instruct(r: _Row) -> Iterable[Record]:
    """Self-Instruct seed / user-oriented tasks {id, instruction, instances: [{input, output}]}: one record
    per instance (id = the task id, plus "#k" when a task has several instances). ``raw`` is the task
    with only that instance, so an export keeps one object per record."""
    d = r.as_dict()
    instruction = r.text("instruction")
    instances = r.value("instances", (list,), "a list of {input, output}")
    if not instances:
        raise r.err("has no instances; add at least one {input, output}", "instances")
    meta = {k: d[k] for k in ("name", "motivation_app", "is_classification") if k in d}
    out = []
    for k, inst in enumerate(instances):
        sub = _Row(inst, r.unit, r.ctx)
        if not isinstance(inst, dict):
            raise r.err(f"instance {k} is {_kind(inst)}, expected an object with input and output", "instances")
        prompt = _join(instruction, sub.text("input", required=False))
        out.append(r.record(prompt, sub.text("output"), task=r.ctx.source, own_id=d.get("id"),
                            id_suffix=str(k) if len(instances) > 1 else None,
                            raw={**d, "instances": [inst]}, metadata=dict(meta)))
    return out


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _best_reply(replies: list[Any]) -> dict[str, Any] | None:
    """The reply OASST ranked best (rank 0 first), else the first one; deleted replies never."""
    live = [m for m in replies if isinstance(m, dict) and not m.get("deleted")]
    ranked = [m for m in live if isinstance(m.get("rank"), int) and not isinstance(m.get("rank"), bool)]
    if ranked:
        return min(ranked, key=lambda m: m["rank"])
    return live[0] if live else None


def _oasst_chain(r: _Row, root: Any, key: str) -> Iterable[Record]:
    if not isinstance(root, dict):
        raise r.err(f"expected a message object, got {_kind(root)}", key)
    if root.get("deleted"):
        raise r.err(f"the first message is deleted; nothing to load ({LENIENT_HINT})", key)
    msgs, ids, synthetic, node = [], [], False, root
    while node is not None:
        role = _OASST_ROLES.get(node.get("role"))
        text = node.get("text")
        if role is None or not isinstance(text, str):
            raise r.err(f"message {node.get('message_id')!r} needs role prompter/assistant and a text", key)
        msgs.append({"role": role, "content": text})
        ids.append(node.get("message_id"))
        synthetic = synthetic or bool(node.get("synthetic"))
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise r.err(f"message {node.get('message_id')!r} has replies that are not a list", key)
        node = _best_reply(replies)
    while msgs and msgs[-1]["role"] != "assistant":  # a chain may end on an unanswered prompt
        msgs.pop()
        ids.pop()
    if not msgs or not msgs[-1]["content"].strip():
        raise r.err(f"the conversation has no assistant reply; nothing to train on ({LENIENT_HINT})", key)
    own = r.as_dict().get("message_tree_id") if r.ctx.fmt == "oasst_tree" else root.get("message_id")
    return [Record(id=r.id(own), source=r.ctx.source, task=r.ctx.task or "oasst", messages=tuple(msgs),
                   metadata={"lang": root.get("lang"), "message_ids": ids, "synthetic": synthetic},
                   raw=r.as_dict(), fmt=r.ctx.fmt)]


@_format("oasst_tree")
def _oasst_tree(r: _Row) -> Iterable[Record]:
    """OASST message trees {message_tree_id, prompt: {..., replies}}: the conversation along the best-ranked
    reply chain (rank 0, or the first reply when unranked), prompter->user, deleted messages skipped;
    a trailing unanswered prompt is dropped."""
    return _oasst_chain(r, r.value("prompt", (dict,), "a message object"), "prompt")


@_format("oasst_message")
def _oasst_message(r: _Row) -> Iterable[Record]:
    """OASST top-level message dicts {message_id, text, role, replies}: as oasst_tree."""
    return _oasst_chain(r, r.as_dict(), "replies")


@_format("text_lines")
def _text_lines(r: _Row) -> Iterable[Record]:
    """One JSON string per line (OASST *_text.jsonl): prompt-only records, metadata prompt_only=True."""
    if not isinstance(r.obj, str):
        raise r.err(f"expected a JSON string, got {_kind(r.obj)}")
    if not r.obj.strip():
        raise r.err(f"the prompt is empty; drop the line ({LENIENT_HINT})")
    yield r.record(r.obj, None, task=r.ctx.source, raw={"text": r.obj}, metadata={"prompt_only": True})


# ---------------------------------------------------------------------------- target tasks
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


@_format("gsm8k")
def _gsm8k(r: _Row) -> Iterable[Record]:
    """GSM8K JSONL {question, answer}: response = the full worked answer; answer = the number after
    "####" with thousands commas removed."""
    solution = r.text("answer")
    m = _GSM8K_ANSWER.search(solution)
    if not m:
        raise r.err("has no final '#### <number>' line; GSM8K answers end with one", "answer")
    yield r.record(r.text("question"), solution, task="gsm8k", answer=m.group(1).replace(",", ""))


_OPTION = re.compile(r"\b(?:Answer|Option|Solution|Ending)(\d+):\s*")
_ANSWER_FORMAT = re.compile(r"\n\s*Answer format:\s*(\S[^\n]*?)\s*$")


def _adapter_choices(instruction: str, answer: str) -> tuple[tuple[str, ...] | None, int | None]:
    """Options listed as "Answer1: ... Answer2: ..." and the "Answer format: answer1/answer2" labels."""
    fm = _ANSWER_FORMAT.search(instruction)
    labels = [s.strip() for s in fm.group(1).split("/")] if fm else []
    body = instruction[: fm.start()] if fm else instruction
    marks = list(_OPTION.finditer(body))
    if marks and [int(m.group(1)) for m in marks] == list(range(1, len(marks) + 1)):
        ends = [m.start() for m in marks[1:]] + [len(body)]
        choices = tuple(body[m.end():e].strip() for m, e in zip(marks, ends))
        labels = labels if len(labels) == len(choices) else [f"answer{i}" for i in range(1, len(choices) + 1)]
    elif len(labels) >= 2:
        choices = tuple(labels)
    else:
        return None, None
    gold = labels.index(answer.strip()) if answer.strip() in labels else None
    return choices, gold


@_format("llm_adapters")
def _llm_adapters(r: _Row) -> Iterable[Record]:
    """LLM-Adapters JSON list {instruction, input, output, answer} (ARC, BoolQ, OpenBookQA): answer = the
    label; choices parsed from "Answer1: ..." options (or "Answer format: true/false"), gold = its index."""
    instruction = r.text("instruction")
    answer = r.text("answer")
    choices, gold = _adapter_choices(instruction, answer)
    folder = r.ctx.path.parent.name
    task = folder.lower().replace("-", "_") if folder.lower() not in _GENERIC_DIRS else r.ctx.source
    yield r.record(_join(instruction, r.text("input", required=False)), r.text("output"), task=task,
                   answer=answer, choices=choices, gold=gold)


@_format("foundry_eval")
def _foundry_eval(r: _Row) -> Iterable[Record]:
    """llm-foundry ICL eval JSONL. MC {query, choices, gold}: response = the gold choice.
    Schema (winogrande) {context_options, continuation, gold}: prompt = the gold context, response = the
    continuation, choices = the contexts. Generation (svamp/aqua) {context, chain_of_thought, answer}:
    response = chain_of_thought + " So the answer is " + answer. Task = file stem."""
    d = r.as_dict()
    task = r.ctx.stem
    if "context_options" in d:
        opts = r.value("context_options", (list,), "a list of texts")
        if not opts or not all(isinstance(o, str) for o in opts):
            raise r.err("must be a non-empty list of texts", "context_options")
        gold = r.gold("gold", len(opts))
        cont = r.text("continuation")
        yield r.record(opts[gold], cont, task=task, choices=tuple(opts), gold=gold,
                       metadata={"continuation": cont, "icl_task": "schema"})
    elif "chain_of_thought" in d:
        answer = r.text("answer")
        yield r.record(r.text("context"), _cot(r.text("chain_of_thought"), answer), task=task, answer=answer,
                       metadata={"icl_task": "generation_with_answers"})
    else:
        choices = r.value("choices", (list,), "a list of texts")
        if not choices or not all(isinstance(c, str) for c in choices):
            raise r.err("must be a non-empty list of texts", "choices")
        gold = r.gold("gold", len(choices))
        if not choices[gold].strip():
            raise r.err(f"the gold choice {gold} is empty", "choices")
        yield r.record(r.text("query").strip(), choices[gold], task=task, choices=tuple(choices), gold=gold,
                       answer=choices[gold], metadata={"icl_task": "multiple_choice"})


def _cot(rationale: str, answer: str) -> str:
    # FLAN v2's CoT targets read "<rationale> So the answer is <answer>."; we keep that sentence (without
    # adding a final period, since answers such as "(C)" or "5(√3 + 1)" carry their own form).
    return f"{rationale.strip()} So the answer is {answer.strip()}"


def _flan_cot_units(ctx: _Ctx) -> Iterator[_Unit]:
    # Not csv: the fields hold bare double quotes (every CREAK line), so only split on tabs.
    for ln, text, err in _iter_lines(ctx.path, ctx.budget):
        if err is not None:
            yield _Unit(ln, ln, f"line {ln}", error=err)
        elif text.strip():
            yield _Unit(ln, ln, f"line {ln}", text.rstrip("\r\n").split("\t"))


@_format("flan_cot", read=_flan_cot_units)
def _flan_cot(r: _Row) -> Iterable[Record]:
    """FLAN v2 CoT TSV, no header: question \\t answer \\t rationale with newlines escaped as a literal
    backslash-n (unescaped here, as FLAN's own preprocessing does). response = rationale + " So the answer
    is " + answer; answer = answer; subtask = file stem without "_train"."""
    fields = r.obj
    if len(fields) != 3:
        raise r.err(f"has {len(fields)} tab-separated fields, expected 3 (question, answer, rationale)")
    q, a, rat = (f.replace("\\n", "\n") for f in fields)
    for name, v in (("question", q), ("answer", a), ("rationale", rat)):
        if not v.strip():
            raise r.err(f"field is empty; fill it in or drop the line ({LENIENT_HINT})", name)
    sub = r.ctx.stem[: -len("_train")] if r.ctx.stem.endswith("_train") else r.ctx.stem
    yield r.record(q, _cot(rat, a), task="flan_cot", subtask=sub, answer=a.strip(),
                   raw={"question": fields[0], "answer": fields[1], "rationale": fields[2]})


def _bbh_units(ctx: _Ctx) -> Iterator[_Unit]:
    doc = _read_json_doc(ctx)
    if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
        raise DataError('expected a BBH file {"canary": ..., "examples": [{input, target}]}; check the format '
                        f'({FMT_HINT})',
                        path=str(ctx.path), field="examples")
    for i, ex in enumerate(doc["examples"]):
        yield _Unit(i, None, f"example {i}", ex)


@_format("bbh", read=_bbh_units)
def _bbh(r: _Row) -> Iterable[Record]:
    """BIG-Bench Hard {canary, examples: [{input, target}]}: task "bbh", subtask = file stem,
    response = answer = target. The CoT exemplars: :func:`load_bbh_cot_prompt` / :func:`bbh_cot_exemplars`."""
    target = r.text("target")
    yield r.record(r.text("input"), target, task="bbh", subtask=r.ctx.stem, answer=target.strip())


_MMLU_LETTERS = ("A", "B", "C", "D")


def _mmlu_subject(stem: str) -> str:
    return re.sub(r"_(dev|val|test|train)$", "", stem)


@_format("mmlu", read=lambda ctx: _read_csv(ctx, ",", header=False))
def _mmlu(r: _Row) -> Iterable[Record]:
    """MMLU CSV without a header: question,A,B,C,D,answer_letter. Prompt in the Hendrycks layout
    (subject line, question, lettered options, "Answer:"); response = answer = the letter; gold = index."""
    row = r.obj
    if len(row) != 6:
        raise r.err(f"has {len(row)} fields, expected 6 (question, A, B, C, D, answer letter)")
    question, *choices, letter = row
    letter = letter.strip()
    if letter not in _MMLU_LETTERS:
        raise r.err(f"answer is {letter!r}, expected one of A, B, C, D", "answer")
    if not question.strip():
        raise r.err(f"field is empty; fill it in or drop the row ({LENIENT_HINT})", "question")
    subject = _mmlu_subject(r.ctx.stem)
    prompt = (f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
              f"\n\n{question.strip()}\n" + "".join(f"{k}. {c}\n" for k, c in zip(_MMLU_LETTERS, choices))
              + "Answer:")
    yield r.record(prompt, letter, task="mmlu", subtask=subject, answer=letter, choices=tuple(choices),
                   gold=_MMLU_LETTERS.index(letter), metadata={"question": question},
                   raw=dict(zip(("question", "A", "B", "C", "D", "answer"), row)))


_TYDI_LANGS = ("arabic", "bengali", "english", "finnish", "indonesian", "korean", "russian", "swahili", "telugu")


def _tydiqa_units(ctx: _Ctx) -> Iterator[_Unit]:
    doc = _read_json_doc(ctx)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError('expected SQuAD-style JSON {"data": [{"title", "paragraphs": [...]}]}; check the format '
                        f'({FMT_HINT})',
                        path=str(ctx.path), field="data")
    n = 0
    for a, art in enumerate(doc["data"]):
        paras = art.get("paragraphs") if isinstance(art, dict) else None
        if not isinstance(paras, list):
            yield _Unit(n, None, f"article {a}", error=DataError(f"article {a}: 'paragraphs' is not a list",
                                                                  path=str(ctx.path), field="paragraphs"))
            n += 1
            continue
        for p, para in enumerate(paras):
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(qas, list) or not isinstance(para.get("context"), str):
                yield _Unit(n, None, f"article {a} paragraph {p}", error=DataError(
                    f"article {a} paragraph {p}: needs a 'context' text and a 'qas' list", path=str(ctx.path),
                    field="qas"))
                n += 1
                continue
            for q in qas:
                qid = q.get("id") if isinstance(q, dict) else None
                where = f"question {qid}" if isinstance(qid, str) else f"article {a} paragraph {p} question {n}"
                yield _Unit(n, None, where, {"title": art.get("title"), "context": para["context"],
                                             **(q if isinstance(q, dict) else {"qa": q})})
                n += 1


@_format("tydiqa", read=_tydiqa_units)
def _tydiqa(r: _Row) -> Iterable[Record]:
    """TyDi QA GoldP (SQuAD 1.1 JSON): one record per question, prompt = passage + question, answer and
    response = the first answer text, metadata keeps all answers; subtask = language (file name or id)."""
    d = r.as_dict()
    answers = r.value("answers", (list,), "a list of {text, answer_start}")
    texts = [a.get("text") for a in answers if isinstance(a, dict)]
    if not texts or not isinstance(texts[0], str) or not texts[0].strip():
        raise r.err(f"has no answer text; every GoldP question needs one ({LENIENT_HINT})", "answers")
    question, context = r.text("question"), r.text("context")
    qid = d.get("id")
    lang = next((l for l in _TYDI_LANGS if r.ctx.stem.lower().startswith(l)), None)
    if lang is None and isinstance(qid, str) and "-" in qid:
        lang = qid.split("-", 1)[0]
    prompt = ("Answer the following question based on the information in the given passage.\n\n"
              f"Passage: {context}\nQuestion: {question}\nAnswer:")
    yield r.record(prompt, texts[0], task="tydiqa", subtask=lang, own_id=qid, answer=texts[0],
                   metadata={"answers": texts, "answer_starts": [a.get("answer_start") for a in answers
                                                                 if isinstance(a, dict)],
                             "title": d.get("title"), "language": lang})


# ---------------------------------------------------------------------------- generic / mapped
_MAPPING_KEYS = ("prompt", "response", "id", "task", "subtask", "system", "answer")
_PROMPT_GUESS = ("prompt", "instruction", "question", "input", "query")
_RESPONSE_GUESS = ("response", "output", "completion", "answer", "target")


def _mapping(ctx: _Ctx, names: list[str]) -> dict[str, str]:
    return dict(ctx.columns) if ctx.columns is not None else _guess_mapping(names)


def _guess_mapping(names: list[str]) -> dict[str, str]:
    lower = {n.lower(): n for n in names}
    m = {}
    for key, guesses in (("prompt", _PROMPT_GUESS), ("response", _RESPONSE_GUESS)):
        hit = next((lower[g] for g in guesses if g in lower and lower[g] not in m.values()), None)
        if hit is not None:
            m[key] = hit
    if "id" in lower:
        m["id"] = lower["id"]
    return m


def _check_mapping(ctx: _Ctx, names: list[str]) -> None:
    if not any(names):
        raise DataError("the header row is empty; the first row must name the columns", path=str(ctx.path), line=1)
    mapping = _mapping(ctx, names)
    unknown = sorted(set(mapping) - set(_MAPPING_KEYS))
    if unknown:
        raise DataError(f"the column mapping has unknown key(s) {', '.join(map(repr, unknown))}; use "
                        f"{', '.join(_MAPPING_KEYS)}", path=str(ctx.path))
    have = ", ".join(repr(n if len(n) <= 40 else n[:37] + "...") for n in names[:20])
    if "prompt" not in mapping:
        raise DataError(f"no prompt column; the header has {have}. Name the columns to use: {COLUMNS_HINT}",
                        path=str(ctx.path), line=1)
    missing = [c for c in mapping.values() if c not in names]
    if missing:
        raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; the header has {have}. Fix "
                        "columns= to name existing columns", path=str(ctx.path), line=1)


def _mapped(r: _Row) -> Iterable[Record]:
    """Objects or rows read through a column mapping: prompt (required), response (optional: without it
    the records are prompt-only), id, task, subtask, system, answer. Other columns go to metadata."""
    d = r.as_dict()
    m = _mapping(r.ctx, list(d))
    if "prompt" not in m:
        raise r.err(f"no prompt field among {', '.join(map(repr, d))}; name the fields to use: {COLUMNS_HINT}")
    get = {k: r.text(c, required=k in ("prompt", "response")) for k, c in m.items()}
    used = set(m.values())
    meta: dict[str, Any] = {k: v for k, v in d.items() if k not in used}
    if "response" not in m:
        meta["prompt_only"] = True
    return [r.record(get["prompt"], get.get("response"), task=get.get("task") or r.ctx.source,
                     own_id=get.get("id") or None, subtask=get.get("subtask") or None,
                     system=get.get("system") or None, answer=get.get("answer") or None, metadata=meta)]


FORMATS["csv"] = Format("csv", lambda ctx: _read_csv(ctx, ",", header=True), _mapped,
                        "CSV with a header row, read through columns= (default: guessed from the names). "
                        + (_mapped.__doc__ or ""))
FORMATS["tsv"] = Format("tsv", lambda ctx: _read_csv(ctx, "\t", header=True), _mapped,
                        "TSV with a header row, as csv. " + (_mapped.__doc__ or ""))
FORMATS["mapped"] = Format("mapped", _read_json_items, _mapped,
                           "JSON list / JSONL objects read through columns=. " + (_mapped.__doc__ or ""))


@_format("records")
def _records(r: _Row) -> Iterable[Record]:
    """This package's own JSONL (:func:`save_records_jsonl`): Record.to_json objects."""
    d = r.as_dict()
    for k in ("id", "source", "task"):
        r.text(k)
    try:
        messages = check_messages(r.value("messages", (list,), "a list of messages"))
        rec = Record.from_json({**d, "messages": messages})
    except DataError as exc:
        raise r.err(exc.reason, exc.field) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise r.err(f"not a saved record ({type(exc).__name__}: {exc})") from None
    return [rec]


# ============================================================================ detection
def _sniff_object(obj: Any, path: Path) -> str:
    if isinstance(obj, str):
        return "text_lines"
    if not isinstance(obj, dict):
        raise DataError(f"cannot tell the format: the first record is {_kind(obj)}; give the format ({FMT_HINT}): "
                        f"one of {', '.join(FORMATS)}", path=str(path))
    k = set(obj)
    if {"id", "source", "task", "messages"} <= k:
        return "records"
    if isinstance(obj.get("examples"), list):
        return "bbh"
    if isinstance(obj.get("data"), list):
        return "tydiqa"
    if "messages" in k or "conversations" in k:
        return "chat"
    if "message_tree_id" in k:
        return "oasst_tree"
    if {"message_id", "text", "role"} <= k:
        return "oasst_message"
    if {"instruction", "instances"} <= k:
        return "self_instruct"
    if {"instruction", "output", "answer"} <= k:
        return "llm_adapters"
    if "instruction" in k and ("output" in k or "response" in k):
        return "alpaca"
    if "prompt" in k and ("completion" in k or "response" in k):
        t0 = any(p.name == "data_per_template" or p.name.lower().startswith("t0") for p in path.parents)
        return "t0" if t0 else "prompt_completion"
    if {"question", "answer"} <= k:
        return "gsm8k"
    if {"query", "choices", "gold"} <= k or "context_options" in k or {"context", "chain_of_thought"} <= k:
        return "foundry_eval"
    keys = ", ".join(repr(x) for x in sorted(map(str, k))[:12]) + (", ..." if len(k) > 12 else "")
    raise DataError(f"cannot tell the format from the keys [{keys}]; give the format ({FMT_HINT}): one of "
                    f"{', '.join(FORMATS)}, or mapped with the fields named: {COLUMNS_HINT}", path=str(path))


def _is_text_table(path: Path) -> bool:
    """A .json file holding one object whose values are all strings (a lookup table of texts)."""
    if ".json" not in path.suffixes or path.suffix == ".jsonl":
        return False
    try:
        obj = json.loads(_read_text(path))
    except (DataError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, str) for v in obj.values())


def _first_csv_row(path: Path, delimiter: str) -> list[str] | None:
    """The first non-empty row, reading only as many lines as it spans (quoted fields hold newlines)."""
    def texts() -> Iterator[str]:
        for _, text, err in _iter_lines(path):
            if err is not None:
                return
            yield text
    try:
        return next((r for r in csv.reader(texts(), delimiter=delimiter) if r), None)
    except csv.Error:
        return None


def detect_format(path: str | Path) -> str:
    """The format name for a file (by extension, then by the first record's keys), or for a folder
    whose data files all share one format. Raises DataError when it cannot tell."""
    p = Path(path)
    if p.is_dir():
        found = {f: detect_format(f) for f in _data_files(p)}
        kinds = sorted(set(found.values()))
        if len(kinds) > 1:
            raise DataError(f"the folder mixes formats ({', '.join(kinds)}); load its files one by one (the format "
                            "is detected per file) or point at one subfolder", path=str(p))
        return kinds[0]
    if not p.exists():
        raise DataError("no such file or folder; check the path", path=str(p))
    suffix = _suffix(p)
    if suffix == ".csv":
        row = _first_csv_row(p, ",")
        return "mmlu" if row and len(row) == 6 and row[-1].strip() in _MMLU_LETTERS else "csv"
    if suffix == ".tsv":
        fields = None
        for _, text, err in _iter_lines(p):
            if err is None and text.strip():
                fields = text.rstrip("\r\n").split("\t")
                break
        looks_header = fields is not None and all(len(f) <= 40 and "\\n" not in f for f in fields)
        return "flan_cot" if fields is not None and len(fields) == 3 and not looks_header else "tsv"
    first = None
    for _, text, err in _iter_lines(p):
        if err is not None:
            # A first line over the line cap in a JSON file: the whole-file read below says it is too big.
            if not (isinstance(err, InputLimitError) and (suffix == ".json" or _first_char(p) == "[")):
                raise err
            first = "["
            break
        if text.strip():
            first = text.strip()
            break
    if first is None:
        raise DataError("the file is empty; nothing to load", path=str(p))
    if first.startswith("[") or first == "{" or suffix == ".json":
        text = _read_text(p)
        try:
            obj, _ = json.JSONDecoder().raw_decode(text, _WS.match(text).end())
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{_json_error(exc)}; fix the file or give the format ({FMT_HINT})", path=str(p)) from None
        if isinstance(obj, list):
            if not obj:
                raise DataError("the JSON list is empty; nothing to load", path=str(p))
            obj = obj[0]
        return _sniff_object(obj, p)
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{_json_error(exc)} on the first line; cannot tell the format. Give it ({FMT_HINT}) "
                        "or fix the file", path=str(p), line=1) from None
    return _sniff_object(obj, p)


# ============================================================================ loading
def iter_records(path: str | Path, fmt: str | None = None, *, lenient: bool = False,
                 columns: dict[str, str] | None = None, source: str | None = None, task: str | None = None,
                 limit: int | None = None, report: LoadReport | None = None) -> Iterator[Record]:
    """Stream records from a file or a folder of data files (sorted, recursive).

    fmt: a :data:`FORMATS` name, or None to detect per file. columns: the mapping for csv/tsv/mapped
    ({"prompt": col, "response": col, "id": col, ...}). source / task override the defaults (source =
    the dataset folder name). limit: stop after this many records. report: a :class:`LoadReport` to
    fill in as the stream goes (load_records passes one).
    """
    p = Path(path)
    rep = report if report is not None else LoadReport(path=str(p), fmt=fmt or "")
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", path=str(p))
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of records, got {limit}")
    if not p.exists():
        raise DataError("no such file or folder; check the path", path=str(p))
    folder = p.is_dir()
    files = _data_files(p) if folder else [p]
    budget = _Budget()  # one per load: a folder's files share its caps
    max_records = budget.limits.max_records
    seen: dict[str, str] = {}
    fmts: list[str] = []
    for f in files:
        try:
            f_fmt = fmt or detect_format(f)
        except DataError as exc:
            if folder and fmt is None and _is_text_table(f):
                # e.g. mmlu/lib_prompt/mmlu-cot.json ({subject: CoT prompt}) beside mmlu/data: a prompt
                # library, not records; skipped (and listed) even in a strict load, like a metadata csv.
                rep.skipped_files.append((str(f), "a JSON object of named texts (a prompt library), not records"))
                continue
            if not (folder and lenient):
                raise
            rep.skipped_files.append((str(f), str(exc)))
            continue
        if folder and fmt is None and columns is None and f_fmt in ("csv", "tsv"):
            row = _first_csv_row(f, "," if f_fmt == "csv" else "\t") or []
            if "prompt" not in _guess_mapping([c.strip() for c in row]):
                # A table with no prompt column (e.g. flan_collection_info.csv) is metadata, not data.
                rep.skipped_files.append((str(f), f"a {f_fmt} table with no prompt column; load it on its own "
                                                  f"with the columns named: {COLUMNS_HINT}"))
                continue
        if f_fmt not in fmts:
            fmts.append(f_fmt)
        rep.fmt = ",".join(fmts)
        spec = FORMATS[f_fmt]
        src = source or _default_source(f)
        stem = _stem(f)
        generic = stem.lower() in _GENERIC_DIRS and f.parent.name not in (src, "")
        ctx = _Ctx(path=f, stem=stem, id_stem=f"{f.parent.name}/{stem}" if generic else stem, source=src,
                   task=task, fmt=f_fmt, columns=dict(columns) if columns is not None else None, budget=budget)
        rep.files.append(str(f))
        budget.check_memory(0, f, None)  # the starting point
        for unit in spec.read(ctx):
            rep.n_read += 1
            budget.check_memory(rep.n_read, f, unit.line)
            if rep.n_read > max_records:
                lim = budget.limits
                raise InputLimitError(
                    ("" if unit.line is not None else f"{unit.where}: ")
                    + f"the load passes {lim.describe('max_records')} records (lines, rows or list elements, skipped "
                    f"ones included), the most one load reads ({lim.env('max_records')}). Load a smaller file or "
                    f"folder, or raise the limit, e.g. {lim.raise_hint('max_records')}", path=str(f),
                    line=unit.line, limit="max_records")
            row = _Row(unit.obj, unit, ctx)
            try:
                if unit.error is not None:
                    raise unit.error
                recs = _convert(spec, row)
                new: dict[str, str] = {}
                for rec in recs:
                    if rec.id in seen or rec.id in new:
                        first = seen.get(rec.id) or new[rec.id]
                        raise row.err(f"duplicate id {rec.id!r} (first seen at {first}); give each record its "
                                      f"own id or drop the duplicate ({LENIENT_HINT})", "id")
                    new[rec.id] = f"{f.name} {unit.where}"
            except DataError as exc:
                if not lenient:
                    raise
                rep.skipped.append((unit.line if unit.line is not None else unit.key, str(exc)))
                continue
            seen.update(new)
            for rec in recs:
                rep.n_loaded += 1
                yield rec
                if limit is not None and rep.n_loaded >= limit:
                    rep.truncated = True
                    return
    if rep.n_loaded == 0:
        detail = f"; {len(rep.skipped)} skipped, the first: {rep.skipped[0][1]}" if rep.skipped else ""
        raise DataError(f"no records were loaded (format {rep.fmt}){detail}. Check the file and its format "
                        f"({FMT_HINT})",
                        path=str(p))


def _convert(spec: Format, row: _Row) -> list[Record]:
    """Run a converter; any structural surprise it did not anticipate still becomes a DataError."""
    try:
        return list(spec.convert(row))
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise row.err(f"unexpected structure for format {spec.name!r} ({type(exc).__name__}: {exc}); check "
                      "fmt= or fix the record") from None


def load_records(path: str | Path, fmt: str | None = None, *, lenient: bool = False,
                 columns: dict[str, str] | None = None, source: str | None = None, task: str | None = None,
                 limit: int | None = None) -> LoadResult:
    """Load every record of a file or folder into memory; see :func:`iter_records` for the arguments."""
    report = LoadReport(path=str(path), fmt=fmt or "")
    records = list(iter_records(path, fmt, lenient=lenient, columns=columns, source=source, task=task,
                                limit=limit, report=report))
    return LoadResult(records, report)


# ============================================================================ BBH CoT prompts
def _bbh_prompt_path(task_or_path: str | Path) -> Path:
    p = Path(task_or_path)
    if p.is_file():
        return p
    root = shared_data_root()
    folder = root / "bbh" / "cot-prompts" if root is not None else None
    if folder is not None and (folder / f"{p.name}.txt").is_file():
        return folder / f"{p.name}.txt"
    known = sorted(x.stem for x in folder.glob("*.txt")) if folder is not None and folder.is_dir() else []
    raise DataError(f"no BBH CoT prompt for {str(task_or_path)!r}; pass a cot-prompts/<task>.txt path"
                    + (f" or one of: {', '.join(known)}" if known else ""), path=str(task_or_path))


def load_bbh_cot_prompt(task_or_path: str | Path) -> str:
    """The few-shot CoT prompt of a BBH task (a task name or a cot-prompts/<task>.txt path).

    The files start with the BIG-bench canary line and a "-----" separator; both are dropped (the canary
    must not reach training data). The task description line(s) before the first "Q:" are kept, as in
    the BBH and open-instruct evaluation code.
    """
    path = _bbh_prompt_path(task_or_path)
    lines = _read_text(path).replace("\r\n", "\n").split("\n")
    if "-----" in lines[:5]:
        lines = lines[lines.index("-----") + 1:]
    lines = [l for l in lines if "canary GUID" not in l]
    text = "\n".join(lines).strip()
    if "Q:" not in text:
        raise DataError("has no 'Q:' exemplar; is it a BBH cot-prompts file?", path=str(path))
    return text


_BBH_QA = re.compile(r"^Q:\s*(.*?)\nA:\s*(.*?)(?=\n+Q:|\Z)", re.S | re.M)


def bbh_cot_exemplars(task_or_path: str | Path, *, source: str = "bbh") -> list[Record]:
    """The 3 CoT exemplars of a BBH task as records (the LESS target set): prompt = the question,
    response = the step-by-step answer, answer = what follows "So the answer is"."""
    path = _bbh_prompt_path(task_or_path)
    task = path.stem
    out = []
    for i, m in enumerate(_BBH_QA.finditer(load_bbh_cot_prompt(path))):
        q, a = m.group(1).strip(), m.group(2).strip()
        final = re.search(r"So the answer is (.*?)\.?\s*$", a, re.S)
        out.append(simple(f"{source}:cot-{task}:{i}", q, a, source=source, task="bbh", subtask=task,
                          answer=final.group(1).strip() if final else None, fmt="bbh_cot",
                          metadata={"exemplar": i}, raw={"question": q, "answer": a}))
    if not out:
        raise DataError("found no 'Q: ... A: ...' exemplars", path=str(path))
    return out


# ============================================================================ saving / export
def _write_jsonl(path: str | Path, objects: Iterable[Any]) -> Path:
    """Atomic JSONL write (gzip when the name ends in .gz, with a fixed mtime so bytes are reproducible)."""
    final = Path(path)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fb:
            out = gzip.GzipFile(filename="", mode="wb", fileobj=fb, mtime=0) if final.name.endswith(".gz") else fb
            try:
                for obj in objects:
                    out.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
            finally:
                if out is not fb:
                    out.close()
    return final


def save_records_jsonl(records: Iterable[Record], path: str | Path) -> Path:
    """Save records losslessly (Record.to_json per line); read back with :func:`read_records_jsonl`."""
    return _write_jsonl(path, (r.to_json() for r in records))


def read_records_jsonl(path: str | Path, *, lenient: bool = False) -> list[Record]:
    """Records saved by :func:`save_records_jsonl`."""
    return load_records(path, "records", lenient=lenient).records


def export_original(records: Iterable[Record], path: str | Path) -> Path:
    """Each record's original object (``raw``) as one JSONL line, for a selection in its source format."""
    def raws() -> Iterator[Any]:
        for r in records:
            if r.raw is None:
                raise DataError(f"record {r.id!r} has no original object to export; use export_chat instead")
            yield r.raw
    return _write_jsonl(path, raws())


def export_chat(records: Iterable[Record], path: str | Path) -> Path:
    """OpenAI-style chat JSONL (Record.to_chat per line)."""
    return _write_jsonl(path, (r.to_chat() for r in records))


def data_hash(records: Iterable[Record]) -> str:
    """sha256 over the canonical JSON of each record's id and messages, in order (order matters: a
    selection is a sequence). Metadata and raw do not enter it."""
    return hash_strings(canonical_json({"id": r.id, "messages": list(r.messages)}) for r in records)
