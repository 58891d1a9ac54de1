"""One grammar for naming data: :class:`DataSpec` (the CLI's ``--data``, experiment specs, the app).

A data spec is a short text, parsed once into a typed, frozen :class:`DataSpec`, loaded with
:meth:`DataSpec.load` into :class:`LoadedData` (records, their data hash, a one-line description,
the file loader's report). The grammar (README.md, "Naming data", is the same table)::

    builtin:pool                   the mixed candidate pool (train split, shuffled)
    builtin:targets                every composite's target records (dev split), in name order
    builtin:targets:<composite>    one composite's target records (dev split)
    builtin:task:<task>            n records of one suite task (train split unless split= says)
    bbh-cot:<task>                 the 3 chain-of-thought exemplars of a BBH task (shared data)
    shared:<relative path>         a file or folder under the shared data root (../shared/data)
    <path>                         a file or folder (any format :mod:`.loaders` reads)

then, for files, an optional row range ``[a:b]`` (Python slice of the loaded records), then
options ``?key=value&key=value`` (:data:`OPTIONS`: seed, n, split, per_task, distractors,
per_composite, tasks, fmt, lenient, columns, limit). An option the kind has no use for is an error,
so ``builtin:pool?fmt=csv`` says what builtin:pool takes instead of being ignored.

Why one grammar: the CLI, the experiment specs and the app each had their own (``builtin:targets:X``
in one, ``builtin:X`` in the other, roots and ``shared:`` in a third), so a pool named in one place
could not be pasted into another. Old spellings stay valid:

- ``builtin:<composite>`` (the experiment specs' ``select:``) is the short spelling of
  ``builtin:targets:<composite>``, here and everywhere else: it names the composite's *target*
  records (dev split). The *evaluation* of that task is a different thing with the same text: an
  eval name (``eval: builtin:add_reverse``, the test split) from the eval registry, never a data spec.
  A bare ``builtin:<basic task>`` (``builtin:add``) is refused with a sentence that names
  ``builtin:task:add`` and the eval.
- ``--fmt``, ``--data-seed`` and ``--limit`` fill the options the text leaves unset (:meth:`fill`).

Paths. A relative ``<path>`` is resolved against ``base`` (:meth:`path`): the current directory
for the CLI, the project root for experiment specs; the app confines paths to its allowed roots
itself (:func:`g2is_core.app.kit.resolve_data_spec`) and hands an absolute path here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .records import DataError, Record

__all__ = ["DataSpec", "LoadedData", "KINDS", "OPTIONS", "GRAMMAR", "TASK_N"]

TASK_N = 100  # records of builtin:task:<task> when n= is not given (the Data page's default too)
GRAMMAR = ("builtin:pool, builtin:targets, builtin:targets:<composite>, builtin:task:<task>, bbh-cot:<task>, "
           "shared:<relative path> or a file/folder path, each with ?key=value options "
           "(README.md, 'Naming data')")

# kind -> (the text that names it, what it is). The order is the grammar's table (README, errors).
KINDS: dict[str, tuple[str, str]] = {
    "pool": ("builtin:pool", "the built-in mixed candidate pool: every task's train records plus distractors, "
                             "shuffled"),
    "targets": ("builtin:targets[:<composite>]", "the dev-split target records of every composite (in name "
                                                 "order), or of one; builtin:<composite> is the short spelling"),
    "task": ("builtin:task:<task>", "n records of one built-in task (any kind), train split unless split= says"),
    "bbh-cot": ("bbh-cot:<task>", "the 3 chain-of-thought exemplars of a BBH task, from "
                                  "<shared>/bbh/cot-prompts/<task>.txt (LESS's BBH target set)"),
    "shared": ("shared:<relative path>[a:b]", "a file or folder under the shared data root (../shared/data or "
                                              "$G2IS_SHARED_DATA)"),
    "file": ("<path>[a:b]", "a file or folder in any format the loaders read (detected unless fmt= says)"),
}
_BUILTIN = ("pool", "targets", "task")
_FILES = ("shared", "file")


def _int(lo: int | None) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise ValueError(f"{s!r} is not a whole number") from None
        if lo is not None and v < lo:
            raise ValueError(f"{v} is below {lo}")
        return v
    return parse


def _bool(s: str) -> bool:
    low = s.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{s!r} is not true or false")


def _names(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _columns(s: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in _names(s):
        key, sep, col = part.partition(":")
        if not sep or not key.strip() or not col.strip():
            raise ValueError(f"{part!r} is not key:column (e.g. columns=prompt:question,response:answer)")
        out.append((key.strip(), col.strip()))
    return tuple(out)


@dataclass(frozen=True)
class Option:
    """One ``?key=value`` option: the kinds it applies to, how its text parses and prints."""
    kinds: tuple[str, ...]
    parse: Callable[[str], Any]
    help: str
    show: Callable[[Any], str] = str


# The registry that drives parsing, printing, validation and the README table. Field order = text order.
OPTIONS: dict[str, Option] = {
    "seed": Option(_BUILTIN, _int(None), "seed of the built-in suite (default 0)"),
    "n": Option(("targets", "task"), _int(1), f"records per target (default 24) or per task (default {TASK_N})"),
    "split": Option(("targets", "task"), str, "train, dev or test (targets: dev or test; default dev; task: train)"),
    "per_task": Option(("pool",), _int(0), "pool records per task (default 120)"),
    "distractors": Option(("pool",), _int(0), "pool distractor instructions (default 360)"),
    "per_composite": Option(("pool",), _int(0), "pool records per composite task (default: per_task)"),
    "tasks": Option(("pool",), _names, "comma-separated tasks the pool draws from (default: all)", ",".join),
    "fmt": Option(_FILES, str, "loader format name (default: detected per file)"),
    "lenient": Option(_FILES, _bool, "skip bad lines and list them instead of stopping (default false)",
                      lambda v: "true" if v else "false"),
    "columns": Option(_FILES, _columns, "column mapping for csv/tsv/mapped: columns=prompt:question,response:answer",
                      lambda v: ",".join(f"{k}:{c}" for k, c in v)),
    "limit": Option(tuple(KINDS), _int(0), "keep only the first N records (0 = all)"),
}
_ROWS = re.compile(r"\[(-?\d*):(-?\d*)\]$")


@dataclass(frozen=True)
class LoadedData:
    """What :meth:`DataSpec.load` gives: the records, their :func:`~.loaders.data_hash`, a one-line
    description (the CLI prints it, a selection run saves it), and the file loader's report
    (None for the built-in suite and BBH exemplars)."""
    records: list[Record]
    data_hash: str
    description: str
    report: Any = None  # loaders.LoadReport for files

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec (module doc). Options left ``None`` take the kind's default, so
    ``str(spec)`` prints only what was said and ``DataSpec.parse(str(spec)) == spec``."""
    kind: str = field(metadata={"help": "one of KINDS: pool, targets, task, bbh-cot, shared, file"})
    name: str = field(default="", metadata={"help": "composite ('' = all targets), task, BBH task, or path text"})
    rows: tuple[int | None, int | None] | None = field(
        default=None, metadata={"help": "files: a [a:b] slice of the loaded records (keeps target rows apart "
                                         "from rows an evaluation uses)"})
    seed: int | None = field(default=None, metadata={"help": OPTIONS["seed"].help})
    n: int | None = field(default=None, metadata={"help": OPTIONS["n"].help})
    split: str | None = field(default=None, metadata={"help": OPTIONS["split"].help})
    per_task: int | None = field(default=None, metadata={"help": OPTIONS["per_task"].help})
    distractors: int | None = field(default=None, metadata={"help": OPTIONS["distractors"].help})
    per_composite: int | None = field(default=None, metadata={"help": OPTIONS["per_composite"].help})
    tasks: tuple[str, ...] | None = field(default=None, metadata={"help": OPTIONS["tasks"].help})
    fmt: str | None = field(default=None, metadata={"help": OPTIONS["fmt"].help})
    lenient: bool | None = field(default=None, metadata={"help": OPTIONS["lenient"].help})
    columns: tuple[tuple[str, str], ...] | None = field(default=None, metadata={"help": OPTIONS["columns"].help})
    limit: int | None = field(default=None, metadata={"help": OPTIONS["limit"].help})

    # ------------------------------------------------------------------ parse / print
    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """The spec a text names; a DataError sentence says what is accepted when it names nothing."""
        raw = (text or "").strip()
        if not raw:
            raise DataError(f"no data named; give {GRAMMAR}")
        head, opts = raw, {}
        q = raw.rfind("?")
        if q >= 0 and "=" in raw[q + 1:]:   # a '?' without key=value after it stays part of a path
            head, opts = raw[:q], _parse_options(raw, raw[q + 1:])
        kind, name, rows = _parse_head(raw, head)
        return cls(kind=kind, name=name, rows=rows, **opts)

    def __str__(self) -> str:
        return self._text(OPTIONS)

    def _text(self, shown: dict[str, Option]) -> str:
        head = {"pool": "builtin:pool", "targets": "builtin:targets" + (f":{self.name}" if self.name else ""),
                "task": f"builtin:task:{self.name}", "bbh-cot": f"bbh-cot:{self.name}",
                "shared": f"shared:{self.name}", "file": self.name}[self.kind]
        if self.rows is not None:
            head += "[" + ("" if self.rows[0] is None else str(self.rows[0])) + ":" + \
                    ("" if self.rows[1] is None else str(self.rows[1])) + "]"
        opts = [f"{k}={o.show(getattr(self, k))}" for k, o in shown.items() if getattr(self, k) is not None]
        return head + ("?" + "&".join(opts) if opts else "")

    def describe(self) -> str:
        """One line: the spec without seed/limit/reading options, then "(seed S)" for the built-in
        suite and "(first N)" under a limit; e.g. ``builtin:pool (seed 0) (first 240)``."""
        shown = {k: o for k, o in OPTIONS.items() if k not in ("seed", "limit", "fmt", "lenient", "columns")}
        out = self._text(shown)
        if self.kind in _BUILTIN:
            out += f" (seed {self.seed or 0})"
        if self.limit:
            out += f" (first {self.limit})"
        return out

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.limit == 0:  # 0 = all, as on the CLI; None prints nothing
            object.__setattr__(self, "limit", None)
        for key, opt in OPTIONS.items():
            if getattr(self, key) is not None and self.kind not in opt.kinds:
                raise DataError(f"{self}: option {key}= does not apply to {KINDS[self.kind][0]}; it takes "
                                f"{', '.join(k for k, o in OPTIONS.items() if self.kind in o.kinds)}")
        if self.rows is not None and self.kind not in _FILES:
            raise DataError(f"{self}: a row range [a:b] applies to files only")
        from . import tasks as T

        if self.kind in ("task", "targets") and self.split is not None:
            allowed = tuple(T.SPLITS) if self.kind == "task" else tuple(s for s in T.SPLITS if s != "train")
            if self.split not in allowed:
                raise DataError(f"{self}: split {self.split!r} is not one of {', '.join(allowed)}"
                                + ("; targets never come from the pool's train split" if self.kind == "targets"
                                   else ""))
        composites = T.task_names("composite")
        if self.kind == "targets" and self.name and self.name not in composites:
            raise DataError(f"{self}: no such target {self.name!r}; use one of {', '.join(composites)} "
                            "(builtin:targets:<composite>)")
        if self.kind == "task" and self.name not in T.TASKS:
            raise DataError(f"{self}: unknown built-in task {self.name!r}; use one of {', '.join(T.TASKS)}")
        if self.kind == "pool" and self.tasks is not None:
            bad = [t for t in self.tasks if t not in T.TASKS]
            if bad:
                raise DataError(f"{self}: unknown task(s) {', '.join(bad)} in tasks=; use {', '.join(T.TASKS)}")
        if self.kind == "pool" and self.name:
            raise DataError(f"builtin:pool takes no name (got {self.name!r}); give options as ?key=value")
        if self.kind in ("bbh-cot", "shared", "file") and not self.name:
            raise DataError(f"{KINDS[self.kind][0]}: the name is missing")
        if self.fmt is not None:
            from .loaders import FORMATS

            if self.fmt not in FORMATS:
                raise DataError(f"{self}: unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")

    # ------------------------------------------------------------------ options from elsewhere
    def fill(self, **options: Any) -> DataSpec:
        """These options where the text left them unset and the kind takes them; others are ignored
        (the CLI's --fmt/--data-seed/--limit apply to whichever kind --data names). Text wins."""
        new = {k: v for k, v in options.items()
               if v is not None and getattr(self, k) is None and self.kind in OPTIONS[k].kinds
               and not (k == "limit" and not v)}
        return replace(self, **new) if new else self

    # ------------------------------------------------------------------ loading
    @property
    def is_path(self) -> bool:
        """True for the kinds that read a file or folder (shared:, a path)."""
        return self.kind in _FILES

    def path(self, base: str | Path | None = None) -> Path:
        """The file or folder of a ``shared:`` or path spec; relative paths join ``base`` (None: the
        current directory). Raises a sentence when ``shared:`` is used without the shared folder."""
        if self.kind == "shared":
            return _shared_root(str(self)) / self.name
        if self.kind != "file":
            raise DataError(f"{self} is built in; it has no path")
        p = Path(self.name)
        return p if p.is_absolute() or base is None else Path(base) / p

    def load(self, base: str | Path | None = None) -> LoadedData:
        """Records of this spec (``base``: where relative paths start, see :meth:`path`).

        Built-in kinds draw from :mod:`.tasks` (deterministic in seed); files go through
        :func:`.loaders.load_records` (strict unless lenient=), then the row range, then the limit.
        Raises DataError when nothing is left."""
        from .loaders import data_hash

        report = None
        if self.kind in _BUILTIN:
            recs = self._builtin()
        elif self.kind == "bbh-cot":
            from .loaders import bbh_cot_exemplars

            recs = bbh_cot_exemplars(_shared_root(str(self)) / "bbh" / "cot-prompts" / f"{self.name}.txt")
        else:
            from .loaders import load_records

            p = self.path(base)
            if not p.exists() and ":" in self.name.split("/")[0]:  # a mistyped kind reads as a path: say both
                raise DataError(f"no such file or folder; if you meant built-in or shared data, name it as {GRAMMAR}",
                                path=self.name)
            res = load_records(p, self.fmt, lenient=bool(self.lenient),
                               columns=dict(self.columns) if self.columns is not None else None)
            recs, report = res.records, res.report
            if self.rows is not None:
                recs = recs[self.rows[0]:self.rows[1]]
        if self.limit:
            recs = recs[: self.limit]
        if not recs:
            raise DataError(f"{self}: no records to use")
        return LoadedData(list(recs), data_hash(recs), self.describe(), report)

    def _builtin(self) -> list[Record]:
        from . import tasks as T

        seed = self.seed or 0
        if self.kind == "pool":
            # Only the options given: make_pool's own defaults stay the one place they are written.
            kw = {k: getattr(self, k) for k in ("per_task", "distractors", "per_composite", "tasks")
                  if getattr(self, k) is not None}
            return list(T.make_pool(seed, **kw).records)
        if self.kind == "targets":
            kw = {k: v for k, v in (("n_per_target", self.n), ("split", self.split)) if v is not None}
            tg = T.make_targets(seed, **kw, **({"tasks": (self.name,)} if self.name else {}))
            return list(tg[self.name]) if self.name else [r for name in sorted(tg) for r in tg[name]]
        return T.make_task_records(self.name, self.n or TASK_N, seed, self.split or "train")


