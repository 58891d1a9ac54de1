"""Benchmark: gradient-feature extraction on the default model (SmolLM2-135M-Instruct), 128-token examples.

Prints, in one run: samples/s of the reference path and of the fast path (fp32, bf16), their ratio,
peak RSS of each (each path runs in its own process), FLOPs per example, the GEMM peak measured on
this machine (2048^3 matmul, fp32 and bf16) and the fast path's fraction of that roofline; plus the
per-example cosine of the fast features against the reference's on the same examples.

    python bench/bench_gradients.py                  # about 5 minutes on 2 cores
    python bench/bench_gradients.py --n-fast 32 --n-ref 2   # quicker

Torch runs with 2 threads (torch.set_num_threads(2)). The LoRA is the project default for the small
model (r=8, alpha=32 on q,k,v,o) with random non-zero A and B and random Adam moments standing in
for a warmup checkpoint (the cost is the same as with a real one); features are train features
(Adam direction), projected to d=2048.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
THREADS = 2
T = 128


def examples(tok, n: int):
    """The first ``n`` records of the shared T0 pool files that encode to at least 128 tokens, cut to 128."""
    from g2is_core.data.loaders import load_records
    from g2is_core.data.encoding import encode_record
    from g2is_core.workspace import shared_data_root

    root = shared_data_root()
    if root is None:
        raise SystemExit("the shared data folder (../shared/data) is missing")
    files = sorted((root / "t0_train_50k" / "data_per_template").glob("*.jsonl.gz"))
    out = []
    for f in files:
        for r in load_records(f).records:
            e = encode_record(tok, r, max_length=T)
            if e.length == T and e.n_response > 0:
                out.append(r)
                if len(out) == n:
                    return out
    raise SystemExit(f"only {len(out)} examples of {T} tokens found")


def flops_per_example(model, layout_total: int, dim: int, n_labels: float, full_logits: bool) -> dict[str, float]:
    """Matmul FLOPs per example (multiply-add = 2). Frozen base: forward 2*N*T, backward input grads 2*N*T
    (no weight grads); lm_head on label positions only (fast) or all T (reference); attention scores;
    LoRA branch forward + per-example weight grads; projection 2*P*d."""
    cfg = model.config
    H, L, I = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = H // cfg.num_attention_heads * cfg.num_key_value_heads
    n_layer = L * (2 * H * H + 2 * H * kv + 3 * H * I)                 # q,o + k,v + gate,up,down weights
    V = cfg.vocab_size
    head_rows = T if full_logits else n_labels
    base = 2 * n_layer * T * 2                                           # forward + input-grad backward
    attn = 6 * T * T * H * L                                             # QK^T, AV: causal half, fwd + 2x bwd
    head = 2 * H * V * head_rows * 2                                     # lm_head forward + input grad
    lora_params = layout_total
    lora = 2 * lora_params * T * 3                                       # branch fwd, bwd, weight grads
    proj = 2 * lora_params * dim
    return {"model": base + attn + head, "lora": lora, "projection": proj, "total": base + attn + head + lora + proj}


def gemm_peak(dtype_name: str, n: int = 2048, reps: int = 6) -> float:
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def child(path: str, n: int, out: str) -> None:
    import numpy as np
    import torch

    from g2is_core.features.extract import FeatureConfig, encode_rows, extract, lora_layout, prepare_model
    from g2is_core.features.projection import DEFAULT_DIM, Projector, ProjectorConfig
    from g2is_core.models.lora import SMALL_LORA, lora_parameters
    from g2is_core import runtime
    from g2is_core.models.loading import load_model

    runtime.apply_thread_policy(THREADS)
    lm = load_model("default")
    model = prepare_model(lm, SMALL_LORA)
    layout = lora_layout(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    moments = (torch.randn(layout.total, generator=g) * 1e-4, torch.rand(layout.total, generator=g) * 1e-7)
    recs = examples(lm.tokenizer, max(n, 8))
    proj = Projector(ProjectorConfig(dim=DEFAULT_DIM), layout.total)
    cfg = FeatureConfig(kind="adam", max_length=T, bf16=(path == "fast-bf16"))
    method = "reference" if path == "reference" else "fast"
    extract(model, lm.tokenizer, recs[:1 if method == "reference" else 8], cfg, proj, moments=moments, method=method)
    t0 = time.perf_counter()
    feats = extract(model, lm.tokenizer, recs[:n], cfg, proj, moments=moments, method=method)
    el = time.perf_counter() - t0
    enc = encode_rows(lm.tokenizer, recs[:n], cfg)
    n_labels = sum(sum(1 for x in e.labels[1:] if x != -100) for e in enc) / n
    np.save(out + ".npy", feats)
    fl = flops_per_example(lm.model.get_base_model(), layout.total, proj.cfg.dim, n_labels, method == "reference")
    res = {"path": path, "n": n, "seconds": el, "samples_per_s": n / el, "n_params": layout.total,
           "n_labels": n_labels, "flops": fl, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "gemm_peak": gemm_peak("bf16" if path == "fast-bf16" else "fp32")}
    Path(out + ".json").write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-fast", type=int, default=64, help="examples timed on the fast path (one projection group)")
    ap.add_argument("--n-ref", type=int, default=3, help="examples timed on the reference path")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "N", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.child[2])
        return
    import numpy as np

    env = {**os.environ, "G2IS_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE"}
    res, feats = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, n in (("reference", a.n_ref), ("fast-fp32", a.n_fast), ("fast-bf16", a.n_fast)):
            out = os.path.join(tmp, path)
            print(f"running {path} on {n} examples ...", flush=True)
            subprocess.run([sys.executable, __file__, "--child", path, str(n), out], check=True, env=env)
            res[path] = json.loads(Path(out + ".json").read_text())
            feats[path] = np.load(out + ".npy")
    ref, f32, f16 = res["reference"], res["fast-fp32"], res["fast-bf16"]
    k = min(len(feats["reference"]), len(feats["fast-fp32"]))
    cos32 = (feats["reference"][:k] * feats["fast-fp32"][:k]).sum(1)
    cos16 = (feats["reference"][:k] * feats["fast-bf16"][:k]).sum(1)
    print()
    print(f"default model, {T}-token T0 examples, torch threads {THREADS}, LoRA r=8 ({ref['n_params']:,} params), "
          f"d=2048, train (Adam) features; mean label tokens {f32['n_labels']:.1f}")
    print(f"GEMM peak measured (2048^3 matmul): fp32 {f32['gemm_peak'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {f16['gemm_peak'] / 1e9:.1f} GFLOP/s")
    print(f"{'path':<11} {'samples/s':>10} {'s/sample':>9} {'peak RSS':>10} {'GFLOP/ex':>9} {'GFLOP/s':>8} {'roofline':>9}")
    for p, r in res.items():
        fl = r["flops"]["total"]
        rate = r["samples_per_s"] * fl
        print(f"{p:<11} {r['samples_per_s']:>10.3f} {1 / r['samples_per_s']:>9.2f} {r['peak_rss_mb']:>8.0f}MB "
              f"{fl / 1e9:>9.1f} {rate / 1e9:>8.1f} {100 * rate / r['gemm_peak']:>8.1f}%")
    print(f"FLOPs per example (fast): model {f32['flops']['model'] / 1e9:.1f} G, LoRA {f32['flops']['lora'] / 1e9:.2f} G, "
          f"projection {f32['flops']['projection'] / 1e9:.2f} G; reference computes full logits: "
          f"{ref['flops']['total'] / 1e9:.1f} G")
    print(f"speed-up fast fp32 / reference: {f32['samples_per_s'] / ref['samples_per_s']:.1f}x; "
          f"fast bf16 / reference: {f16['samples_per_s'] / ref['samples_per_s']:.1f}x; "
          f"bf16 / fp32: {f16['samples_per_s'] / f32['samples_per_s']:.2f}x")
    print(f"features vs reference on the first {k} examples: fp32 min cosine {cos32.min():.6f}, "
          f"bf16 min cosine {cos16.min():.4f}")


if __name__ == "__main__":
    main()
