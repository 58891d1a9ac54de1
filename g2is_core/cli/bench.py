"""``g2is bench run SPEC`` (resumable), ``g2is bench show`` (results table / CSV), ``bench archive`` / ``restore``
(finished cells as files to commit, and back), ``g2is demo``."""
from __future__ import annotations

import argparse
import sys

from ._common import out_file

COMMANDS = {"bench": "run experiment specs: select, fine-tune, evaluate; results in the run registry",
            "demo": "the whole chain on the embedded default (built-in pool, composite targets, default model)"}


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help=COMMANDS["bench"])
    bsub = b.add_subparsers(dest="bench_cmd", metavar="ACTION", required=True)
    r = bsub.add_parser("run", help="run every missing cell of a YAML/TOML spec (resumes after a kill)")
    r.add_argument("spec", help="experiment spec file (.yaml/.toml; docs/experiments.md), e.g. the shipped "
                                "g2is_core/specs/demo.yaml")
    r.add_argument("--methods", help="comma-separated subset of cells to run (e.g. base,random,full,bm25); default all. "
                                     "Several `bench run` processes may share one spec: cells are claimed in the registry")
    _cell_filters(r)
    r.set_defaults(func=_run)
    m = bsub.add_parser("remeasure", help="measure a spec's finished cells again with today's evaluation (after it "
                                          "learnt a new metric), from their trained weights: no selection, no "
                                          "training; rows measured so already are skipped (resumes after a kill)")
    m.add_argument("spec", help="experiment spec file (.yaml/.toml), the one `g2is bench run` ran")
    m.add_argument("--methods", help="comma-separated subset of the cells to measure again; default all")
    _cell_filters(m)
    m.set_defaults(func=_remeasure)
    f = bsub.add_parser("features", help="compute the warmup and gradient features a spec's g2is/less cells need, "
                                         "up front (cached; resumes after a kill)")
    f.add_argument("spec", help="experiment spec file (.yaml/.toml), the one `g2is bench run` takes")
    f.set_defaults(func=_features)
    pl = bsub.add_parser("plan", help="what is left of a spec and what it costs: its missing cells with process-hours "
                                      "estimated from the rates its finished cells measured (nothing runs)")
    pl.add_argument("spec", help="experiment spec file (.yaml/.toml), the one `g2is bench run` takes")
    pl.add_argument("--methods", help="comma-separated subset of the cells to plan; default all")
    _cell_filters(pl)
    pl.add_argument("--processes", type=int, default=1,
                    help="how many `bench run` processes will share the work (the wall-clock line); default 1")
    pl.set_defaults(func=_plan)
    a = bsub.add_parser("archive", help="write an experiment's finished cells to a folder to commit (one small file per "
                                        "cell: its row, per-question scores, selected ids), so its results outlive "
                                        "the workspace")
    a.add_argument("experiment", help="experiment name (the spec's `name`), e.g. study")
    a.add_argument("folder", help="where the cell files go, e.g. bench/results/study (unchanged cells keep their bytes)")
    a.set_defaults(func=_archive)
    rs = bsub.add_parser("restore", help="put an archive folder's cells into this workspace's registry: `bench run` "
                                         "then skips them and the report shows them")
    rs.add_argument("folder", help="a folder `g2is bench archive` wrote, e.g. bench/results/study")
    rs.set_defaults(func=_restore)
    s = bsub.add_parser("show", help="print an experiment's results table")
    s.add_argument("experiment", nargs="?", help="experiment name (default: all)")
    s.add_argument("--csv", type=out_file, help="also write the table to this CSV file")
    s.add_argument("--metric", help="metric to tabulate (default: each row's primary one: accuracy, em, f1 or nll)")
    s.add_argument("--ci", action="store_true", help="also print seed-paired differences to random and to LESS with "
                                                     "95%% bootstrap intervals over questions and seeds, per target "
                                                     "and pooled (* = the interval excludes zero)")
    s.add_argument("--diagnostics", action="store_true", help="also print the per-cell selection diagnostics (top "
                                                              "source share, walk fill, hub share of the kNN graph)")
    s.set_defaults(func=_show)
    d = sub.add_parser("demo", help=COMMANDS["demo"],
                       description="Every stage of the demo (model, features, benchmark, graph with its layout, head "
                                   "study), resumable; every page of the app has content at its end.")
    # None = the shipped demo spec (loop.spec.DEMO_SPEC), resolved when run: `g2is --help` stays light
    d.add_argument("--spec", default=None, help="experiment spec of the benchmark stage (default: the shipped demo "
                                                "spec, g2is_core/specs/demo.yaml)")
    d.add_argument("--layout", default=None, choices=("pca", "umap"),
                   help="2-D layout of the instruction graphs (default: pca; umap adds ~25 CPU-s of compilation)")
    d.add_argument("--no-heads", dest="heads", action="store_false", help="skip the head-study stage")
    d.add_argument("--pack", nargs="?", const="", default=None, metavar="DIR",
                   help="then write the demo pack (the results the app shows on first open) to DIR (default: the "
                        "package's g2is_core/demo_pack, replaced once the new one is complete)")
    d.set_defaults(func=_demo)


