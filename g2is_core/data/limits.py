"""How much one data load may read: the caps that keep memory bounded whatever the input.

Why caps at all: the loaders hold every record of a load in memory, and a file is untrusted. A 1 MB
gzip member inflates to 1 GiB, /dev/zero never ends, and a JSON value like ``[{},{},...]`` costs
about 21 bytes of Python objects per input byte. Before these caps, `g2is data inspect` on a 1 MB
.gz of one 1 GiB line peaked at 3.3 GB, on /dev/zero at 3.2 GB in 9 s, and the same bomb uploaded
in the app took the server past 7 GB.

The four caps (defaults here and only here; docs/reliability.md "Limits" has the measured peaks):

- ``max_bytes``: decompressed bytes read in one load (a file, or every file of a folder).
- ``max_line_bytes``: the largest piece parsed at once: one line of JSONL/CSV/TSV, or a whole
  JSON file (a JSON list or document is parsed as one value, so the whole file is that piece).
- ``max_records``: records read in one load (lines, rows or list elements, skipped ones included):
  a tiny record (``{"prompt":"a","completion":"b"}``, 32 bytes) costs about 1.2 KB as a Record.
- ``max_memory``: how much the process's resident memory may grow during one load. Why this one
  too: the byte caps bound the input, not what Python makes of it; a text with one emoji is stored
  at 4 bytes per character and a record of many tiny JSON values costs up to ~20x its bytes, so
  only a check of the memory itself bounds "any input". Checked every 256 records or 2 MiB read;
  the overshoot between checks is bounded by the line cap.

Each can be raised (or lowered) with an environment variable, read at every load, so the CLI, the
app (`g2is app`, whose jobs inherit it) and the tests set it the same way: ``G2IS_MAX_DATA_BYTES``,
``G2IS_MAX_LINE_BYTES``, ``G2IS_MAX_RECORDS``, ``G2IS_MAX_LOAD_MEMORY``. Sizes take a unit: ``512M``, ``2G``, ``64K`` (powers
of 1024) or plain bytes. Why environment variables and no flag: every command that reads data
(inspect, warmup, grads, bench, impact, the app) honours them without a flag on each.

Only regular files are data: a FIFO, a device (/dev/zero), a socket or a directory where a file is
expected is refused with a sentence before a byte is read (:func:`g2is_core.data.loaders`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from .records import DataError

__all__ = ["InputLimits", "InputLimitError", "input_limits", "parse_size", "human_size", "resident_bytes"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class InputLimits:
    """The caps of one data load (see the module docstring). ``metadata["env"]`` names the variable
    that overrides each field; ``help`` is what the docs and error messages say it is."""

    max_bytes: int = field(default=128 * MiB, metadata={
        "env": "G2IS_MAX_DATA_BYTES",
        "help": "decompressed bytes read in one load (a file, or all files of a folder)"})
    max_line_bytes: int = field(default=8 * MiB, metadata={
        "env": "G2IS_MAX_LINE_BYTES",
        "help": "the largest piece parsed at once: a JSONL/CSV/TSV line, or a whole JSON list/document file"})
    max_records: int = field(default=250_000, metadata={
        "env": "G2IS_MAX_RECORDS",
        "help": "records (lines, rows or list elements, skipped ones included) read in one load"})
    max_memory: int = field(default=512 * MiB, metadata={
        "env": "G2IS_MAX_LOAD_MEMORY",
        "help": "growth of the process's resident memory during one load (checked every 256 records or 2 MiB)"})

    @staticmethod
    def env(name: str) -> str:
        """The environment variable of field ``name``."""
        return next(f.metadata["env"] for f in fields(InputLimits) if f.name == name)

    def describe(self, name: str) -> str:
        """e.g. "128 MiB (G2IS_MAX_DATA_BYTES)": a cap as an error message names it."""
        v = getattr(self, name)
        return f"{v:,}" if name == "max_records" else human_size(v)

    def raise_hint(self, name: str) -> str:
        """How to raise a cap, in the words of a shell (twice the current value): "G2IS_MAX_DATA_BYTES=256M"."""
        v = getattr(self, name) * 2
        if name != "max_records":
            v = next((f"{v // size}{u}" for u, size in (("G", GiB), ("M", MiB), ("K", KiB)) if v % size == 0), str(v))
        return f"{self.env(name)}={v}"


class InputLimitError(DataError):
    """A load stopped at a cap. ``limit``: the :class:`InputLimits` field ("max_bytes", ...); the message
    names the file, the line, the cap and the variable that raises it."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, limit: str):
        super().__init__(message, path=path, line=line)
        self.limit = limit


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.I)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """A positive size: "512M", "2G", "64k", "1048576" (units are powers of 1024; "MB"/"MiB" accepted).
    Raises ValueError with a sentence naming ``what`` (the variable) when it is not one."""
    m = _SIZE.match(text or "")
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{what}={text!r} is not a positive size; write bytes or a number with K, M or G "
                         "(powers of 1024), e.g. 256M")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def human_size(n: int) -> str:
    """1024 -> "1 KiB", 134217728 -> "128 MiB", 1000 -> "1000 bytes"."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def input_limits(environ: "os._Environ[str] | dict[str, str] | None" = None) -> InputLimits:
    """The caps in force: the defaults, each overridden by its environment variable when set.
    Raises ValueError naming the variable when a value is not a positive number."""
    env = os.environ if environ is None else environ
    values = {}
    for f in fields(InputLimits):
        text = env.get(f.metadata["env"], "").strip()
        if not text:
            continue
        if f.name == "max_records":
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{f.metadata['env']}={text!r} is not a positive whole number of records")
            values[f.name] = int(text)
        else:
            values[f.name] = parse_size(text, f.metadata["env"])
    return InputLimits(**values)


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc/self/statm; elsewhere the peak so far, which only
    makes the check stricter)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
