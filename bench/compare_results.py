"""Do two generated reports agree? The results tables of two `bench/report_experiment.py` outputs, line by line.

    python bench/compare_results.py OLD.md NEW.md [--only-both]

Reads every table whose header starts ``| target | metric | method | ratio | seeds | mean ± std |`` (the results
tables: the primary metric, gold_logprob, the answer-alone metrics), keyed by the section heading above it and the
line's target, metric, method and ratio. Prints, for the lines both reports have, the two ``mean ± std`` cells and
whether they are equal as printed (3 decimals), then a count. Made for a rerun after a lost registry: the old
report (e.g. ``git show REV:docs/study_results.md``) against one generated from the cells run again.
A line whose seed counts differ is compared too and marked, since its mean is over other seeds. Where the new
line holds one seed fewer than the old (a rerun part way through its seeds), the old line's mean implies the value
of the seed the rerun lacks, if the rerun's seeds are among the old ones; the last column gives it, and whether
the old std then follows from those values within the printed rounding (``fits``). A misfit says the rerun's seeds
did not reproduce the old ones; a fit is necessary, not sufficient.
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


def _mean_std(cell: str) -> tuple[float, float | None, float] | None:
    """(mean, std or None where the cell prints none, half a unit of the mean's last printed decimal) of a
    ``mean ± std`` cell; None where it opens with no number."""
    m = re.match(r"\s*([-+]?\d+(?:\.(\d+))?)(?:\s*±\s*(\d+(?:\.\d+)?))?", cell)
    if not m:
        return None
    return float(m.group(1)), float(m.group(3)) if m.group(3) else None, 0.5 * 10.0 ** -len(m.group(2) or "")


def left_out_seed(s_old: str, v_old: str, s_new: str, v_new: str) -> str:
    """The seed a rerun lacks, implied by the old line, and whether the old std fits: "" where not one seed short.

    With n old values of mean m_a and sample std s_a, and n-1 of them rerun with mean m_b and std s_b, the left-out
    value is c = n m_a - (n-1) m_b, and the n values' sample std follows from the sums of squares. Every printed
    number is rounded, so the std is computed at the corners of the rounding box and the old std must fall in that
    range, widened by its own rounding."""
    try:
        n, k = int(s_old), int(s_new)
    except ValueError:
        return ""
    a, b = _mean_std(v_old), _mean_std(v_new)
    if k != n - 1 or k < 1 or a is None or b is None or a[1] is None or b[1] is None:
        return ""
    (ma, sa, ha), (mb, sb, hb) = a, b
    stds = []
    for da in (-ha, ha):
        for db in (-hb, hb):
            for ds in (-hb, hb):
                m_a, m_b, s_b = ma + da, mb + db, max(sb + ds, 0.0) if k > 1 else 0.0
                c = n * m_a - k * m_b
                ss = (k - 1) * s_b ** 2 + k * m_b ** 2 + c ** 2
                stds.append(max((ss - n * m_a ** 2) / (n - 1), 0.0) ** 0.5)
    fits = min(stds) - ha <= sa <= max(stds) + ha
    return f"{n * ma - k * mb:.3f} ({'fits' if fits else 'misfit'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the earlier report (markdown)")
    ap.add_argument("new", type=Path, help="the report to compare with it")
    ap.add_argument("--out", type=Path, help="write the comparison here (markdown, headed by the command) instead "
                                            "of stdout")
    ap.add_argument("--command", help="the command line to name in --out's header (default: this one)")
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
    lines: list[str] = []
    emit = lines.append   # the table's lines, to stdout or --out below
    if args.out:
        cmd = args.command or "python bench/compare_results.py " + " ".join(sys.argv[1:] if argv is None else argv)
        emit(f"<!-- generated by `{cmd}`; do not edit by hand -->\n")
    emit("| table | target | metric | method | ratio | seeds (old / new) | old mean ± std | new mean ± std | "
          "equal as printed | new - old | old's seed the new lacks |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|")
    n_eq = n_eq_seeds = n_short = n_fit = 0
    for k in both:
        (s_old, v_old), (s_new, v_new) = old[k], new[k]
        eq = v_old == v_new
        same_seeds = s_old == s_new
        n_eq += eq
        n_eq_seeds += same_seeds
        a, b = _mean_std(v_old), _mean_std(v_new)
        diff = f"{b[0] - a[0]:+.3f}" if a is not None and b is not None else ""
        seeds = s_new if same_seeds else f"{s_old} / {s_new} (other seeds)"
        short = left_out_seed(s_old, v_old, s_new, v_new)
        n_short += bool(short)
        n_fit += short.endswith("(fits)")
        emit(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {seeds} | {v_old} | {v_new} | "
              f"{'yes' if eq else 'no'} | {diff} | {short} |")
    emit(f"\n{n_eq} of {len(both)} lines equal as printed ({n_eq_seeds} over the same number of seeds); "
          f"{len(old) - len(both)} lines only in {args.old.name}, {len(new) - len(both)} only in {args.new.name}; "
          f"of {n_short} lines one seed short, {n_fit} fit the old line with the seed the new lacks")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        sys.stdout.write(f"written {args.out}: {lines[-1].strip()}\n")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
