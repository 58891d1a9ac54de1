"""Evaluation cost on the default model, measured side by side in one run (seconds per question).

    G2IS_THREADS=2 python bench/bench_eval.py [--limit 16]

Rows: MMLU 5-shot with one forward per option vs one shared forward per prompt (letters), in fp32 and
bf16 weights; BBH object counting 3-shot CoT by greedy generation (exact match) vs gold-answer
log-likelihood; ARC-Easy and GSM8K (log-likelihood) in fp32 and bf16. Scores are printed beside the
times, so a faster path that changed the numbers would show.
"""
from __future__ import annotations

import argparse
import time

import torch

from g2is_core.loop import evaluation as E
from g2is_core.models.loading import load_model


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=16)
    a = ap.parse_args(argv)
    n = a.limit
    base = load_model("default")
    print(f"torch threads {torch.get_num_threads()}, {n} questions per row")
    print(f"{'eval':<34} {'weights':<7} {'s/question':>10}  score")
    for dtype in ("fp32", "bf16"):
        lm = load_model("default")
        if dtype == "bf16":
            lm.model = lm.model.to(torch.bfloat16)
        spec = E.get_spec("mmlu")
        recs = E.eval_records(spec, limit=n, seed=0)
        items = [spec.options(r) for r in recs]
        for shared in (False, True):
            (scores, _), dt = _timed(lambda: E.mc_scores(lm, items, shared_prompt=shared))
            acc = sum(int(max(range(len(s)), key=lambda i: s[i][0]) == r.gold) for r, s in zip(recs, scores)) / n
            print(f"{'mmlu 5-shot, ' + ('shared prompt' if shared else 'pass per option'):<34} {dtype:<7} "
                  f"{dt / n:>10.2f}  accuracy {acc:.3f}", flush=True)
        rows = [("bbh:object_counting", {"protocol": "loglik"}, "nll"), ("arc_easy", {}, "accuracy"),
                ("gsm8k", {"protocol": "loglik"}, "nll")]
        if dtype == "fp32":
            rows.insert(0, ("bbh:object_counting", {}, "accuracy"))
        for name, kw, metric in rows:
            res, dt = _timed(lambda: E.evaluate(lm, name, limit=n, seed=0, **kw))
            label = f"{name} {kw.get('protocol', res.protocol)}"
            print(f"{label:<34} {dtype:<7} {dt / n:>10.2f}  {metric} {res.metrics[metric]:.3f}", flush=True)
    del base


if __name__ == "__main__":
    main()
