"""Markdown report of a finished (or running) experiment from the run registry: the numbers in docs/benchmarks.md.

    python bench/report_experiment.py bench/specs/real_data.yaml            # print to stdout
    python bench/report_experiment.py bench/specs/real_data.yaml --out docs/real_data_results.md

Sections: results (mean +- std over seeds, deltas vs random / full / base), seed-matched differences to
random, seed-paired differences to random and to LESS with 95% bootstrap intervals over questions and seeds
(per target and pooled; g2is_core/loop/stats.py), the same two for the multiple-choice targets'
gold_logprob (continuous, beside their accuracy), the G2IS ablation (each variant minus g2is), selection
diagnostics (top source, walk fill, hub share of the kNN graph), what each method picked (composition by source at each ratio, seed 0), overlap between
methods (seed 0, and averaged over seeds), and where the time went (sums of the per-row timings, and the
wall time from the first claim to the last finished row), and what is left (the missing cells' process-hours at
the measured rates, `g2is bench plan`).
"""
from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import time
from pathlib import Path

import pandas as pd

from g2is_core.loop.plan import HOUR_COLUMNS, plan, plan_table
from g2is_core.loop.scores import load_scores
from g2is_core.loop.study import (ABSOLUTE, POOLED, anchors_table, diagnostics_table, overlap_by_cell, paired_ci_table,
                                  power_table, study_grid)
from g2is_core.loop.tables import LOWER_IS_BETTER, overlap_matrix, paired_vs_random, selected_records, summary_table
from g2is_core.loop.spec import load_spec
from g2is_core.loop.registry import Registry


def _fmt(x, nd=3) -> str:
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:+.{nd}f}" if isinstance(x, float) else str(x)


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def results_section(rows, metric: str | None = None) -> str:
    tab = summary_table(rows, metric)
    if metric is not None:   # only the targets that report it (the others fall back to their primary metric)
        tab = tab[tab.metric == metric]
    if tab.empty:
        return f"no rows report {metric}"
    out = pd.DataFrame({
        "target": tab.target, "metric": tab.metric, "method": tab.method,
        "ratio": [("" if pd.isna(r) else f"{r:.0%}") for r in tab.ratio],
        "seeds": tab.n_seeds,
        "mean ± std": [f"{m:.3f} ± {s:.3f}" for m, s in zip(tab["mean"], tab["std"])],
        "vs random": [_fmt(v) for v in tab.vs_random], "vs full": [_fmt(v) for v in tab.vs_full],
        "vs base": [_fmt(v) for v in tab.vs_base]})
    return _md(out)


def paired_section(rows) -> str:
    tab = paired_vs_random(rows)
    out = pd.DataFrame({
        "target": tab.target, "metric": tab.metric, "method": tab.method, "ratio": [f"{r:.0%}" for r in tab.ratio],
        "mean diff": [_fmt(v) for v in tab.mean_diff],
        "range": [f"{a:+.3f} .. {b:+.3f}" for a, b in zip(tab.min_diff, tab.max_diff)],
        "seeds better than random": [f"{b}/{n}" for b, n in zip(tab.better, tab.n_pairs)]})
    return _md(out)


def intervals_section(rows, scores, n_boot: int | None = None, references=("random", "less"),
                      only=None, metric: str | None = None) -> str:
    tab = paired_ci_table(rows, scores, metric=metric, references=references, n_boot=n_boot)
    if only is not None and not tab.empty:
        tab = tab[tab.method.map(only)]
    if metric is not None and not tab.empty:   # only the targets that report it
        tab = tab[tab.metric == metric]
    if tab.empty:
        return "no paired cells yet"
    parts = []
    for ref, part in tab.groupby("reference", sort=False):
        out = pd.DataFrame({
            "target": [f"{t} ({n} targets)" if t == POOLED else t for t, n in zip(part.target, part.n_targets)],
            "metric": part.metric, "method": part.method,
            "ratio": [f"{r:.0%}" for r in part.ratio], "seeds": part.n_seeds,
            "questions": [str(q) if q else "-" for q in part.n_questions],
            "diff": [_fmt(v, 4) for v in part.mean_diff],
            "95% interval": [("" if pd.isna(a) else f"[{a:+.4f}, {b:+.4f}]") for a, b in zip(part.ci_low, part.ci_high)],
            "": [f"* {s}" if s else "" for s in part.sig]})
        parts.append(f"**vs {ref}** (method minus {ref}, the same training seed)\n\n" + _md(out))
    return "\n\n".join(parts)


