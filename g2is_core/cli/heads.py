"""``g2is heads ...``: activation patterns, head studies (SFT runs per task) and the mix application.

    g2is heads pattern --task add [--model default] [--n 16] [--route gate|eager] [--out ap.npy]
    g2is heads study [--tasks add,reverse,...] [--steps 40] [--measure 0,5,10,20,40] [--seeds 0,1]
    g2is heads show STUDY_DIR [--perm 1000] [--markdown]
    g2is heads mix --target add_reverse [--study STUDY_DIR] [--n-target 16]
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_backend_args, check_model, non_negative_int, out_file, positive_float, positive_int

COMMANDS = {"heads": "attention-head activation patterns before and after SFT"}

_DEFAULT_CFG = None


def _defaults():
    global _DEFAULT_CFG
    if _DEFAULT_CFG is None:
        from ..heads.study import StudyConfig

        _DEFAULT_CFG = StudyConfig()
    return _DEFAULT_CFG


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{s!r}: give whole numbers separated by commas, e.g. 0,10,40") from None


def _tasks(s: str) -> tuple[str, ...]:
    from ..data.tasks import TASKS

    names = tuple(x.strip() for x in s.split(",") if x.strip())
    bad = [n for n in names if n not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {', '.join(bad)}; choose from {', '.join(TASKS)}")
    return names


def register(sub) -> None:
    from ..data.tasks import TASKS

    p = sub.add_parser("heads", help=COMMANDS["heads"])
    hs = p.add_subparsers(dest="heads_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    q = hs.add_parser("pattern", help="the activation pattern of a model on a built-in task")
    q.add_argument("--model", default="default", help="'default', 'tiny', a model directory or a .gguf file")
    q.add_argument("--task", required=True, choices=list(TASKS), help="built-in task (`g2is tasks` lists them)")
    q.add_argument("--n", type=positive_int, default=16, help="samples (default 16)")
    q.add_argument("--split", default="dev", choices=["train", "dev", "test"],
                   help="which split of the task the samples come from (default dev)")
    q.add_argument("--seed", type=int, default=0, help="seed of the built-in suite (default 0)")
    q.add_argument("--route", default="gate", choices=["gate", "eager"],
                   help="gate: one backward through per-head gates (any kernel); eager: attention probabilities")
    q.add_argument("--batch-size", type=positive_int, default=8, help="samples per backward (default 8)")
    q.add_argument("--top", type=positive_int, default=10, help="heads to list (default 10)")
    q.add_argument("--out", type=out_file, help="save the [layer, head] pattern as .npy (a .json sidecar beside it)")
    add_backend_args(q)
    q.set_defaults(func=cmd_pattern)

    d = _defaults()
    s = hs.add_parser("study", help="SFT per task with activation patterns along the way, then the findings")
    s.add_argument("--model", default=d.model, help=f"'default', 'tiny', a model directory or a .gguf file "
                                                    f"(default {d.model})")
    s.add_argument("--tasks", type=_tasks, default=d.tasks, help="comma-separated (default: all built-in tasks)")
    s.add_argument("--steps", type=positive_int, default=d.steps, help=f"SFT steps per run (default {d.steps})")
    s.add_argument("--measure", type=_ints, default=d.measure_at,
                   help="steps at which to measure the pattern (default " + ",".join(map(str, d.measure_at)) + ")")
    s.add_argument("--seeds", type=_ints, default=d.seeds, help="SFT seeds (default 0,1; two give the noise floor)")
    s.add_argument("--method", default=d.method, choices=["full", "lora"],
                   help=f"full fine-tuning or LoRA (default {d.method})")
    s.add_argument("--lr", type=positive_float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    s.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help=f"samples per optimizer step (default {d.batch_size})")
    s.add_argument("--n-pattern", type=positive_int, default=d.n_pattern, help="held-apart dev samples for the pattern")
    s.add_argument("--n-eval", type=positive_int, default=d.n_eval, help="test samples for exact-match accuracy")
    s.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens,
                   help=f"greedy generation budget for the accuracy (default {d.max_new_tokens})")
    s.add_argument("--bf16", nargs="?", const="true", default=d.bf16, choices=["auto", "true", "false"],
                   help=f"bf16 autocast for the SFT steps: auto (bf16 where it is native), true (fp32 with a warning "
                        f"where it is not; G2IS_FORCE_BF16=1 insists) or false (default {d.bf16}; the patterns are "
                        "always fp32)")
    s.add_argument("--no-bf16", dest="bf16", action="store_const", const="false", help="fp32 SFT steps")
    s.add_argument("--perm", type=non_negative_int, default=1000,
                   help="permutations for the regression null (default 1000)")
    s.set_defaults(func=cmd_study)

    w = hs.add_parser("show", help="print the findings of a stored study")
    w.add_argument("study", nargs="?", help="study directory (default: the newest in the workspace)")
    w.add_argument("--perm", type=non_negative_int, default=1000,
                   help="permutations for the regression null (default 1000)")
    w.add_argument("--json", action="store_true", help="print the findings as JSON")
    w.set_defaults(func=cmd_show)

    m = hs.add_parser("mix", help="the paper's application: regression-weighted basic mix, then scarce target data")
    m.add_argument("--study", help="study directory (default: the newest in the workspace)")
    m.add_argument("--target", default="add_reverse", help="composite task (default add_reverse)")
    m.add_argument("--n-target", type=positive_int, default=16, help="scarce target training samples (default 16)")
    m.add_argument("--mix-steps", type=non_negative_int, default=30,
                   help="stage 1: SFT steps on the weighted basic-task mix (default 30)")
    m.add_argument("--target-steps", type=non_negative_int, default=20,
                   help="stage 2: SFT steps on the target samples (default 20)")
    m.add_argument("--space", default="change_norm", choices=["change_norm", "change_raw", "after_raw"],
                   help="which composition regression gives the mix weights (default change_norm)")
    m.add_argument("--seed", type=int, default=0, help="SFT and sampling seed (default 0)")
    m.add_argument("--n-eval", type=positive_int, default=64, help="test samples for the accuracy (default 64)")
    m.set_defaults(func=cmd_mix)


# ----------------------------------------------------------------------------- commands
def cmd_pattern(a: argparse.Namespace) -> int:
    from ..features.ray_backend import RayConfig
    check_model(a.model)
    from ..heads import analysis as ha
    from ..heads.measure import save_pattern, task_pattern
    from ..heads.patterns import head_label, kv_group
    from ..progress import cli_progress

    with cli_progress("heads pattern") as prog:
        ap, model_id = task_pattern(a.model, a.task, a.n, seed=a.seed, split=a.split, route=a.route,
                                    batch_size=a.batch_size, backend=getattr(a, "backend", "local"),
                                    ray_config=RayConfig(address=a.ray_address, workers=a.ray_workers), progress=prog)
    print(f"{a.task}: {ap.n_layers} layers x {ap.n_heads} heads ({ap.n_kv_heads} KV heads), {a.n} {a.split} samples, "
          f"route {a.route}; sum {ap.values.sum():.4g}, Gini {ha.gini(ap.values):.3f}, CV {ha.cv(ap.values):.3f}")
    for l, h, v in ha.top_heads(ap.values, a.top):
        print(f"  {head_label(l, h):>7}  kv{kv_group(h, ap.n_heads, ap.n_kv_heads)}  {v:.4g}")
    if a.out:
        out = save_pattern(ap, a.out, {"model": model_id, "task": a.task, "n": a.n, "split": a.split, "seed": a.seed})
        print(f"saved {out}")
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    check_model(a.model)
    from ..heads.study import StudyConfig, run_study
    from ..progress import cli_progress
    from ..workspace import write_json

    cfg = StudyConfig(model=a.model, tasks=a.tasks, seeds=a.seeds, steps=a.steps, measure_at=a.measure,
                      method=a.method, lr=a.lr, batch_size=a.batch_size, n_pattern=a.n_pattern, n_eval=a.n_eval,
                      max_new_tokens=a.max_new_tokens, bf16=a.bf16)
    with cli_progress("heads study") as prog:
        st = run_study(cfg, progress=prog, log=lambda m: print(m, flush=True))
    f = st.findings(n_perm=a.perm)
    write_json(st.dir / "findings.json", f)
    print(report(st, f))
    print(f"study: {st.dir}")
    return 0


def _pick_study(path: str | None):
    from ..heads.study import HeadStudy, list_studies

    if path:
        return HeadStudy.load(path)
    found = list_studies()
    if not found:
        raise ValueError("no head study in the workspace; run `g2is heads study` first")
    return HeadStudy.load(found[0])


def cmd_show(a: argparse.Namespace) -> int:
    st = _pick_study(a.study)
    f = st.findings(n_perm=a.perm)
    print(json.dumps(f, indent=1) if a.json else report(st, f))
    return 0


def cmd_mix(a: argparse.Namespace) -> int:
    from ..heads.study import MixConfig, run_mix
    from ..progress import cli_progress

    st = _pick_study(a.study)
    mc = MixConfig(target=a.target, n_target=a.n_target, mix_steps=a.mix_steps, target_steps=a.target_steps,
                   space=a.space, seed=a.seed, n_eval=a.n_eval)
    with cli_progress("heads mix") as prog:
        res = run_mix(st, mc, progress=prog, log=lambda m: print(m, flush=True))
    print(mix_report(res))
    return 0


# ----------------------------------------------------------------------------- text reports
def _f(x: Any, nd: int = 3) -> str:
    import numpy as np

    return "nan" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def report(st, f: dict[str, Any]) -> str:
    """The findings as markdown tables (what docs/heads.md quotes)."""
    import numpy as np

    c = st.config
    L, H, KV = st.shape
    lines = [f"Head study {st.dir.name}: model {c['model']} ({L} layers x {H} heads, {KV} KV heads), "
             f"{c['method']} SFT, {c['steps']} steps x batch {c['batch_size']}, lr {c['lr']}, seeds "
             f"{','.join(map(str, st.seeds))}; patterns on {c['n_pattern']} dev samples, accuracy on "
             f"{c['n_eval']} test samples", "",
             "Finding 1: per task (means over seeds; Gini/CV of the raw AP)", "",
             "| task | kind | acc before | acc after | loss first -> last | Gini before -> after | CV before -> after | sum AP before -> after |",
             "|---|---|---|---|---|---|---|---|"]
    order = f.get("order") or list(f["tasks"])
    for t in order:
        r = f["tasks"][t]
        lines.append(f"| {t} | {r['kind']} | {_f(r['accuracy_before'], 2)} | {_f(r['accuracy_after'], 2)} | "
                     f"{_f(r['loss_first'], 2)} -> {_f(r['loss_last'], 2)} | {_f(r['gini_before'])} -> {_f(r['gini_after'])} | "
                     f"{_f(r['cv_before'])} -> {_f(r['cv_after'])} | {r['sum_before']:.3g} -> {r['sum_after']:.3g} |")
    tasks = order
    S = np.array(f["similarity"]["pearson"])
    off = S[~np.eye(len(S), dtype=bool)] if len(S) > 1 else np.array([])
    lines += ["", "Task specificity (normalised dAP, mean over seeds): Pearson between different tasks "
              f"mean {_f(float(off.mean()) if off.size else float('nan'))}"]
    if len(S) > 1:
        best = sorted(((S[i, j], tasks[i], tasks[j]) for i in range(len(S)) for j in range(i + 1, len(S))), reverse=True)
        lines.append("- most similar pairs: " + ", ".join(f"{a}~{b} {v:.2f}" for v, a, b in best[:6]))
    for key, v in f["noise_floor"].items():
        lines.append(f"- noise floor {key}: same task {_f(v['within_mean'])}, different tasks {_f(v['between'])}")
    if f["composition"]:
        lines += ["", f"Finding 2: composition (R^2 vs permutation null, {f['n_perm']} shuffles of head order)", "",
                  "| composite | space | method | R^2 | adj R^2 | null mean | null q95 | p | coefficients (ingredients *, controls c) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t, e in f["composition"].items():
            for key, v in e.items():
                if not isinstance(v, dict):
                    continue
                space, method = key.rsplit("_", 1)
                coefs = ", ".join(f"{n}{'*' if n in e['ingredients'] else 'c' if n in e['controls'] else ''} {w:+.2f}"
                                  for n, w in v["coef"].items())
                lines.append(f"| {t} | {space} | {method} | {_f(v['r2'])} | {_f(v['adj_r2'])} | {_f(v['null_mean'])} | "
                             f"{_f(v['null_q95'])} | {_f(v['p_value'], 4)} | {coefs} |")
    lines += ["", "Finding 3: convergence (normalised AP at each step vs the final AP; mean over tasks and seeds)", "",
              "| step | samples seen | corr with final | MSE x1e6 |", "|---|---|---|---|"]
    curves = [cv for t in tasks for cv in f["convergence"][t]]
    if curves:
        for i, step in enumerate(f["steps"]):
            lines.append(f"| {step} | {int(np.mean([cv['samples_seen'][i] for cv in curves]))} | "
                         f"{_f(float(np.mean([cv['corr'][i] for cv in curves])))} | "
                         f"{_f(float(np.mean([cv['mse_x1e6'][i] for cv in curves])), 2)} |")
        kinds = sorted({k for cv in curves for k in cv["param_change"]})
        lines += ["", "Relative parameter change ||dW||/||W|| (mean over runs): " +
                  ", ".join(f"{k} {np.mean([cv['param_change'].get(k, np.nan) for cv in curves]):.2e}" for k in kinds)]
    return "\n".join(lines)


def mix_report(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"Mix application, target {c['target']}: {c['n_target']} target samples, {c['mix_steps']} mix steps + "
             f"{c['target_steps']} target steps; accuracy on {c['n_eval']} test samples",
             "weights (NNLS, " + c["space"] + "): " + ", ".join(f"{k} {v:.2f}" for k, v in res["weights"].items()),
             "random weights: " + ", ".join(f"{k} {v:.2f}" for k, v in res["random_weights"].items()), "",
             "| condition | accuracy |", "|---|---|"]
    for name, info in res["conditions"].items():
        lines.append(f"| {name} | {_f(info['accuracy'])} |")
    return "\n".join(lines)