# ----------------------------------------------------------------------------- parsing helpers
def _parse_options(raw: str, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split("&"):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in OPTIONS:
            raise DataError(f"{raw}: unknown option {key!r}; options are {', '.join(OPTIONS)} (?key=value&...)")
        if key in out:
            raise DataError(f"{raw}: option {key}= is given twice")
        try:
            out[key] = OPTIONS[key].parse(value.strip())
        except ValueError as exc:
            raise DataError(f"{raw}: option {key}=: {exc}; {OPTIONS[key].help}") from None
    return out


def _parse_head(raw: str, head: str) -> tuple[str, str, tuple[int | None, int | None] | None]:
    if head.startswith("builtin:"):
        from . import tasks as T

        parts = head.split(":")
        if parts[1:] == ["pool"]:
            return "pool", "", None
        if parts[1] == "targets" and len(parts) <= 3:
            return "targets", parts[2] if len(parts) == 3 else "", None
        if parts[1] == "task" and len(parts) == 3:
            return "task", parts[2], None
        if len(parts) == 2 and parts[1] in T.task_names("composite"):
            return "targets", parts[1], None   # the experiment specs' short spelling (module doc)
        if len(parts) == 2 and parts[1] in T.TASKS:
            t = parts[1]
            raise DataError(f"{raw}: unknown built-in data; {t!r} is a {T.TASKS[t].kind} task, not a target: name "
                            f"its records builtin:task:{t}, a target builtin:targets:<composite> (one of "
                            f"{', '.join(T.task_names('composite'))}). builtin:{t} is also the name of its "
                            "evaluation (test split), which goes where an eval name is asked for (eval: in a spec)")
        raise DataError(f"{raw}: unknown built-in data; use builtin:pool, builtin:targets, "
                        "builtin:targets:<composite> or builtin:task:<task>")
    if head.startswith("bbh-cot:"):
        return "bbh-cot", head.split(":", 1)[1], None
    kind, name = ("shared", head.split(":", 1)[1]) if head.startswith("shared:") else ("file", head)
    m = _ROWS.search(name)
    if m is None:
        return kind, name, None
    lo, hi = (int(g) if g else None for g in m.groups())
    return kind, name[: m.start()], (lo, hi)


def _shared_root(what: str) -> Path:
    from ..workspace import shared_data_root

    root = shared_data_root()
    if root is None:
        raise DataError(f"{what}: needs the shared data folder (../shared/data, or set G2IS_SHARED_DATA), which is "
                        "absent here")
    return root


def options_table() -> list[tuple[str, str, str]]:
    """(option, the kinds it applies to, help) rows, for docs and the app."""
    return [(k, ", ".join(KINDS[kd][0] for kd in o.kinds), o.help) for k, o in OPTIONS.items()]
