"""Evaluation cost on the default model: shared prefixes against every sequence whole, side by side in one run.

    G2IS_THREADS=1 python bench/bench_eval.py [--limit 24] [--mmlu-limit 114] [--evals mmlu,bbh,arc_easy,gsm8k]

For each of the study's evals (docs/study.md) it scores the same questions up to three ways (``--paths``):
``whole``, ``share_prefixes`` off (every sequence run whole); ``batched``, shared prefixes (a few-shot prompt or a
question before its options run once) with the rows continuing a cache run as a padded batch, the cache copied
per row (the path before packing); ``packed``, the default: those rows side by side in one sequence under a
block-causal mask, the cache copied once (g2is_core/loop/evaluation/scoring.py). It prints per row: seconds
per question, the tokens that went through the model (padding included, counted at the embedding),
the achieved model GFLOP/s (2 x non-embedding parameters x tokens / s, the LM head at scored positions
left out) against the machine's measured fp32 GEMM peak (bench/flops.py), the metric, and the largest
per-question difference to the first path (float rounding only, or the faster path is wrong) and the speed-up.
bf16 weights are scored too where the native-bf16 probe says they are fast (g2is_core.runtime).

MMLU's questions are drawn stratified by subject and share a prompt only within a subject (its 5 dev
examples), so its row takes ``--mmlu-limit`` (default 114, 2 per subject); the study's 285 are 5 per
subject, where the saving is larger. The CPU model and the load average are printed beside the figures: the machines are shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EVALS = {   # name: (eval, protocol, metric, per-example field compared)
    "mmlu": ("mmlu", "mc", "gold_logprob", "gold_logprob"),
    "bbh": ("bbh:object_counting", "loglik", "label_logprob", "label_logprob"),   # its 14 labels: the rows that pack
    "arc_easy": ("arc_easy", "mc", "gold_logprob", "gold_logprob"),
    "gsm8k": ("gsm8k", "loglik", "nll", "nll"),
}


PATHS = ("whole", "batched", "packed")   # share_prefixes off; shared with rows batched; shared with rows packed


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=24, help="questions per eval (default 24)")
    ap.add_argument("--mmlu-limit", type=int, default=114, help="MMLU questions (default 114: 2 per subject)")
    ap.add_argument("--evals", default=",".join(EVALS), help=f"comma-separated, of {', '.join(EVALS)}")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)} (the first is "
                                                             "the reference of the difference and the speed-up)")
    a = ap.parse_args(argv)
    paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    if not paths or any(x not in PATHS for x in paths):
        sys.exit(f"--paths: choose from {', '.join(PATHS)}")
    names = [n.strip() for n in a.evals.split(",") if n.strip()]
    bad = [n for n in names if n not in EVALS]
    if bad:
        sys.exit(f"--evals: unknown {', '.join(bad)}; choose from {', '.join(EVALS)}")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    from flops import gemm_peak
    from g2is_core import runtime
    from g2is_core.loop import evaluation as E
    from g2is_core.loop.evaluation import scoring
    from g2is_core.models.lm_ops import hooks
    from g2is_core.models.loading import load_model

    runtime.apply_thread_policy()
    lm = load_model("default")
    n_layer = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "lm_head" not in n)
    peak = gemm_peak("fp32", n=1024)
    print(f"CPU: {runtime.cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
          f"load average at start {tuple(round(x, 2) for x in os.getloadavg())}")
    print(f"fp32 GEMM peak (1024^3, best of 6): {peak / 1e9:.1f} GFLOP/s; {a.limit} questions per eval "
          f"({a.mmlu_limit} for MMLU); "
          f"model {n_layer / 1e6:.1f} M non-embedding parameters")
    dtypes = ["fp32"] + (["bf16"] if runtime.resolve_precision("auto").bf16 else [])
    if len(dtypes) == 1:
        print("bf16: not native here (the probe), fp32 only")
    print(f"\n{'eval':<28} {'dtype':<5} {'prefixes':<8} {'s/question':>10} {'tokens run':>10} {'GFLOP/s':>8} "
          f"{'of peak':>7}  {'metric':<22} {'max |diff|':>10} {'speed-up':>8} {'load':>5}")
    for dtype in dtypes:
        if dtype == "bf16":
            lm.model = lm.model.to(torch.bfloat16)
        for name in names:
            ev, protocol, metric, field = EVALS[name]
            runs = {}
            for path in paths:
                share = path != "whole"
                scoring.PACK_CONTINUATIONS = path == "packed"
                seen = []
                emb = lm.model.get_input_embeddings()
                t = time.perf_counter()
                with hooks(forward={emb: lambda m, args, out: seen.append(args[0].numel())}):
                    res = E.evaluate(lm, ev, limit=a.mmlu_limit if name == "mmlu" else a.limit, seed=0,
                                     protocol=protocol, share_prefixes=share)
                dt = time.perf_counter() - t
                runs[path] = (res, dt, sum(seen))
            scoring.PACK_CONTINUATIONS = True
            first = {p["id"]: p[field] for p in runs[paths[0]][0].per_example}
            for path in paths:
                res, dt, tokens = runs[path]
                diff = max(abs(p[field] - first[p["id"]]) for p in res.per_example)
                flops = 2 * n_layer * tokens / dt
                label = f"{ev} {protocol}"
                print(f"{label:<28} {dtype:<5} {path:<8} {dt / res.n:>10.3f} {tokens:>10,} "
                      f"{flops / 1e9:>8.1f} {flops / peak:>7.1%}  {metric + f' {res.metrics[metric]:.4f}':<22} "
                      f"{diff:>10.1e} {runs[paths[0]][1] / dt:>7.2f}x {os.getloadavg()[0]:>5.2f}", flush=True)
    print(f"\nload average at end {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
