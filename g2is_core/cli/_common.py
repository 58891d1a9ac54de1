"""Helpers shared by the ``g2is`` command modules: the one place a command module may import from
inside :mod:`g2is_core.cli` (command modules never import each other, so each stays readable alone).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import (FRACTION, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, Rule,
                        output_path_problem)


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend local|ray, --ray-address, --ray-workers (docs/scaling.md)."""
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: this process; ray: shard the rows over Ray workers (needs the 'ray' extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster: 'auto' (the running one) or host:port / ray://host:port; default: start a "
                        "local Ray cluster (2 CPUs)")
    p.add_argument("--ray-workers", type=non_negative_int, default=0,
                   help="concurrent Ray tasks (default: the cluster's GPUs, else its CPUs)")


# Argument types: argparse reports a bad value as "argument --max-length: ..." (the flag, not a field
# name) before anything heavy is imported. Each is built from the rule the settings dataclasses check
# (g2is_core/settings.py), so a flag and a spec field refuse the same values with the same sentence.
def _number(rule: Rule):
    """An argparse type for ``rule``: cast the text (else "'x' is not a WHAT"), then check the range."""
    def parse(text: str):
        try:
            x = rule.cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {rule.what}") from None
        why = rule.problem(x)
        if why:
            raise argparse.ArgumentTypeError(why)
        return x

    parse.__name__ = rule.what.replace(" ", "_")
    return parse


positive_int = _number(POSITIVE_INT)
non_negative_int = _number(NON_NEGATIVE_INT)
fraction = _number(FRACTION)
positive_float = _number(POSITIVE_FLOAT)
non_negative_float = _number(NON_NEGATIVE_FLOAT)


def _output(directory: bool):
    def parse(text: str) -> Path:
        why = output_path_problem(text, directory=directory)
        if why:
            raise argparse.ArgumentTypeError(why)
        return Path(text).expanduser()

    parse.__name__ = "output_directory" if directory else "output_file"
    return parse


# An output path checked before the run starts (an existing file where a folder goes, a read-only place).
out_dir = _output(directory=True)
out_file = _output(directory=False)


def check_model(spec: str | None) -> None:
    """A ``--model`` that names no model, said before the command loads torch (seconds)."""
    from ..models.loading import check_spec

    check_spec(spec)