def _cell_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", help="comma-separated subset of the spec's target names; default all")
    p.add_argument("--ratios", help="comma-separated subset of the spec's ratios (base and full have none: kept)")
    p.add_argument("--seeds", help="comma-separated subset of the spec's seeds, e.g. 0 first, then 1,2")


def _cells(args):
    """(the spec, the cell filters of ``--methods/--targets/--ratios/--seeds``) of ``bench run`` / ``remeasure``."""
    from ..loop.spec import load_spec

    spec = load_spec(args.spec)   # a bad spec is answered before the runner's heavy imports
    return spec, {"methods": _subset(args, "methods", spec.all_methods()),
                  "targets": _subset(args, "targets", [t.name for t in spec.targets]),
                  "ratios": _subset(args, "ratios", spec.ratios, float),
                  "seeds": _subset(args, "seeds", sorted(set(spec.seeds) | set(spec.full_seeds or [])), int)}


def _run(args) -> int:
    from ..progress import cli_progress

    spec, chosen = _cells(args)
    from ..loop.plan import plan
    from ..loop.registry import Registry
    from ..loop.runner import chosen_cells, run_experiment

    try:
        p = plan(spec, Registry.open(), chosen_cells(spec, **chosen))
    except Exception as exc:  # noqa: BLE001 - the price is a courtesy: a fault in it must not stop the run
        print(f"warning: could not price the cells to run ({type(exc).__name__}: {exc}); running them anyway",
              file=sys.stderr)
        p = None
    if p is not None and p.missing:   # what this run is in for, before the first cell starts (`bench plan`: the table)
        print(f"{len(p.missing)} cell(s) to run of {p.n_cells} chosen ({p.n_done} finished, {len(p.running)} running "
              f"elsewhere): {p.cost_phrase()}", file=sys.stderr)
    with cli_progress(f"bench {spec.name}") as cb:
        rows = run_experiment(spec, progress=cb, log=lambda m: print(m, file=sys.stderr), **chosen)
    _print_table(rows)
    return 0


def _remeasure(args) -> int:
    from ..progress import cli_progress

    spec, chosen = _cells(args)
    from ..loop.registry import Registry
    from ..loop.runner import remeasure_experiment

    with cli_progress(f"remeasure {spec.name}") as cb:
        n = remeasure_experiment(spec, progress=cb, log=lambda m: print(m, file=sys.stderr), **chosen)
    print(f"{n} finished cells of {spec.name} measured again")
    _print_table(Registry.open().current_rows(spec.name))
    return 0


