"""Benchmark: what head signatures cost over plain gradient-feature extraction (issue 16; docs/bridge.md).

The same examples, the same model and LoRA, the same projector, extracted on the fast path with and
without ``heads=`` (the [layer, head] gates as one more leaf of the same backward), interleaved
(without-with, then with-without, ...) so that a change of machine load hits both alike; each side's
time is the median over ``--reps`` runs. Two clocks: wall time, and this process's CPU time (user +
system). On a shared machine (load above the core count) wall time includes waiting for a core and
swings by 2x between runs; the CPU time is what the work costs, so its ratio is the headline figure. Also, for scale: the activation pattern of the same
examples as a SEPARATE pass (:func:`g2is_core.heads.patterns.activation_pattern`, gate route),
i.e. what the signatures would cost without the shared pass.

Model: ``$BENCH_MODEL`` or the default model (SmolLM2-135M-Instruct) when it is in the workspace
(``cache/models``, or ``$G2IS_WORKSPACE``), as bench/bench_gradients.py resolves it; without it the
tiny random Llama, with a note (its figures say little about the real cost). LoRA: the project
default for the small model (r=8, alpha=32 on q,k,v,o) with random non-zero A and B and random
Adam moments standing in for a warmup checkpoint (the cost is the same); train (Adam-direction)
features, d=2048, fp32; examples: shared T0 records cut to ``--tokens`` tokens (the built-in pool
when the shared data is absent).

    python bench/bench_head_signatures.py --n 8            # a few minutes on the default model, 2 cores
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from g2is_core.runtime import cpu_model  # noqa: E402  (after the path: runs from a checkout)



def load():
    """(loaded model, note): ``$BENCH_MODEL`` / the default model, else the tiny random Llama."""
    from g2is_core.models.loading import ModelError, load_model

    spec = os.environ.get("BENCH_MODEL", "default")
    try:
        return load_model(spec), f"model {spec!r}"
    except ModelError as exc:
        return load_model("tiny"), (f"NOTE: {spec!r} is not available ({exc}); the tiny random Llama instead, whose "
                                    "ratio says little about the real model's")


def records(tok, n: int, tokens: int):
    """``n`` records that encode to at least ``tokens`` tokens with a response (shared T0 first, else the pool)."""
    from g2is_core.data.encoding import encode_record
    from g2is_core.data.loaders import load_records
    from g2is_core.data.tasks import make_pool
    from g2is_core.workspace import shared_data_root

    root = shared_data_root()
    sources = []
    if root is not None:
        sources = [lambda f=f: load_records(f).records
                   for f in sorted((root / "t0_train_50k" / "data_per_template").glob("*.jsonl.gz"))]
    sources.append(lambda: make_pool(0).records)
    out = []
    for src in sources:
        for r in src():
            e = encode_record(tok, r, max_length=tokens)
            if e.length == tokens and e.n_response > 0:
                out.append(r)
                if len(out) == n:
                    return out, "shared T0" if root is not None else "built-in pool"
    raise SystemExit(f"only {len(out)} examples of {tokens} tokens found; lower --tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="examples per timed run")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per side (interleaved; median reported)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per example")
    ap.add_argument("--dim", type=int, default=2048, help="projection dimension")
    a = ap.parse_args()

    import numpy as np
    import torch

    from g2is_core import runtime
    from g2is_core.features import extract as ex
    from g2is_core.features.projection import Projector, ProjectorConfig
    from g2is_core.heads.patterns import activation_pattern
    from g2is_core.models.lora import SMALL_LORA, randomise_lora

    runtime.apply_thread_policy()
    load_start = os.getloadavg()
    lm, note = load()
    model = ex.prepare_model(lm, SMALL_LORA)
    layout = ex.lora_layout(model)
    P = layout.total
    g = torch.Generator().manual_seed(0)
    randomise_lora(model, g, 0.02)
    moments = (torch.randn(P, generator=g) * 1e-4, torch.rand(P, generator=g) * 1e-7)
    recs, source = records(lm.tokenizer, a.n + 2, a.tokens)
    warm, timed = recs[a.n:], recs[: a.n]
    cfg = ex.FeatureConfig(kind="adam", max_length=a.tokens)
    proj = Projector(ProjectorConfig(dim=a.dim), P)
    L, H = ex.head_dims(model)

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
          f"load average at start {tuple(round(x, 2) for x in load_start)}")
    print(f"{note}: {L} layers x {H} heads, {P:,} LoRA parameters; {a.n} {source} examples of {a.tokens} tokens, "
          f"train (Adam) features d={a.dim}, fp32; command: python bench/bench_head_signatures.py "
          f"{' '.join(sys.argv[1:])}".rstrip())
    # warm-up: fills the projector's sign cache and the allocator, for both sides
    ex.extract(model, lm.tokenizer, warm, cfg, proj, moments=moments,
               heads=np.zeros((len(warm), L, H), np.float32))
    times: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    feats: dict[str, np.ndarray] = {}
    sig = np.zeros((a.n, L, H), np.float32)
    for i in range(a.reps):
        for side in (("without", "with") if i % 2 == 0 else ("with", "without")):
            t, c = time.perf_counter(), time.process_time()
            feats[side] = ex.extract(model, lm.tokenizer, timed, cfg, proj, moments=moments,
                                     heads=sig if side == "with" else None)
            times[side].append(time.perf_counter() - t)
            cpu[side].append(time.process_time() - c)
    enc = ex.encode_rows(lm.tokenizer, timed, cfg)
    t = time.process_time()
    ap_sep = activation_pattern(model, enc, pad_id=lm.tokenizer.pad_token_id, batch_size=cfg.max_batch,
                                max_tokens=cfg.batch_tokens)
    separate = time.process_time() - t

    t0, t1 = statistics.median(times["without"]), statistics.median(times["with"])
    c0, c1 = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    for side, t, c in (("without", t0, c0), ("with", t1, c1)):
        print(f"{side + ' signatures:':<22} CPU {a.n / c:.3f} examples/s (median {c:.2f} CPU s; runs {runs(cpu[side])}); "
              f"wall {a.n / t:.3f} examples/s (median {t:.2f} s; runs {runs(times[side])})")
    print(f"ratio with / without, CPU time: {c1 / c0:.3f} -> extra cost {100 * (c1 / c0 - 1):+.1f}% (goal: under +10%); "
          f"wall time: {t1 / t0:.3f} ({100 * (t1 / t0 - 1):+.1f}%)")
    print(f"for scale, the same signatures as a separate pass (activation_pattern, gate route): {separate:.2f} CPU s "
          f"= {100 * separate / c0:.0f}% of the plain extraction")
    print(f"checks: features with == without signatures bitwise: {bool(np.array_equal(feats['with'], feats['without']))}; "
          f"max |in-pass - separate| / max signature = "
          f"{float(np.abs(sig - ap_sep.per_sample).max() / np.abs(ap_sep.per_sample).max()):.2e}")
    print(f"load average at end {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
