"""The method interface: :class:`Method`, :func:`register`, the registry :data:`METHODS`, the
:class:`Context` a method reads and the :class:`Scored` it returns, plus the helpers methods share
(option fields with help text, top-B order, reducing over targets, cached matrices) and the bridge
from an options dataclass to a command line (generated flags, ``key=value`` strings).

A method is ``run(ctx, B, options) -> Scored`` under ``@register(name, description, Options)``;
its module is one line of :mod:`g2is_core.selection.methods` (docs/selection.md, "Adding a method").
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import workspace as ws_mod
from ..data.records import Record
from ..progress import Progress, no_progress
from ..workspace import Workspace, hash_config
from .features import FeatureSet, pair_features


@dataclass
class Scored:
    """What a method returns: ``order`` [n_sel] pool row indices, best first (n_sel <= B), ``scores`` [N]
    a score for every pool row (higher = more relevant), and method-specific ``extra`` artefacts."""

    order: np.ndarray
    scores: np.ndarray
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """Everything a method may read. Methods take what they need and raise a sentence when it is missing."""

    pool: Sequence[Record]
    targets: Sequence[Record]
    train: FeatureSet | None = None
    target: FeatureSet | None = None
    workspace: Workspace | None = None
    seed: int = 0
    progress: Progress = no_progress   # (fraction, message) of a method's long part (the pool's representations)

    def need_features(self, method: str) -> tuple[FeatureSet, FeatureSet]:
        if self.train is None or self.target is None:
            raise ValueError(f"method {method!r} needs gradient features of the pool and of the target; extract them "
                             "with `g2is grads` and pass --train-store/--target-store")
        if self.train.n != len(self.pool):
            raise ValueError(f"the train features have {self.train.n} rows but the pool has {len(self.pool)} records; "
                             "use a gradient store extracted from this pool")
        if [r.id for r in self.pool] != self.train.ids:
            raise ValueError("the train features' record ids differ from the pool's (or their order); use a gradient "
                             "store extracted from this pool")
        pair_features(self.train, self.target)
        return self.train, self.target

    @property
    def ws(self) -> Workspace:
        return self.workspace or Workspace()


@dataclass(frozen=True)
class Method:
    """A registered selection method: ``run(ctx, B, options) -> Scored`` and its options dataclass."""

    name: str
    description: str
    options: type
    run: Callable[[Context, int, Any], Scored]
    needs: tuple[str, ...] = ()

    def make_options(self, **opts: Any) -> Any:
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"method {self.name!r} has no option(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(sorted(known)) or 'none'}")
        return self.options(**opts)


METHODS: dict[str, Method] = {}


def register(name: str, description: str, options: type, needs: tuple[str, ...] = ()):
    """Decorator: enter ``fn(ctx, B, options) -> Scored`` into :data:`METHODS` under ``name``."""
    def deco(fn: Callable[[Context, int, Any], Scored]) -> Callable[[Context, int, Any], Scored]:
        if name in METHODS:
            raise ValueError(f"selection method {name!r} is registered twice")
        METHODS[name] = Method(name, description, options, fn, needs)
        return fn
    return deco


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is a sentence listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown selection method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


# ---------------------------------------------------------------------------- options
def option(default: Any, help: str, **cli: Any) -> Any:
    """An options-dataclass field with its help text (and command-line hints: ``choices``, and for a
    bool that defaults to True the ``negative`` flag that turns it off, e.g. ``uncentred``, with its
    ``negative_help``)."""
    return field(default=default, metadata={"help": help, **cli})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_arguments(parser: argparse.ArgumentParser, options: type,
                         aliases: dict[str, Sequence[str]] | None = None) -> None:
    """One command-line flag per field of the options dataclass, typed and defaulted by the field.

    A bool defaulting to False is a switch ``--name``; one defaulting to True is switched off by
    ``--<negative>`` (metadata) or ``--no-name``. ``aliases`` adds older spellings of a flag."""
    for f in dataclasses.fields(options):
        meta, default = f.metadata, f.default
        names = [_flag(f.name), *(aliases or {}).get(f.name, ())]
        if isinstance(default, bool):
            if default:
                names = [_flag(meta.get("negative", "no_" + f.name)), *(aliases or {}).get(f.name, ())]
                parser.add_argument(*names, dest=f.name, action="store_false",
                                    help=meta.get("negative_help", f"turn off: {meta['help']}"))
            else:
                parser.add_argument(*names, dest=f.name, action="store_true", help=meta["help"])
            continue
        parser.add_argument(*names, dest=f.name, type=type(default), default=default, choices=meta.get("choices"),
                            help=f"{meta['help']} (default {default})")


def options_from_args(options: type, args: argparse.Namespace) -> Any:
    """The options dataclass from parsed arguments (flags made by :func:`add_option_arguments`)."""
    return options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options)})


def options_from_strings(method: str, pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` (``g2is select --option``) as typed option values of ``method``."""
    fields = {f.name: f for f in dataclasses.fields(get_method(method).options)}
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--option {pair!r}: give key=value with a key of method {method!r}: "
                             f"{', '.join(fields) or 'none'}")
        default = fields[key].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                val: Any = raw.lower() in ("true", "1", "yes")
            elif isinstance(default, int):
                val = int(raw)
            elif isinstance(default, float):
                val = float(raw)
            else:
                val = raw
        except ValueError:
            raise ValueError(f"--option {pair!r}: {key} takes a {type(default).__name__}") from None
        out[key] = val
    return out


