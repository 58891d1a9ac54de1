"""Helpers shared by the ``g2is`` command modules: the one place a command module may import from
inside :mod:`g2is_core.cli` (command modules never import each other, so each stays readable alone).
"""
from __future__ import annotations

import argparse


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend local|ray, --ray-address, --ray-workers (docs/scaling.md)."""
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: this process; ray: shard the rows over Ray workers (needs the 'ray' extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster: 'auto' (the running one) or host:port / ray://host:port; default: start a "
                        "local Ray cluster (2 CPUs)")
    p.add_argument("--ray-workers", type=int, default=0,
                   help="concurrent Ray tasks (default: the cluster's GPUs, else its CPUs)")


# Argument types: argparse reports a bad value as "argument --max-length: ..." (the flag, not a field
# name) before anything heavy is imported.
def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not a positive whole number (give 1 or more)")
    return n


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative (give 0 or more)")
    return n


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{x} is not a fraction in (0, 1] (e.g. 0.05 for 5%)")
    return x


def positive_float(text: str) -> float:
    """A number > 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{x} is not positive")
    return x


def check_model(spec: str | None) -> None:
    """A ``--model`` that names no model, said before the command loads torch (seconds)."""
    from ..models.loading import check_spec

    check_spec(spec)
