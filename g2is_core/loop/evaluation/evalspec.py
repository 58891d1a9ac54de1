"""One target evaluation's description, :class:`EvalSpec`: where its examples come from and how they are scored.

Its own module so that the eval registry (:mod:`.families`) and the protocols (:mod:`.protocols`) can both
name it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...data.records import Record

Loader = Callable[[Path | None], list[Record]]
Prepare = Callable[[list[Record], int, Path | None], list[Record]]


@dataclass(frozen=True)
class EvalSpec:
    """One target evaluation. Fields say where the examples come from and how they are scored."""

    name: str
    description: str                             # one sentence for the app, with the split used
    protocol: str                                # the primary protocol (a name in protocols.PROTOCOLS)
    load: Loader = field(repr=False)             # data root (None when absent) -> test examples, in order
    needs_data: bool = True                      # False for the built-in suite (no files)
    shots: int = 0                               # default number of few-shot exemplars
    max_shots: int = 0                           # most the benchmark defines (0 = no few-shot)
    prepare: Prepare | None = field(default=None, repr=False)  # (records, shots, root) -> prompted records
    options: Callable[[Record], list[tuple[Record, str]]] | None = field(default=None, repr=False)  # mc pairs
    mc_primary: str = "sum"                      # "sum" | "norm": which mc accuracy is `accuracy`
    score: Callable[[Record, str], tuple[Any, bool]] | None = field(default=None, repr=False)  # exact_match
    max_new_tokens: int = 32
    stratify: bool = False                       # spread `limit` evenly over record.subtask

    @property
    def protocols(self) -> tuple[str, ...]:
        """Protocols this eval supports, the primary first (loglik works for every eval)."""
        return (self.protocol,) if self.protocol == "loglik" else (self.protocol, "loglik")
