"""The rule for each kind of setting, written once: the typed settings (dataclasses) check their fields with it
in ``__post_init__``, and the CLI's argument types (:mod:`g2is_core.cli._common`) are built from the same rules,
so a bad value reads the same whether it came from a flag, a spec file or code.

A settings dataclass raises :class:`SettingError` (a ``ValueError`` that carries the field's name): the spec
reader turns it into "<file>, field 'train.batch_size': ..." and the CLI into "--batch-size 0: ...", both exit 2.

Why at construction: a bad length, epoch count or batch size used to surface deep in a run as a
ZeroDivisionError ("internal error") or, worse, as a run that finished on garbage (``--max-length 0``:
every feature row identical). A config that exists is a config that can run.

May import: the standard library only (a base module).
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


class SettingError(ValueError):
    """A setting with a bad value; ``field`` is its name relative to the settings object that raised it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Rule:
    """One kind of number setting: its type (``int`` or ``float``) and the range it must lie in.

    ``why`` completes the sentence "<value> ..." (e.g. "is not a positive whole number (give 1 or more)")."""

    cast: type
    what: str
    ok: Callable[[Any], bool]
    why: str

    def valid_type(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        return isinstance(value, numbers.Integral if self.cast is int else numbers.Real)

    def problem(self, value: Any) -> str | None:
        """None when ``value`` follows the rule, else the sentence that says why not."""
        if not self.valid_type(value):
            return f"{value!r} is not a {self.what}"
        return None if self.ok(value) else f"{value} {self.why}"

    def check(self, value: Any, field: str, optional: bool = False) -> None:
        """Raise :class:`SettingError` naming ``field`` when ``value`` breaks the rule (None passes if ``optional``)."""
        if value is None and optional:
            return
        why = self.problem(value)
        if why:
            raise SettingError(field, why)


def _finite(x: Any) -> bool:
    return math.isfinite(float(x))


POSITIVE_INT = Rule(int, "whole number", lambda n: n >= 1, "is not a positive whole number (give 1 or more)")
NON_NEGATIVE_INT = Rule(int, "whole number", lambda n: n >= 0, "is negative (give 0 or more)")
# nan fails every comparison, so "0 < x <= 1" also refuses it
FRACTION = Rule(float, "number", lambda x: 0 < x <= 1, "is not a fraction in (0, 1] (e.g. 0.05 for 5%)")
POSITIVE_FLOAT = Rule(float, "number", lambda x: _finite(x) and x > 0, "is not a finite positive number")
NON_NEGATIVE_FLOAT = Rule(float, "number", lambda x: _finite(x) and x >= 0, "is not a finite number >= 0")
# a share of something that must leave some of it (dropout, warmup share of the steps, Adam betas)
HALF_OPEN_UNIT = Rule(float, "number", lambda x: 0 <= x < 1, "is not in [0, 1) (0 or more, below 1)")


def check_rules(obj: Any, rules: dict[str, Rule], optional: Iterable[str] = ()) -> None:
    """Check ``obj``'s fields by name (``optional`` ones may be None)."""
    opt = set(optional)
    for name, rule in rules.items():
        rule.check(getattr(obj, name), name, optional=name in opt)


def check_choice(value: Any, field: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise SettingError(field, f"{value!r} is not a known {field.replace('_', ' ')}; use one of {', '.join(choices)}")


def output_path_problem(path: str | Path, *, directory: bool) -> str | None:
    """None when ``path`` can be written (as a directory or as a file), else a sentence saying why not.

    Checked before a run starts, so a typo'd or read-only output is said in a second, not after an hour of
    work: an existing path of the wrong kind, or a nearest existing ancestor that is not a writable directory.
    """
    p = Path(path).expanduser()
    if p.exists():
        if directory and not p.is_dir():
            return f"{p} exists and is not a directory; give a new or existing directory"
        if not directory and p.is_dir():
            return f"{p} is a directory; give a file name"
        target = p if p.is_dir() else p.parent
    else:
        target = p.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            return f"{target} is not a directory, so {p} cannot be created there; give another path"
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{target} is not writable; give an output path you may write to"
    return None
