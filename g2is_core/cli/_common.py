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
def _number(cast, what: str, ok, why: str):
    """An argparse type: ``cast`` the text (else "'x' is not a WHAT"), then check ``ok`` (else "VALUE WHY")."""
    def parse(text: str):
        try:
            x = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not ok(x):
            raise argparse.ArgumentTypeError(f"{x} {why}")
        return x

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _number(int, "whole number", lambda n: n >= 1, "is not a positive whole number (give 1 or more)")
non_negative_int = _number(int, "whole number", lambda n: n >= 0, "is negative (give 0 or more)")
fraction = _number(float, "number", lambda x: 0 < x <= 1, "is not a fraction in (0, 1] (e.g. 0.05 for 5%)")
positive_float = _number(float, "number", lambda x: x > 0, "is not positive")


def check_model(spec: str | None) -> None:
    """A ``--model`` that names no model, said before the command loads torch (seconds)."""
    from ..models.loading import check_spec

    check_spec(spec)
