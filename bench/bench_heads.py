"""Gate route vs eager route for activation patterns: throughput at equal output (fp32).

    python bench/bench_heads.py [--model default] [--n 32] [--batch-size 8] [--repeats 3]

Both routes measure the same samples (built-in tasks' dev split, mixed lengths) with the same loss;
the gate route runs the model's own attention kernel (sdpa) with per-head gates before o_proj, the
eager route switches to eager attention and differentiates the returned probabilities. Reports
samples/s (best of ``--repeats``), the ratio, and the largest absolute difference of the per-sample
patterns (target: ratio >= 1.5 at max |diff| <= 1e-5).
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
    a = ap.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
