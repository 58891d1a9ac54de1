"""The closed loop of an experiment (docs/bridge.md): per cell, the score beside the selection's head similarity,
its gradient similarity and its change similarity to the full-data model, and their correlations with
permutation p-values (the numbers the Benchmarks page's "Heads: what training changed" section draws).

    python bench/bridge_report.py                              # the shipped demo pack, experiment "demo"
    python bench/bridge_report.py --workspace cache --experiment real-data --metric nll
    python bench/bridge_report.py --workspace W --experiment study --metric nll --ratio 0.01   # one budget's cells
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from g2is_core.app import readers
    from g2is_core.loop.bridge import MIN_DIFF_POINTS
    from g2is_core.demo.pack import find_pack
    from g2is_core.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", help="workspace folder (default: the shipped demo pack)")
    ap.add_argument("--experiment", default="demo")
    ap.add_argument("--metric", action="append", help="score(s) to correlate with (default: accuracy and nll)")
    ap.add_argument("--ratio", type=float, help="only the cells of this budget (base and full data kept); default: all")
    a = ap.parse_args()
    ws = Workspace(a.workspace, read_only=True) if a.workspace else find_pack().workspace()
    reg = readers.registry(ws)
    if reg is None:
        sys.exit(f"{ws.root}: no run registry")
    rows = reg.current_rows(a.experiment)  # its latest version only (as the tables)
    if a.ratio is not None:
        rows = [r for r in rows if r.get("ratio") is None or abs(float(r["ratio"]) - a.ratio) < 1e-9]
    for target in readers.head_loop_targets(rows):
        for metric in a.metric or ["accuracy", "nll"]:
            loop = readers.head_loop(rows, target, metric)
            print(f"\n{a.experiment} / {target} / {metric}")
            cols = [c for c in ("method", "ratio", "seed", "score", "head_similarity", "gradient_similarity",
                                "change_similarity") if c in loop.points]
            print(loop.points[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            for x, tests in loop.tests.items():
                print(f"  {x:<20} " + "  ".join(f"{k} r={t.r:+.3f} p={t.p:.3f} (n={t.n})" for k, t in tests.items()))
            print("  |r head| - |r grad|  " + "  ".join(
                f"{k} {v.d:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}] (n={v.n} selections, {v.n_used} bootstrap draws)"
                if v.n_used else f"{k}: no interval (n={v.n} selections; {MIN_DIFF_POINTS} needed)"
                for k, v in loop.versus.items()))
            if loop.selections is not None and len(loop.selections):
                print(f"  per distinct selection ({len(loop.selections)}; a deterministic method's seeds share one):")
                print(loop.selections.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
                for x, tests in loop.selection_tests.items():
                    print(f"  {x:<20} " + "  ".join(f"{k} r={t.r:+.3f} p={t.p:.3f} (n={t.n})" for k, t in tests.items()))
            for note in loop.notes:
                print(f"  note: {note}")


if __name__ == "__main__":
    main()
