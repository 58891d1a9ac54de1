"""``g2is impact ...``: what each corpus contributes to each capability, by unlearning it (GRACE).

    g2is impact run [--corpus NAME=SOURCE[:FMT] ...] [--pair A+B ...] [--max-steps 8] [--lr 3e-5]
    g2is impact show [STUDY_DIR] [--json]
    g2is impact suite                     # the capability suite: categories -> evals

Without --corpus the default corpora are the shared pool sources (T0, FLAN CoT families, GPTeacher,
Code Alpaca); SOURCE is "shared:<path>", a data file, a folder, or a .txt/.md file (plain text).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ._common import check_model, non_negative_int, positive_float, positive_int

COMMANDS = {"impact": "pretraining-data impact by machine unlearning (corpus x capability)"}

def _corpus(s: str):
    from ..impact.study import CorpusSpec

    name, sep, rest = s.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"{s!r}: write NAME=SOURCE, e.g. notes=docs/notes.txt or "
                                         "t0=shared:t0_train_50k/data_per_template")
    fmt = None
    if ":" in rest and not rest.startswith("shared:"):
        head, _, tail = rest.rpartition(":")
        if tail and "/" not in tail and "." not in tail:
            rest, fmt = head, tail
    elif rest.startswith("shared:") and rest.count(":") >= 2:
        head, _, tail = rest.rpartition(":")
        if "/" not in tail and "." not in tail:
            rest, fmt = head, tail
    if not rest.startswith("shared:") and not Path(rest.strip()).expanduser().exists():  # said before any model loads
        raise argparse.ArgumentTypeError(f"corpus {name.strip()}: {rest.strip()} does not exist; give a text file, a "
                                         "data file, a folder or shared:<path>")
    try:
        return CorpusSpec(name.strip(), rest.strip(), fmt)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pair(s: str) -> tuple[str, str]:
    a, sep, b = s.partition("+")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"{s!r}: write A+B with two corpus names")
    return a.strip(), b.strip()


def register(sub) -> None:
    from ..impact.study import ImpactConfig

    d = ImpactConfig()
    u = d.unlearn
    p = sub.add_parser("impact", help=COMMANDS["impact"])
    hs = p.add_subparsers(dest="impact_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    r = hs.add_parser("run", help="unlearn each corpus (and each pair jointly), evaluate, relate the corpora")
    r.add_argument("--model", default=d.model, help="'default', 'tiny', a model directory or a .gguf file")
    r.add_argument("--corpus", type=_corpus, action="append", default=None, metavar="NAME=SOURCE[:FMT]",
                   help="a corpus (repeat; at least two). Default: " + ", ".join(c.name for c in d.corpora))
    r.add_argument("--pair", type=_pair, action="append", default=None, metavar="A+B",
                   help="unlearn A and B jointly too (repeat). Default: "
                        + ", ".join(f"{a}+{b}" for a, b in d.pairs) + " with the default corpora, none otherwise")
    r.add_argument("--no-pairs", action="store_true", help="no joint runs")
    limits = ", ".join(str(n) for n in sorted({e.limit for e in d.suite}))
    r.add_argument("--eval-limit", type=positive_int, default=None,
                   help=f"examples per suite eval (default: the suite's, {limits})")
    r.add_argument("--n-train", type=positive_int, default=d.n_train, help=f"chunks unlearned per corpus (default {d.n_train})")
    r.add_argument("--n-probe", type=positive_int, default=d.n_probe, help=f"chunks per probe set (default {d.n_probe})")
    r.add_argument("--max-tokens", type=positive_int, default=d.max_tokens, help=f"tokens per chunk (default {d.max_tokens})")
    r.add_argument("--max-steps", type=non_negative_int, default=u.max_steps, help=f"cap on ascent steps (default {u.max_steps})")
    r.add_argument("--lr", type=positive_float, default=u.lr, help=f"AdamW learning rate (default {u.lr})")
    r.add_argument("--batch-size", type=positive_int, default=u.batch_size,
                   help=f"chunks per ascent and per descent step (default {u.batch_size})")
    r.add_argument("--seed", type=int, default=d.seed, help=f"corpus sampling, batch order, eval subsets "
                                                            f"(default {d.seed})")
    r.set_defaults(func=cmd_run)

    s = hs.add_parser("show", help="print the findings of a stored study")
    s.add_argument("study", nargs="?", help="study directory (default: the newest in the workspace)")
    s.add_argument("--json", action="store_true", help="print the findings as JSON")
    s.set_defaults(func=cmd_show)

    q = hs.add_parser("suite", help="list the capability suite (categories -> evals)")
    q.set_defaults(func=cmd_suite)


def config_from_args(a: argparse.Namespace):
    from dataclasses import replace

    from ..impact.study import ImpactConfig
    from ..impact.unlearning import UnlearnConfig

    d = ImpactConfig()
    corpora = tuple(a.corpus) if a.corpus else d.corpora
    if a.no_pairs:
        pairs: tuple = ()
    elif a.pair:
        pairs = tuple(a.pair)
    else:
        pairs = d.pairs if not a.corpus else ()
    suite = d.suite if a.eval_limit is None else tuple(replace(e, limit=a.eval_limit) for e in d.suite)
    return ImpactConfig(model=a.model, corpora=corpora, pairs=pairs, suite=suite, n_train=a.n_train,
                        n_probe=a.n_probe, max_tokens=a.max_tokens, seed=a.seed,
                        unlearn=UnlearnConfig(lr=a.lr, max_steps=a.max_steps, batch_size=a.batch_size,
                                              retain_batch_size=a.batch_size, seed=a.seed))


def cmd_run(a: argparse.Namespace) -> int:
    from ..impact.study import run_study
    from ..progress import cli_progress

    check_model(a.model)
    cfg = config_from_args(a)
    with cli_progress("impact run") as prog:
        st = run_study(cfg, progress=prog, log=lambda m: print(m, flush=True))
    print(report(st))
    print(f"study: {st.dir}")
    return 0


def _pick(path: str | None):
    from ..impact.study import ImpactStudy, list_studies

    if path:
        return ImpactStudy.load(path)
    found = list_studies()
    if not found:
        raise ValueError("no impact study in the workspace; run `g2is impact run` first")
    return ImpactStudy.load(found[0])


def cmd_show(a: argparse.Namespace) -> int:
    st = _pick(a.study)
    print(json.dumps(st.findings(), indent=1) if a.json else report(st))
    return 0


def cmd_suite(a: argparse.Namespace) -> int:  # noqa: ARG001
    from ..impact.study import DEFAULT_SUITE

    print("| category | eval | limit | protocol | shots |\n|---|---|---|---|---|")
    for e in DEFAULT_SUITE:
        print(f"| {e.category} | {e.eval} | {e.limit} | {e.protocol} | {'default' if e.shots is None else e.shots} |")
    return 0


# ----------------------------------------------------------------------------- text report
def _f(x: Any, nd: int = 3) -> str:
    return "nan" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.{nd}f}"


def report(st) -> str:
    """The findings as markdown (what docs/impact.md quotes)."""
    f = st.findings()
    c = st.config
    cats = f["categories"]
    lines = [f"Impact study {st.dir.name}: model {c.model}, {len(c.corpora)} corpora x {c.n_train} chunks of "
             f"<= {c.max_tokens} tokens, GRACE lr {c.unlearn.lr}, <= {c.unlearn.max_steps} steps; suite "
             f"{len(c.suite)} evals x {c.suite[0].limit} examples in {len(cats)} categories"
             + ("" if st.complete else " (partial: the study is still running)"), "",
             "Unlearning runs (losses in nats/token on the probes):", "",
             "| run | stop reason | steps | descent steps | target before | target after | shuffled baseline | "
             "held-out non-target (orig.) | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for run, u in f["unlearning"].items():
        t = u["thresholds"]
        lines.append(f"| {run} | {u['reason']} | {u['steps']} | {u['n_descent']} | {t['target_original']:.3f} | "
                     f"{u['target_final']:.3f} | {t['target_stop']:.3f} | {t['retain_original']:.3f} | {u['seconds']:.0f} |")
    lines += ["", "Impact: gold-answer NLL increase (nats/token) per capability after unlearning; ± 1 SE "
              "(paired over the same examples); * = |drop| > 2 SE", "",
              "| corpus | " + " | ".join(cats) + " | total |", "|---|" + "---|" * (len(cats) + 1)]
    for name, row, se in zip(f["corpora"], f["impact"], f["impact_se"]):
        cells = [f"{v:+.3f} ± {s:.3f}{'*' if abs(v) > 2 * s else ''}" for v, s in zip(row, se)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(row):+.3f} |")
    for pair, row in f["pairs_joint"].items():
        lines.append(f"| {pair} (joint) | " + " | ".join(f"{v:+.3f}" for v in row) + f" | {sum(row):+.3f} |")
    if f["correlation"]:
        names = f["corpora"]
        lines += ["", "Correlation of impact vectors (Pearson over capabilities):", "",
                  "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for n, row in zip(names, f["correlation"]):
            lines.append(f"| {n} | " + " | ".join(_f(v, 2) for v in row) + " |")
    lines += ["", f"Relationships (rules in docs/impact.md; r threshold {f['r_threshold']}, z {f['z']}):", "",
              "| pair | kind | r | joint total | sum of individual | excess | tolerance | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for p in f["relations"]:
        lines.append(f"| {p['a']} + {p['b']} | {p['kind']} | {_f(p['r'], 2)} | {_f(p['total_joint'])} | "
                     f"{_f(p['total_a'] + p['total_b'])} | {_f(p['excess'])} | "
                     + ("" if p["tolerance"] is None else f"{p['tolerance']:.3f}") + f" | {p['reason']} |")
    return "\n".join(lines)