def diagnostics_section(rows) -> str:
    tab = diagnostics_table(rows)
    if tab.empty:
        return "no diagnostics recorded (rows from before they were kept)"
    f = lambda v: "" if v is None or pd.isna(v) else f"{v:.2f}"  # noqa: E731
    out = pd.DataFrame({"target": tab.target, "method": tab.method, "ratio": [f"{r:.0%}" for r in tab.ratio],
                        "seeds": tab.n_seeds, "top source": tab.top_source,
                        "its share": [f(v) for v in tab.top_source_share], "sources": [f(v) for v in tab.n_sources],
                        "walk fill": [f(v) for v in tab.fill], "fallbacks": [f(v) for v in tab.fallbacks],
                        "in-degree Gini": [f(v) for v in tab.in_degree_gini],
                        "top-1% in-edge share": [f(v) for v in tab.top1_in_share],
                        "picks among top-1% hubs": [f(v) for v in tab.selected_top1_share]})
    return _md(out)


def mean_overlap_section(rows) -> str:
    tab = overlap_by_cell(rows)
    if tab.empty:
        return "no selections yet"
    out = pd.DataFrame({"target": tab.target, "ratio": [f"{r:.0%}" for r in tab.ratio], "a": tab.method_a,
                        "b": tab.method_b, "Jaccard": [f"{v:.2f}" for v in tab.jaccard], "seeds": tab.n_seeds})
    return _md(out)


def _picks(rows, seed: int):
    """{(target, ratio): {method: DataFrame of the chosen records (id, source)}} for one seed."""
    out: dict = {}
    for r in rows:
        if r.get("status") != "done" or r["seed"] != seed:
            continue
        picked = selected_records(r)   # from the selection folder, or what an archived row carried
        if picked is not None:
            out.setdefault((r["target"], r["ratio"]), {})[r["method"]] = picked
    return out


def _source_file(record_id: str, source: str = "") -> str:
    """The source file of a shared-data record id ``family:file:row`` (T0's many templates count as one); ids
    without that shape (Self-Instruct's ``seed_task_N``, OASST's message uuids) count under their record's source."""
    parts = record_id.split(":")
    if len(parts) < 3:
        return source or parts[0]
    return parts[0] if parts[0].startswith("t0") else f"{parts[0]}:{parts[1]}"


def composition_section(rows, seed: int = 0) -> str:
    parts = []
    for (target, ratio), by_method in sorted(_picks(rows, seed).items()):
        counts = {m: pd.Series([_source_file(i, s) for i, s in zip(df["id"].astype(str), df["source"].fillna("")
                                                                    .astype(str))]).value_counts()
                  for m, df in sorted(by_method.items())}
        table = pd.DataFrame(counts).fillna(0).astype(int)
        table.index.name = "source"
        parts.append(f"**{target}, ratio {ratio:.0%}, seed {seed}** (records picked per source file)\n\n"
                     + _md(table.reset_index()))
    return "\n\n".join(parts)


def overlap_section(rows, seed: int = 0) -> str:
    parts = []
    for (target, ratio), by_method in sorted(_picks(rows, seed).items()):
        m = overlap_matrix({k: v["id"].astype(str).tolist() for k, v in sorted(by_method.items())})
        parts.append(f"**{target}, ratio {ratio:.0%}** (Jaccard of the selected ids, seed {seed})\n\n"
                     + _md(m.round(2).reset_index().rename(columns={"index": "method"})))
    return "\n\n".join(parts)


