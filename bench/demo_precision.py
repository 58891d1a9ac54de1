"""Precision of each method's selection in a built-in-pool experiment (default: the demo), against the
suite's ground-truth relevance: a selected record is relevant to a composite target when its task is
the composite itself or one of its ingredients (tasks.Pool.relevance). Also the precision counting
only the composite's own records. Reads the run registry and the stored selections; computes nothing new.

    python bench/demo_precision.py [--experiment demo]
"""
from __future__ import annotations

import argparse

import pandas as pd

from g2is_core.loop.tables import read_selection_ids
from g2is_core.loop.experiment import load_pool
from g2is_core.loop.registry import Registry
from g2is_core.selection import precision
from g2is_core.data.tasks import Pool
from g2is_core.workspace import Workspace, read_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="demo")
    args = ap.parse_args()
    rows = [r for r in Registry.open().current_rows(args.experiment) if r["status"] == "done" and r.get("selection")]
    if not rows:
        raise SystemExit(f"no finished selection rows for experiment {args.experiment!r}; run `g2is demo` first")
    specs = [read_json(p) for p in (Workspace().root / "experiments").glob("*/spec.json")]
    spec = next((s for s in specs if s["name"] == args.experiment), None)
    if spec is None or "builtin" not in spec["pool"]:
        raise SystemExit(f"experiment {args.experiment!r} has no stored spec with a built-in pool")
    pool = Pool(records=tuple(load_pool(spec["pool"])), seed=spec["pool"]["builtin"].get("seed", 0))
    out = []
    for r in rows:
        ids = read_selection_ids(r["selection"])
        rel = pool.relevance(r["target"])
        out.append({"target": r["target"], "method": r["method"], "ratio": r["ratio"], "seed": r["seed"],
                    "n_selected": len(ids), "precision": precision(ids, {i for i, v in rel.items() if v > 0}),
                    "precision_own": precision(ids, {i for i, v in rel.items() if v == 2})})
    df = pd.DataFrame(out).sort_values(["target", "method"])
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
