"""Dense vs sparse projection: share of extraction time and distortion on real gradient features.

    G2IS_THREADS=1 python bench/bench_projection.py [--n 32]

Real default model (BENCH_MODEL to override), 1 thread, ``n`` T0 examples of 128 tokens, train
features (Adam direction) with the bench_gradients.py stand-ins for a warmup (LoRA factors and Adam
moments drawn from a fixed seed). One extraction (fast path, one projection group of n rows) gives
the gradient rows G [n, P] and the time to compute them; each projector (dense / sparse x d) then
projects the SAME G: "cold" = the run's first group (signs drawn, caches filled), "warm" = every later
group. Share = projection / (gradient rows + projection) for one group. Distortion: pairwise cosines
of the n features, sparse vs dense and each vs the exact (unprojected) cosines of the Adam directions.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def pair_stats(a, b):
    """(mean |a - b|, Pearson r) over the off-diagonal pairs of two [n, n] cosine matrices."""
    import numpy as np

    iu = np.triu_indices(a.shape[0], 1)
    x, y = a[iu], b[iu]
    return float(np.abs(x - y).mean()), float(np.corrcoef(x, y)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="examples (one projection group)")
    args = ap.parse_args()
    import numpy as np
    import torch

    import g2is_core.features.extract as ex
    from bench_gradients import T, cpu_model, examples
    from g2is_core import runtime
    from g2is_core.features.projection import SPARSE_S, Projector, ProjectorConfig, adam_direction
    from g2is_core.models.loading import load_model
    from g2is_core.models.lora import SMALL_LORA, lora_parameters

    runtime.apply_thread_policy(1)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; 1 thread; load average at start {os.getloadavg()}")
    lm = load_model(os.environ.get("BENCH_MODEL", "default"))
    model = ex.prepare_model(lm, SMALL_LORA)
    P = ex.lora_layout(model).total
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    moments = (torch.randn(P, generator=g) * 1e-4, torch.rand(P, generator=g) * 1e-7)
    recs = examples(lm.tokenizer, args.n)
    cfg = ex.FeatureConfig(kind="adam", max_length=T, proj_rows=args.n)

    caught, plain = {}, ex.project_rows

    def catch(G, projector, c, m=None):
        caught["G"] = G.clone()
        t = time.perf_counter()
        out = plain(G, projector, c, m)
        caught["proj_s"] = time.perf_counter() - t
        return out
    ex.project_rows = catch
    t = time.perf_counter()
    ex.extract(model, lm.tokenizer, recs, cfg, Projector(ProjectorConfig(dim=2048), P), moments=moments)
    grad_s = time.perf_counter() - t - caught["proj_s"]
    ex.project_rows = plain
    G = caught["G"]
    print(f"n={args.n} examples x {T} tokens, P={P} LoRA parameters (r={SMALL_LORA.r}); gradient rows: "
          f"{grad_s:.1f} s ({args.n / grad_s:.2f} ex/s without projection); load {os.getloadavg()[0]:.2f}")

    gam = adam_direction(G, moments[0], moments[1], cfg.beta1, cfg.beta2, cfg.eps)
    gam = gam / gam.norm(dim=1, keepdim=True)
    exact = (gam @ gam.T).numpy()
    del gam
    print(f"\n{'projector':<16}{'d':>6}{'cold s':>9}{'warm s':>9}{'share cold':>12}{'share warm':>12}"
          f"{'|cos-exact|':>13}{'r exact':>9}{'load':>7}")
    feats = {}
    for d in (2048, 8192):
        for kind in ("dense", "sparse"):
            pr = Projector(ProjectorConfig(dim=d, kind=kind), P)
            t = time.perf_counter()
            ex.project_rows(G, pr, cfg, moments)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            F = ex.project_rows(G, pr, cfg, moments).numpy()
            warm = time.perf_counter() - t
            feats[kind, d] = F @ F.T
            md, r = pair_stats(feats[kind, d], exact)
            name = kind if kind == "dense" else f"sparse s={SPARSE_S}"
            print(f"{name:<16}{d:>6}{cold:>9.2f}{warm:>9.3f}{cold / (grad_s + cold):>12.1%}"
                  f"{warm / (grad_s + warm):>12.1%}{md:>13.4f}{r:>9.4f}{os.getloadavg()[0]:>7.2f}")
            del pr
        md, r = pair_stats(feats["sparse", d], feats["dense", d])
        print(f"  d={d}: sparse vs dense pairwise cosines: mean |cos_sparse - cos_dense| {md:.4f}, r {r:.4f}")
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