def timing_section(rows) -> str:
    done = [r for r in rows if r.get("status") == "done"]
    if not done:
        return "no finished rows"
    sums: dict[str, float] = {}
    reused = 0
    for r in done:
        for k, v in (r.get("timings") or {}).items():
            if k == "eval_reused":   # a flag, not a time: the cell read an earlier measurement of the same weights
                reused += 1
                continue
            sums[k] = sums.get(k, 0.0) + float(v)
    wall = max(r["finished"] for r in done) - min(r["created"] for r in done)
    lines = [f"- rows finished: {len(done)} of {len(rows)}",
             f"- wall time, first claim to last finished row: {wall / 60:.1f} min",
             *(f"- sum of {k}: {v / 60:.1f} min" for k, v in sorted(sums.items())),
             *([f"- rows that read the eval of the same weights measured by an earlier cell (eval_reused): {reused}"]
               if reused else []),
             "- feature extraction (warmup + stores) is cached: computed inside a row, it is in that row's select_s; "
             "computed first by `g2is bench features SPEC`, it is in no row (that command prints its own time)"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables inside a hand-written doc
# A doc (docs/study.md) holds its reading by hand and its tables between markers; `--into DOC` regenerates every
# table from the registry and leaves the prose alone. The opening marker says what the table is:
#   <!-- study-grid ratio=0.01 rows=base,random,less,g2is cols=bbh-*:label_logprob:random,(pooled):label_logprob:random -->
#   <!-- study-anchors ratio=0.01 cols=gsm8k:nll,arc_easy:accuracy -->
#   <!-- study-power ratio=0.01 cols=gsm8k:nll,arc_easy:accuracy -->
#   <!-- study-plan processes=2 -->
#   ...generated...
#   <!-- /study-table -->
# grid cols: target:metric:reference, target a name or a glob over the spec's targets or "(pooled)", reference a
# method or "-" (the metric itself); anchors: base, random, the best method at the ratio and full data per target;
# power: the half-widths of the intervals to random per target (what the study can tell apart); plan: the spec's
# missing cells and their process-hours at the measured rates (g2is bench plan), wall-clock at `processes`.
BLOCK = re.compile(r"<!-- (study-grid|study-anchors|study-power|study-plan) (.*?) -->\n(.*?)<!-- /study-table -->",
                   re.S)


def _block_args(kind: str, text: str, line: int, targets: list[str]) -> dict:
    where = f"line {line}: <!-- {kind} {text} -->"
    args = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    stray = [kv for kv in text.split() if "=" not in kv]
    need = {"study-grid": {"ratio", "rows", "cols"}, "study-plan": {"processes"}}.get(kind, {"ratio", "cols"})
    if stray or need - set(args) or set(args) - need:
        raise ValueError(f"{where}: give exactly {', '.join(sorted(need))} as key=value (got {text!r})")
    if kind == "study-plan":
        if not args["processes"].isdigit() or int(args["processes"]) < 1:
            raise ValueError(f"{where}: processes must be a whole number of processes, e.g. processes=2")
        return {"processes": int(args["processes"])}
    try:
        args["ratio"] = float(args["ratio"])
    except ValueError:
        raise ValueError(f"{where}: ratio must be a number, e.g. ratio=0.01") from None
    cols = []
    for item in args["cols"].split(","):
        parts = item.split(":")
        if len(parts) != (3 if kind == "study-grid" else 2):
            raise ValueError(f"{where}: column {item!r} must be "
                             + ("target:metric:reference" if kind == "study-grid" else "target:metric"))
        hits = [parts[0]] if parts[0] == POOLED else fnmatch.filter(targets, parts[0])
        if not hits:
            raise ValueError(f"{where}: {parts[0]!r} matches none of the spec's targets ({', '.join(targets)})")
        cols += [(t, *parts[1:]) for t in hits]
    args["cols"] = cols
    if "rows" in args:
        args["rows"] = args["rows"].split(",")
    return args


def _grid_headers(cols) -> list[str]:
    vary = [len({c[i] for c in cols}) > 1 for i in range(3)]
    out = []
    for t, m, ref in cols:
        ref_txt = "mean ± sd" if ref == ABSOLUTE else f"minus {ref} [95%]"
        parts = [t if vary[0] or not (vary[1] or vary[2]) else "", m if vary[1] else "", ref_txt if vary[2] else ""]
        out.append(" ".join(p for p in parts if p))
    return out


def _directions(metrics) -> str:
    return ", ".join(f"{m}: {'lower' if m in LOWER_IS_BETTER else 'higher'} is better" for m in metrics)


def grid_block(rows, scores, args, n_boot=None) -> str:
    cols, ratio = args["cols"], args["ratio"]
    tab = study_grid(rows, scores, cols, args["rows"], ratio, n_boot)
    metrics, refs = sorted({m for _, m, _ in cols}), sorted({r for _, _, r in cols} - {ABSOLUTE})
    what = (f"ratio {ratio:.0%}; {', '.join(metrics)} ("
            + _directions(metrics) + "); "
            + (f"each method minus {' / '.join(refs)} at the same seed, [95% bootstrap interval over questions and "
               "seeds], `*` where it excludes zero; " if refs else "")
            + "base and full data (one seed) and the reference: the metric itself, mean ± sd over seeds, in a "
              "difference column only where the table has no mean column")
    out = pd.DataFrame({"method": tab.index, **{h: tab[str(j)] for j, h in enumerate(_grid_headers(cols))}})
    return f"({what})\n\n" + _md(out) + "\n"


def anchors_block(rows, args) -> str:
    ratio = args["ratio"]
    tab = anchors_table(rows, args["cols"], ratio)
    val = lambda v: "not run" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    out = pd.DataFrame({
        "target": tab.target, "metric": tab.metric, "base": tab.base.map(val), f"random {ratio:.0%}": tab.random.map(val),
        f"best {ratio:.0%}": ["not run" if m is None else f"{m} {v:.3f}" + (f" ({n} seed{'s' if n > 1 else ''})"
                                                                         if n < most else "")
                              for m, v, n, most in zip(tab.best_method, tab.best, tab.best_seeds, tab.most_seeds)],
        "full data": tab.full.map(val)})
    return ("(means over seeds; best: the trained method with the best mean at the ratio, random left out; "
            + _directions(sorted({m for _, m in args["cols"]})) + ")\n\n" + _md(out) + "\n")


def power_block(rows, scores, args, n_boot=None) -> str:
    tab = power_table(rows, scores, args["cols"], args["ratio"], n_boot=n_boot)
    if tab.empty:
        return "(no method paired with random at this ratio yet)\n"
    out = pd.DataFrame({"target": tab.target, "metric": tab.metric, "methods": tab.n_methods, "seeds": tab.n_seeds,
                        "questions": tab.n_questions,
                        "interval half-width, median": [f"{v:.3f}" for v in tab.half_width_median],
                        "widest": [f"{v:.3f}" for v in tab.half_width_max],
                        "detectable at 80% power": [f"{v:.3f}" for v in tab.detectable_80],
                        "excluding zero": [f"{k} of {n}" for k, n in zip(tab.n_excluding_zero, tab.n_methods)],
                        "random minus base": [_fmt(v) for v in tab.reference_minus_base]})
    return (f"(ratio {args['ratio']:.0%}; each method minus random, its 95% interval's half-width: a difference "
            "smaller than it cannot be told from zero; a difference of the 'detectable' size is told from zero in 80% "
            "of such studies (1.43 median half-widths, a normal approximation); beside it, how far random's training "
            "moved the metric from the base model, for scale)\n\n" + _md(out) + "\n")


def plan_block(plan, processes: int) -> str:
    if not plan.missing:
        return f"(every one of the spec's {plan.n_cells} cells has finished)\n"
    tab = plan_table(plan, processes)
    for col in HOUR_COLUMNS:
        tab[col] = tab[col].map(lambda v: f"{v:.1f}")
    running = f", {len(plan.running)} running" if plan.running else ""
    return (f"({plan.n_done} of the spec's {plan.n_cells} cells finished{running}; the missing ones in "
            "process-hours at the rates the finished cells measured, from `g2is bench plan SPEC`: "
            + "; ".join(plan.all_notes()) + ")\n\n" + _md(tab) + "\n")


def fill_doc(text: str, rows, scores, targets: list[str], n_boot=None, plan=None) -> tuple[str, int]:
    """``text`` with every marked table regenerated (module comment above); the number of tables filled.
    ``plan``: the spec's :class:`g2is_core.loop.plan.Plan`, for study-plan tables."""
    n = 0

    def one(m: re.Match) -> str:
        nonlocal n
        kind, params = m.group(1), m.group(2)
        args = _block_args(kind, params, text.count("\n", 0, m.start()) + 1, targets)
        if kind == "study-plan" and plan is None:
            raise ValueError(f"line {text.count(chr(10), 0, m.start()) + 1}: a study-plan table needs the spec's plan")
        body = (grid_block(rows, scores, args, n_boot) if kind == "study-grid" else anchors_block(rows, args)
                if kind == "study-anchors" else plan_block(plan, args["processes"]) if kind == "study-plan"
                else power_block(rows, scores, args, n_boot))
        n += 1
        return f"<!-- {kind} {params} -->\n{body}<!-- /study-table -->"

    filled = BLOCK.sub(one, text)
    opened = [m.start() for m in re.finditer(r"<!-- study-[\w-]+ ", text)]
    if len(opened) != n:   # a marker with a typo or no closing line would leave a stale table in place
        done = {m.start() for m in BLOCK.finditer(text)}
        bad = next(i for i in opened if i not in done)
        raise ValueError(f"line {text.count(chr(10), 0, bad) + 1}: {text[bad:text.find('-->', bad) + 3]!r} is not a "
                         "table this report fills: the kinds are study-grid, study-anchors, study-power and study-plan, each "
                         "followed on the next line by its table and closed by <!-- /study-table -->")
    return filled, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="the experiment spec (its name selects the registry rows)")
    ap.add_argument("--out", help="write the report here instead of stdout")
    ap.add_argument("--into", help="regenerate the marked tables of this hand-written doc (docs/study.md) in place; "
                                   "with --out, the full report too")
    ap.add_argument("--seed", type=int, default=0, help="seed whose selections the composition tables show")
    ap.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates of the intervals (default: "
                                                             "loop.stats.BootstrapSettings, 2000)")
    a = ap.parse_args(argv)
    spec = load_spec(a.spec)
    reg = Registry.open()
    rows = reg.current_rows(spec.name)  # the spec's latest version only: never rows of an earlier edit of it
    if not rows:
        print(f"no registry rows for {spec.name!r}: run `g2is bench run {a.spec}` first", file=sys.stderr)
        return 1
    scores = load_scores(reg, spec.name)   # the per-question scores, read once for every interval table
    if a.into:
        doc = Path(a.into)
        try:
            filled, n = fill_doc(doc.read_text(encoding="utf-8"), rows, scores, [t.name for t in spec.targets], a.n_boot,
                                 plan(spec, reg))
        except ValueError as e:
            print(f"{doc}: {e}", file=sys.stderr)
            return 1
        doc.write_text(filled, encoding="utf-8")
        print(f"written {n} tables into {doc}")
        if not a.out:
            return 0
    text = "\n\n".join([
        f"<!-- generated by `python bench/report_experiment.py {a.spec}` on "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; do not edit by hand -->",
        f"## Results: {spec.name}\n\nPrimary metric per target (accuracy: higher is better; nll: nats per answer "
        "token, lower is better). Deltas are mean differences against the random baseline at the same ratio, "
        "full-data training and the untrained base model.\n\n" + results_section(rows),
        "## Seed-matched differences to random\n\n" + paired_section(rows),
        "## Paired differences with 95% bootstrap intervals\n\nSeed-paired (method at seed s minus the reference "
        "at seed s) and question-paired differences; the interval is a percentile bootstrap over questions and "
        "seeds (g2is_core/loop/stats.py; `questions: -` = only aggregates were recorded, seeds resampled). "
        "`(pooled)` averages the targets that report the same metric. `*` marks an interval that excludes zero; "
        "better/worse in the metric's own direction (lower nll is better; gold_logprob and accuracy: higher).\n\n"
        + intervals_section(rows, scores, a.n_boot),
        "## Multiple-choice targets on gold_logprob\n\nThe continuous metric beside accuracy: the mean over "
        "questions of log p(gold | options), the log-softmax of the compared option scores at the gold option "
        "(0 = certain and right, log(1/4) = -1.386 = no preference among four). It moves where accuracy moves by "
        "whole questions. Means over seeds, then the paired differences with intervals as above.\n\n"
        + results_section(rows, "gold_logprob") + "\n\n"
        + intervals_section(rows, scores, a.n_boot, metric="gold_logprob"),
        "## The answer alone: nll_answer, label_logprob, label_accuracy\n\nWhere the gold answer is a word or two "
        "(the BBH tasks), `nll` is mostly the model's confidence that it should stop after it. Three readings of "
        "the answer alone (the loglik protocol, g2is_core/loop/evaluation/protocols.py): `nll_answer`, the NLL of "
        "the response's own tokens, the end-of-turn left out (lower is better); and, where the gold answers form "
        "a closed set (True/False, yes/no, (A)-(C), the counts), every label scored as the whole response: "
        "`label_logprob` = log p(gold | the labels) and `label_accuracy` (higher is better). Unlike the NLLs, "
        "the labels' comparison does not reward a model for answering at once rather than reasoning first. Rows "
        "measured before these metrics existed get them from `g2is bench remeasure SPEC` (the trained weights "
        "measured again). Means over seeds, the paired differences with intervals as above, and the ablation.\n\n"
        + "\n\n".join(f"### {m}\n\n" + results_section(rows, m) + "\n\n"
                      + intervals_section(rows, scores, a.n_boot, metric=m) + "\n\n"
                      + intervals_section(rows, scores, a.n_boot, ("g2is",), only=lambda x: str(x).startswith("g2is-"),
                                          metric=m)
                      for m in ("label_logprob", "label_accuracy", "nll_answer")),
        "## The G2IS ablation: each variant minus faithful G2IS\n\nThe paper's ablation read as differences to "
        "`g2is` (the same training seed, the same questions; intervals as above): `g2is-score` is the core-knowledge "
        "score alone (no graph, no walk), `g2is-noconflict` and `g2is-noconsistency` the walk without one of its "
        "checks; the option variants (`g2is-centred`, ...) where they ran. A negative NLL difference: the variant "
        "is better than G2IS.\n\n"
        + intervals_section(rows, scores, a.n_boot, ("g2is",),
                            only=lambda m: str(m).startswith("g2is-"))
        + "\n\nThe multiple-choice targets on gold_logprob (higher is better: a positive difference, the variant "
        "is better than G2IS):\n\n"
        + intervals_section(rows, scores, a.n_boot, ("g2is",),
                            only=lambda m: str(m).startswith("g2is-"), metric="gold_logprob"),
        "## Selection diagnostics\n\nMeans over seeds (selection/diagnostics.py): the most frequent source "
        "and its share of the selection, the walk's fill (selected / budget) and fallbacks, and for the walks the "
        "kNN graph's in-degree Gini, the share of its edges that point into the top 1% of nodes, and the share "
        "of the selection among those top-1% hubs.\n\n" + diagnostics_section(rows),
        "## What each method picked\n\n" + composition_section(rows, a.seed),
        "## Overlap between methods\n\n" + overlap_section(rows, a.seed),
        "## Overlap between methods, averaged over seeds\n\n" + mean_overlap_section(rows),
        "## Where the time went\n\n" + timing_section(rows),
        "## What is left\n\n" + plan_block(plan(spec, reg), 2)]) + "\n"
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")
        print(f"written {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
