"""Do two generated reports agree? The results tables of two `bench/report_experiment.py` outputs, line by line.

    python bench/compare_results.py OLD.md NEW.md [--only-both]

Reads every table whose header starts ``| target | metric | method | ratio | seeds | mean ± std |`` (the results
tables: the primary metric, gold_logprob, the answer-alone metrics), keyed by the section heading above it and the
line's target, metric, method and ratio. Prints, for the lines both reports have, the two ``mean ± std`` cells and
whether they are equal as printed (3 decimals), then a count. Made for a rerun after a lost registry: the old
report (e.g. ``git show REV:docs/study_results.md``) against one generated from the cells run again.
A line whose seed counts differ is compared too and marked, since its mean is over other seeds.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HEADER = ["target", "metric", "method", "ratio", "seeds", "mean ± std"]


def results_lines(text: str) -> dict[tuple[str, str, str, str, str], tuple[str, str]]:
    """{(heading, target, metric, method, ratio): (seeds, "mean ± std")} of a report's results tables."""
    out: dict[tuple[str, str, str, str, str], tuple[str, str]] = {}
    heading, in_table = "", False
    for line in text.splitlines():
        if line.startswith("#"):
            heading, in_table = line.lstrip("#").strip(), False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            in_table = False
        elif cells[:len(HEADER)] == HEADER:
            in_table = True
        elif in_table and not set("".join(cells)) <= set("-: "):
            t, m, meth, ratio, seeds, val = cells[:6]
            out[(heading, t, m, meth, ratio)] = (seeds, val)
    return out


def _mean(cell: str) -> float | None:
    m = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", cell)
    return float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the earlier report (markdown)")
    ap.add_argument("new", type=Path, help="the report to compare with it")
    args = ap.parse_args(argv)
    for p in (args.old, args.new):
        if not p.is_file():
            print(f"{p}: no such file; give two reports `bench/report_experiment.py --out` wrote", file=sys.stderr)
            return 2
    old, new = results_lines(args.old.read_text(encoding="utf-8")), results_lines(args.new.read_text(encoding="utf-8"))
    both = [k for k in new if k in old]
    if not both:
        print(f"no results line is in both {args.old} and {args.new}", file=sys.stderr)
        return 1
    print("| table | target | metric | method | ratio | seeds (old / new) | old mean ± std | new mean ± std | "
          "equal as printed | new - old |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    n_eq = n_eq_seeds = 0
    for k in both:
        (s_old, v_old), (s_new, v_new) = old[k], new[k]
        eq = v_old == v_new
        same_seeds = s_old == s_new
        n_eq += eq
        n_eq_seeds += same_seeds
        a, b = _mean(v_old), _mean(v_new)
        diff = f"{b - a:+.3f}" if a is not None and b is not None else ""
        seeds = s_new if same_seeds else f"{s_old} / {s_new} (other seeds)"
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {seeds} | {v_old} | {v_new} | "
              f"{'yes' if eq else 'no'} | {diff} |")
    print(f"\n{n_eq} of {len(both)} lines equal as printed ({n_eq_seeds} over the same number of seeds); "
          f"{len(old) - len(both)} lines only in {args.old.name}, {len(new) - len(both)} only in {args.new.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