def _plan(args) -> int:
    if args.processes < 1:
        raise ValueError(f"--processes: {args.processes} is not a process count; give 1 or more")
    spec, chosen = _cells(args)
    from ..loop.plan import plan, plan_table
    from ..loop.registry import Registry
    from ..loop.runner import chosen_cells

    p = plan(spec, Registry.open(), chosen_cells(spec, **chosen))
    print(f"{spec.name}: {p.n_done} of {p.n_cells} cells finished, {len(p.running)} running now, "
          f"{len(p.missing)} missing")
    if p.missing:
        with __import__("pandas").option_context("display.width", 160, "display.max_columns", 20):
            print(plan_table(p, args.processes).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for note in p.all_notes():
        print(f"note: {note}")
    return 0


def _archive(args) -> int:
    from ..loop.archive import export_cells
    from ..loop.registry import Registry

    print(export_cells(Registry.open(), args.experiment, args.folder).sentence("written", args.folder))
    return 0


def _restore(args) -> int:
    from ..loop.archive import import_cells
    from ..loop.registry import Registry

    reg = Registry.open()
    print(import_cells(reg, args.folder).sentence("imported", reg.path))
    return 0


def _subset(args, flag: str, known: list, kind=str) -> set | None:
    """The values of ``--FLAG a,b`` (None when not given) read as ``kind``, each one of ``known``, else a sentence
    naming the rest."""
    given = getattr(args, flag, None)
    if not given:
        return None
    try:
        names = {kind(m.strip()) for m in given.split(",") if m.strip()}
    except ValueError:
        raise ValueError(f"--{flag}: {given!r} is not a comma-separated list of {kind.__name__} values; "
                         f"the spec's {flag}: {known}") from None
    unknown = names - set(known)
    if unknown:
        raise ValueError(f"--{flag}: {sorted(unknown)} not in the spec; its {flag}: {known}")
    return names


def _demo(args) -> int:
    import os
    import shlex

    from ..demo.run import DemoSettings, run_demo
    from ..loop.spec import DEMO_SPEC
    from ..progress import cli_progress

    if not os.environ.get("G2IS_THREADS"):
        # The demo is a one-command job on a machine the user has to themselves: use every core
        # (--threads 1 before `demo` restores the busy-machine default).
        os.environ["G2IS_THREADS"] = "0"
    settings = DemoSettings(spec=args.spec or DEMO_SPEC, layout=args.layout or DemoSettings.layout, heads=args.heads)
    with cli_progress("demo") as cb:
        result = run_demo(settings, progress=cb, log=lambda m: print(m, file=sys.stderr))
    from ..loop.tables import default_metric, metric_reason

    metric = default_metric(result.rows)
    print(f"\nResults on {metric} ({metric_reason(result.rows, metric)}):")
    _print_table(result.rows, metric)
    print("\nStage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    print("Open the app (`streamlit run app.py`): every page shows these results.")
    if args.pack is not None:
        from ..demo.pack import PACK_DIR, write_pack
        from ..workspace import Workspace

        info = write_pack(result, Workspace(), args.pack or PACK_DIR, command="g2is " + shlex.join(sys.argv[1:]))
        size = sum(f["bytes"] for f in info.meta["files"].values())
        print(f"demo pack written to {info.root} ({len(info.meta['files'])} files, {size / 1e6:.1f} MB)")
    return 0


def _features(args) -> int:
    from ..loop.runner import prepare_features
    from ..loop.spec import load_spec
    from ..progress import cli_progress

    spec = load_spec(args.spec)
    with cli_progress(f"features {spec.name}") as cb:
        n = prepare_features(spec, progress=cb)
    print(f"features ready for {n} target(s)" if n else "the spec has no gradient method (g2is, less): nothing to do")
    return 0


def _show(args) -> int:
    from ..loop.registry import Registry

    reg = Registry.open()
    if args.experiment and args.experiment not in reg.experiments():
        known = reg.experiments()
        raise ValueError(f"no experiment named {args.experiment!r} in {reg.path}; "
                         + (f"it has: {', '.join(known)}" if known else "run `g2is bench run SPEC` first"))
    rows = reg.current_rows(args.experiment)
    if not rows:
        print("no results yet; run `g2is bench run SPEC` or `g2is demo`")
        return 0
    for e in sorted({r["experiment"] for r in rows}):
        v = reg.version_summary(e)
        if v["n_versions"] > 1 or v["hidden"]:
            # an edited spec run under the same name: say which version the table is, and what it leaves out
            print(f"{e}: spec version {v['version']} of {v['n_versions']} (the latest run); {v['hidden']} finished "
                  "row(s) of earlier versions are not in this table", file=sys.stderr)
    table = _print_table(rows, args.metric)
    if getattr(args, "ci", False):
        from ..loop.scores import load_scores
        from ..loop.study import paired_ci_table

        ci = paired_ci_table(rows, load_scores(Registry.open(), args.experiment), args.metric)
        print("\nseed-paired differences (method - reference), 95% bootstrap interval over questions and seeds:")
        with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
            print(ci.drop(columns=["sig"]).to_string(index=False, float_format=lambda v: f"{v:+.4f}")
                  if not ci.empty else "no paired cells (a method and its reference at the same ratio and seed)")
    if getattr(args, "diagnostics", False):
        from ..loop.study import diagnostics_table

        with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
            print("\n" + diagnostics_table(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"written {args.csv}")
    return 0


def _print_table(rows, metric: str | None = None) -> "object":
    from ..loop.tables import summary_table

    from ..loop.tables import truncation_note

    table = summary_table(rows, metric)
    with __import__("pandas").option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False))
    note = truncation_note(table)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return table