# ---------------------------------------------------------------------------- helpers for methods
def top_order(scores: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the ``budget`` highest scores, descending, ties by ascending index (deterministic)."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.lexsort((np.arange(len(s)), -s))[:budget].astype(np.int64)


def reduce_targets(sim: np.ndarray, how: str) -> np.ndarray:
    """[N, M] similarities to the target examples -> [N]: ``max`` (closest example) or ``mean``."""
    if how == "max":
        return sim.max(axis=1)
    if how == "mean":
        return sim.mean(axis=1)
    raise ValueError(f"reduce must be 'max' or 'mean'; got {how!r}")


def record_text(r: Record) -> str:
    """The text the text-based methods see: prompt and response (the full example)."""
    return f"{r.prompt}\n{r.response}".strip()


def data_hash(records: Sequence[Record]) -> str:
    from ..data.loaders import data_hash as _data_hash

    return _data_hash(records)


#: Rows per kept part of a matrix cached by :func:`cached_matrix`: the most a killed computation redoes.
MATRIX_PART_ROWS = 256


def cached_matrix(ws: Workspace, kind: str, ident: dict, n: int, compute: Callable[[int, int], np.ndarray],
                  progress: Progress = no_progress, part_rows: int | None = None) -> np.ndarray:
    """An [n, e] float32 matrix cached in ``<ws>/<kind>/<hash(ident)>/matrix.npy`` with a sidecar; ``compute(a, b)``
    gives its rows a .. b-1.

    Computed in parts of ``part_rows`` rows (default :data:`MATRIX_PART_ROWS`), each kept beside it (``<hash>.parts/``,
    removed once the matrix is written) as it finishes, so a killed computation (the pool's representations take the better part of an hour on one CPU
    thread) resumes at its first missing part; ``progress(fraction, message)`` after each. A process that finds
    another computing the same matrix waits for it (a file lock) and reads its result."""
    if n == 0:   # nothing to keep (and compute(0, 0) knows the width)
        return np.asarray(compute(0, 0), dtype=np.float32)
    d = ws.root / kind / hash_config(ident)
    f = d / "matrix.npy"
    if ws.is_complete(d) and f.exists():
        return np.load(f, allow_pickle=False)
    step = part_rows or MATRIX_PART_ROWS
    with ws_mod.exclusive_lock(d.with_name(d.name + ".lock"),
                               on_wait=lambda: progress(0.0, f"{kind}: another process is computing them; waiting")):
        if ws.is_complete(d) and f.exists():   # that other process finished them
            return np.load(f, allow_pickle=False)
        parts = d.with_name(d.name + ".parts")
        blocks = []
        for a in range(0, n, step):
            b = min(n, a + step)
            pf = parts / f"rows_{a:08d}_{b:08d}.npy"
            block = np.load(pf, allow_pickle=False) if pf.exists() else None
            if block is None or block.shape[0] != b - a:
                block = np.asarray(compute(a, b), dtype=np.float32)
                if block.shape[0] != b - a:
                    raise AssertionError(f"{kind}: compute({a}, {b}) gave {block.shape[0]} rows, not {b - a}")
                ws_mod.write_npy(pf, block)
            blocks.append(block)
            progress(b / n, f"{kind}: {b}/{n} records")
        m = np.concatenate(blocks)
        ws_mod.write_npy(f, m)
        ws_mod.write_sidecar(d, kind, ident, extra={"shape": list(m.shape)})
        shutil.rmtree(parts, ignore_errors=True)
    return m