"""Gate route vs eager route for activation patterns: throughput at equal output (fp32); and, with
``--study-cost``, the head study's per-phase costs before and after issue 15, side by side in one run.

    python bench/bench_heads.py [--model default] [--n 32] [--batch-size 8] [--repeats 3]
    python bench/bench_heads.py --study-cost [--steps 3] [--bf16-before-steps 1]

Both routes measure the same samples (built-in tasks' dev split, mixed lengths) with the same loss;
the gate route runs the model's own attention kernel (sdpa) with per-head gates before o_proj, the
eager route switches to eager attention and differentiates the returned probabilities. Reports
samples/s (best of ``--repeats``), the ratio, and the largest absolute difference of the per-sample
patterns (target: ratio >= 1.5 at max |diff| <= 1e-5).

``--study-cost`` times each phase of one study run of the default ``StudyConfig`` (a full fine-tuning SFT step at
its batch size, one activation-pattern measurement, one exact-match pass, a model load, a weight snapshot) with
the code before issue 15 (the old loop: the model's full-logits loss and the per-tensor AdamW; the old default
forced bf16 autocast, timed over ``--bf16-before-steps`` steps since an emulated bf16 step takes ~40 s) and after
it (token-mean loss on the label positions, fused AdamW, bf16 "auto"), and extrapolates the default study's
cost from them (it does not run the study, which takes hours before and about an hour after on 1 thread).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="add,reverse,sort,lookup,upper,count_letter,add_reverse,lookup_add,sort_desc")
    ap.add_argument("--n", type=int, default=36, help="samples in all (spread over the tasks)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--context", type=int, default=0,
                    help="prepend a system message of about this many filler words (longer sequences: the "
                         "attention matrices grow as T^2, the rest as T)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--study-cost", action="store_true", help="time the head study's phases before/after issue 15")
    ap.add_argument("--steps", type=int, default=3, help="--study-cost: SFT steps timed per variant (after 1 warm-up)")
    ap.add_argument("--bf16-before-steps", type=int, default=1,
                    help="--study-cost: steps timed with the old default's bf16 autocast (0: skip it)")
    a = ap.parse_args(argv)
    if a.study_cost:
        return study_cost(a)

    import numpy as np

    from g2is_core import runtime
    from g2is_core.data.encoding import encode_all
    from g2is_core.heads.patterns import activation_pattern
    from g2is_core.models.loading import load_model
    from g2is_core.data.tasks import make_task_records

    threads = runtime.apply_thread_policy()
    lm = load_model(a.model)
    tasks = a.tasks.split(",")
    per = max(1, a.n // len(tasks))
    recs = [r for t in tasks for r in make_task_records(t, per, 0, "dev")]
    if a.context > 0:
        import dataclasses
        import random

        words = "table value key list item note row entry field record".split()
        rng = random.Random(0)
        recs = [dataclasses.replace(r, messages=({"role": "system", "content": " ".join(
            rng.choice(words) for _ in range(a.context))},) + tuple(r.messages)) for r in recs]
    enc, _ = encode_all(lm.tokenizer, recs)
    pad = lm.tokenizer.pad_token_id
    res = {}
    for route in ("gate", "eager"):
        activation_pattern(lm.model, enc[: a.batch_size], pad_id=pad, route=route, batch_size=a.batch_size)  # warm-up
        best, out = float("inf"), None
        for _ in range(a.repeats):
            t = time.perf_counter()
            out = activation_pattern(lm.model, enc, pad_id=pad, route=route, batch_size=a.batch_size)
            best = min(best, time.perf_counter() - t)
        res[route] = {"seconds": best, "samples_per_s": len(enc) / best, "pattern": out}
    diff = float(np.abs(res["gate"]["pattern"].per_sample - res["eager"]["pattern"].per_sample).max())
    diff_ap = float(np.abs(res["gate"]["pattern"].values - res["eager"]["pattern"].values).max())
    rel = diff / float(np.abs(res["eager"]["pattern"].per_sample).max())
    ratio = res["gate"]["samples_per_s"] / res["eager"]["samples_per_s"]
    summary = {"model": a.model, "n_layers": lm.n_layers, "n_heads": lm.n_heads, "n_kv_heads": lm.n_kv_heads,
               "samples": len(enc), "context_words": a.context, "mean_tokens": float(np.mean([e.length for e in enc])), "batch_size": a.batch_size,
               "threads": threads, "repeats": a.repeats, "load_avg_1min": os.getloadavg()[0],
               "gate_samples_per_s": res["gate"]["samples_per_s"], "eager_samples_per_s": res["eager"]["samples_per_s"],
               "ratio": ratio, "max_abs_diff": diff, "max_abs_diff_ap": diff_ap, "max_rel_diff": rel, "dtype": "fp32"}
    print(json.dumps(summary, indent=1))
    print(f"\n| route | samples/s |\n|---|---|\n| gate (sdpa + per-head gates) | {summary['gate_samples_per_s']:.2f} |\n"
          f"| eager (attention probabilities) | {summary['eager_samples_per_s']:.2f} |\n\n"
          f"ratio {ratio:.2f}x, max |gate - eager| per sample {diff:.2e} (relative {rel:.1e}), on the AP {diff_ap:.2e}; fp32, "
          f"{len(enc)} samples of {summary['mean_tokens']:.0f} tokens on average, {threads} thread(s)")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def study_cost(a) -> int:
    """Per-phase costs of the default head study, old loop vs new, measured side by side (module doc)."""
    import copy
    import time

    import torch

    from g2is_core import runtime
    from g2is_core.data.encoding import collate, encode_all
    from g2is_core.data.tasks import make_task_records
    from g2is_core.heads.patterns import activation_pattern
    from g2is_core.heads.study import StudyConfig, exact_match, weight_snapshot
    from g2is_core.models import lm_ops
    from g2is_core.models.loading import load_model
    from g2is_core.models.training import TrainConfig, train

    threads = runtime.apply_thread_policy()
    d = StudyConfig()
    spec = a.model if a.model != "default" else d.model
    t = time.perf_counter()
    lm = load_model(spec)
    t_load_first = time.perf_counter() - t
    t = time.perf_counter()
    load_model(spec)
    t_load = time.perf_counter() - t
    tok = lm.tokenizer
    task = "sort"
    train_enc, _ = encode_all(tok, make_task_records(task, (a.steps + 1) * d.batch_size, 0, "train"))
    base = copy.deepcopy(lm.model.state_dict())

    def fresh():
        lm.model.load_state_dict(base)
        for p in lm.model.parameters():
            p.requires_grad_(True)
        lm.model.train()
        return lm.model

    def old_steps(n: int, bf16: bool) -> float:
        """The loop before issue 15: the model's own (full-logits) loss, the per-tensor AdamW; seconds per step."""
        model = fresh()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=d.lr, foreach=False)
        times = []
        for i in range(n + 1):                     # the first step (allocations, Adam state) is not timed
            batch = collate(train_enc[i * d.batch_size:(i + 1) * d.batch_size], tok.pad_token_id, "cpu")
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            times.append(time.perf_counter() - t0)
        return sum(times[1:]) / n

    def new_steps(n: int) -> float:
        """The loop now (training.train with the default study's TrainConfig); seconds per step."""
        model = fresh()
        stamps = []
        cfg = TrainConfig(lr=d.lr, max_steps=n + 1, batch_size=d.batch_size, warmup_ratio=0.1, seed=0, bf16=d.bf16,
                          save_every=10 ** 9)
        train(model, train_enc, cfg, pad_id=tok.pad_token_id, progress=lambda f, m: stamps.append(time.perf_counter()))
        return (stamps[-1] - stamps[0]) / n

    print(f"CPU {runtime.cpu_model()}, {threads} thread(s), native bf16: {runtime.bf16_is_fast('cpu')}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    res: dict[str, float] = {}
    # interleaved, so both variants see the same load
    res["step_old_fp32"] = old_steps(a.steps, False)
    res["step_new"] = new_steps(a.steps)
    res["step_old_fp32_b"] = old_steps(a.steps, False)
    res["step_new_b"] = new_steps(a.steps)
    old32, new = min(res["step_old_fp32"], res["step_old_fp32_b"]), min(res["step_new"], res["step_new_b"])
    print(f"SFT step (full FT, batch {d.batch_size}): old loop fp32 {old32:.2f} s, new loop {new:.2f} s "
          f"({old32 / new:.2f}x); load {os.getloadavg()[0]:.2f}", flush=True)
    old_default = None
    if a.bf16_before_steps > 0:
        res["step_old_bf16"] = old_steps(a.bf16_before_steps, True)
        print(f"SFT step, old default (bf16 autocast forced): {res['step_old_bf16']:.2f} s; load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        old_default = res["step_old_bf16"] if not runtime.bf16_is_fast("cpu") else None
    model = fresh()
    model.eval()
    pat_enc, _ = encode_all(tok, make_task_records(task, d.n_pattern, 0, "dev"))
    eval_recs = make_task_records(task, d.n_eval, 0, "test")
    activation_pattern(model, pat_enc[:2], pad_id=tok.pad_token_id)
    t = time.perf_counter()
    activation_pattern(model, pat_enc, pad_id=tok.pad_token_id)
    res["pattern"] = time.perf_counter() - t
    t = time.perf_counter()
    exact_match(model, tok, eval_recs, max_new_tokens=d.max_new_tokens)
    res["exact_match"] = time.perf_counter() - t
    t = time.perf_counter()
    weight_snapshot(model)
    res["snapshot"] = time.perf_counter() - t
    res["load"], res["load_first"] = t_load, t_load_first
    n_tasks, runs, n_ap = len(d.tasks), len(d.tasks) * len(d.seeds), len(d.measure_steps) - 1
    fixed_run = res["load"] + 2 * res["snapshot"] + n_ap * res["pattern"] + res["exact_match"]
    base = n_tasks * (res["pattern"] + res["exact_match"]) + res["load_first"]

    def study(step: float) -> float:
        return base + runs * (d.steps * step + fixed_run)

    print(f"per measurement: activation pattern ({d.n_pattern} samples) {res['pattern']:.2f} s, exact match "
          f"({d.n_eval} samples, {d.max_new_tokens} new tokens) {res['exact_match']:.2f} s, weight snapshot "
          f"{res['snapshot']:.2f} s, model load {res['load']:.2f} s (first {res['load_first']:.2f} s); load "
          f"{os.getloadavg()[0]:.2f}")
    print(f"\ndefault study ({runs} runs x {d.steps} steps, {n_ap} patterns per run), EXTRAPOLATED from the figures "
          f"above (not run):\n\n| loop | SFT step | per run | study |\n|---|---|---|---|")
    rows = [("old loop, fp32 (--no-bf16)", old32), ("new loop (bf16 auto)", new)]
    if old_default is not None:
        rows.insert(0, ("old default (bf16 forced, emulated here)", old_default))
    for name, step in rows:
        print(f"| {name} | {step:.2f} s | {d.steps * step + fixed_run:.0f} s | {study(step) / 60:.0f} min |")
    print(f"\nnew / old fp32: {study(new) / study(old32):.2f} of the cost"
          + (f"; new / old default: {study(new) / study(old_default):.3f}" if old_default else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({**res, "threads": threads, "cpu": runtime.cpu_model(),
                                            "load_avg_1min": os.getloadavg()[0]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
