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
