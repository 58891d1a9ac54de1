"""Benchmark: gradient-feature extraction on the default model (SmolLM2-135M-Instruct) against this machine's roofline.

Prints, in one run, at 1 and at 2 torch threads (each in its own process):
- the measured GEMM peak (2048^3 matmul): fp32, and bf16 only where the CPU runs bf16 natively
  (``runtime.bf16_is_fast``; elsewhere bf16 is emulated and not a roofline);
- the FLOPs per example of the fast path, counted from the model's shapes (:func:`flops_per_example`);
- the fast path's examples/s and its share of the fp32 roofline (examples/s x FLOPs / GEMM peak);
- the projection's share of extraction time at d=2048 and d=8192, BEFORE (every block of R drawn for
  every 64-row group, as until the sign cache) and AFTER (the sign cache, warm), side by side, and
  the one-time cost of filling the cache;
- a LESS-style loop as a contender (peft model, batch 1, the model's own loss with full logits, one
  backward per example, the flattened LoRA ``.grad``, the Adam direction, projected every 16
  examples as LESS's ``collect_grad_reps`` does, with the projector drawn every time, as TRAK's
  BasicProjector does with several blocks) and the ratio fast / LESS-style.

    python bench/bench_gradients.py                       # about 9 minutes on 2 cores shared at load 6-8
    python bench/bench_gradients.py --n-fast 16 --n-less 8 --threads 1    # quicker

The LoRA is the project default for the small model (r=8, alpha=32 on q,k,v,o) with random non-zero
A and B and random Adam moments standing in for a warmup checkpoint (the cost is the same); train
(Adam-direction) features; 128-token T0 examples.

Projection share. The extraction time per example is split as measured in the same process: the
gradient part = the fast path's time minus the time spent in ``project_rows`` (timed around it);
the projection part = ``project_rows`` on a 64-row group (the default ``proj_rows``) over the first
``--proj-blocks`` blocks of R (4096 parameters each), scaled to all P/4096 blocks (every block costs
the same), divided by 64. share = projection / (gradient + projection).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from g2is_core.runtime import cpu_model  # noqa: E402  (after the path: runs from a checkout)
T = 128
GROUP = 64            # rows per projection group (FeatureConfig.proj_rows default)
LESS_INTERVAL = 16    # LESS collect_grad_reps: project every 16 examples


def examples(tok, n: int):
    """The first ``n`` records of the shared T0 pool files that encode to at least 128 tokens, cut to 128."""
    from g2is_core.data.encoding import encode_record
    from g2is_core.data.loaders import load_records
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


def flops_per_example(model, n_lora: int, dim: int, n_labels: float, full_logits: bool) -> dict[str, float]:
    """Matmul FLOPs per example (multiply-add = 2), what the fast path must do at minimum.

    Frozen base (q,k,v,o,gate,up,down of every layer): forward 2*N*T and the input-gradient backward
    2*N*T (no weight gradients); attention scores QK^T and AV, causal half, forward + 2x backward;
    the vocabulary head on the label positions only (fast) or all T (LESS-style / reference), forward +
    input gradient; the LoRA branch: forward, backward and the per-example weight gradients, 3 x 2*P*T;
    the projection 2*P*d. Not counted: norms, softmax, SiLU, RoPE, the Adam direction (elementwise).
    """
    cfg = model.config
    H, L, I = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = H // cfg.num_attention_heads * cfg.num_key_value_heads
    n_layer = L * (2 * H * H + 2 * H * kv + 3 * H * I)
    base = 2 * n_layer * T * 2
    attn = 6 * T * T * H * L
    head = 2 * H * cfg.vocab_size * (T if full_logits else n_labels) * 2
    lora = 2 * n_lora * T * 3
    proj = 2 * n_lora * dim
    return {"model": base + attn + head, "lora": lora, "projection": proj, "total": base + attn + head + lora + proj}


def gemm_peak(dtype, n: int = 2048, reps: int = 6) -> float:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def gemm_sustained(seconds: float = 4.0, n: int = 2048) -> float:
    """Mean fp32 GEMM rate over ``seconds`` of back-to-back 2048^3 matmuls: the roofline under the load of the moment."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0)


def drawn_every_time():
    """The projector as it was before the sign cache: every block drawn, converted and scaled into a fresh tensor."""
    import torch

    from g2is_core.features.projection import Projector

    class DrawnEveryTime(Projector):
        def block_view(self, k: int):
            return self._scale(self._draw(k), torch.float32)
    return DrawnEveryTime


def less_loop(model, encoded, pad_id: int, layout, projector, moments, cfg):
    """LESS-style features [N, d]: batch 1, model loss (full logits), backward, flatten .grad, Adam, project per 16."""
    import numpy as np
    import torch

    from g2is_core.data.encoding import collate
    from g2is_core.features.projection import adam_direction
    from g2is_core.linalg import unit_rows
    from g2is_core.models.lora import lora_parameters

    params = dict(lora_parameters(model))
    out, buf = [], []
    for i, e in enumerate(encoded):
        model.zero_grad(set_to_none=True)
        model(**collate([e], pad_id, "cpu")).loss.backward()
        g = torch.cat([params[n].grad.reshape(-1) for n in layout.names])
        buf.append(adam_direction(g, moments[0], moments[1], cfg.beta1, cfg.beta2, cfg.eps))
        if len(buf) == LESS_INTERVAL or i == len(encoded) - 1:
            out.append(unit_rows(projector.project(torch.stack(buf)), zero="keep").numpy())
            buf = []
    model.zero_grad(set_to_none=True)
    return np.concatenate(out)


def child(threads: int, n_fast: int, n_less: int, proj_blocks: int, out: str) -> None:
    import numpy as np
    import torch

    import g2is_core.features.extract as ex
    from g2is_core import runtime
    from g2is_core.features.projection import Projector, ProjectorConfig
    from g2is_core.models.loading import load_model
    from g2is_core.models.lora import SMALL_LORA, randomise_lora

    runtime.apply_thread_policy(threads)
    res: dict = {"threads": threads, "load_start": os.getloadavg()[0]}
    res["gemm_fp32"] = gemm_peak(torch.float32)
    res["bf16_native"] = runtime.bf16_is_fast("cpu")
    if res["bf16_native"]:
        res["gemm_bf16"] = gemm_peak(torch.bfloat16)
    lm = load_model(os.environ.get("BENCH_MODEL", "default"))
    model = ex.prepare_model(lm, SMALL_LORA)
    layout = ex.lora_layout(model)
    P = layout.total
    g = torch.Generator().manual_seed(0)
    randomise_lora(model, g, 0.02)
    moments = (torch.randn(P, generator=g) * 1e-4, torch.rand(P, generator=g) * 1e-7)
    recs = examples(lm.tokenizer, max(n_fast, n_less) + 8)
    cfg = ex.FeatureConfig(kind="adam", max_length=T)

    # Fast path, d=2048, sign cache warm (the warm-up call fills it: a one-time cost per run).
    spent = [0.0]
    plain = ex.project_rows

    def timed_project_rows(*a, **k):
        t = time.perf_counter()
        r = plain(*a, **k)
        spent[0] += time.perf_counter() - t
        return r
    ex.project_rows = timed_project_rows
    proj = Projector(ProjectorConfig(dim=2048), P)
    t = time.perf_counter()
    ex.extract(model, lm.tokenizer, recs[-8:], cfg, proj, moments=moments)
    res["fast_warmup_s"] = time.perf_counter() - t
    spent[0] = 0.0
    t = time.perf_counter()
    fast = ex.extract(model, lm.tokenizer, recs[:n_fast], cfg, proj, moments=moments)
    res["fast_s"] = time.perf_counter() - t
    res["fast_proj_s"] = spent[0]
    ex.project_rows = plain
    enc = ex.encode_rows(lm.tokenizer, recs[:n_fast], cfg)
    n_labels = sum(sum(1 for x in e.labels[1:] if x != -100) for e in enc) / n_fast
    base = lm.model.get_base_model()
    res.update(n_fast=n_fast, n_params=P, n_labels=n_labels, cached_mb_2048=proj.cached_mb,
               flops={d: flops_per_example(base, P, d, n_labels, False) for d in (2048, 8192)},
               flops_less=flops_per_example(base, P, 2048, n_labels, True))
    res["load_fast"] = os.getloadavg()[0]
    res["gemm_fp32_after_fast"] = gemm_sustained()

    # Projection of one 64-row group over the first proj_blocks blocks of R: drawn every time vs sign cache.
    Drawn = drawn_every_time()
    Psub = min(P, proj_blocks * 4096)
    G = torch.randn(GROUP, Psub, generator=g) * 1e-3
    msub = (moments[0][:Psub].contiguous(), moments[1][:Psub].contiguous())
    res["proj"] = {}
    for d in (2048, 8192):
        c = ProjectorConfig(dim=d)
        t = time.perf_counter()
        x_before = ex.project_rows(G, Drawn(c, Psub), cfg, msub)
        before = time.perf_counter() - t
        cached = Projector(c, Psub)
        t = time.perf_counter()
        x_fill = ex.project_rows(G, cached, cfg, msub)
        fill = time.perf_counter() - t
        t = time.perf_counter()
        x_after = ex.project_rows(G, cached, cfg, msub)
        after = time.perf_counter() - t
        scale = P / Psub
        res["proj"][d] = {"before": before * scale, "fill": fill * scale, "after": after * scale,
                          "bitwise": bool(torch.equal(x_before.view(torch.int32), x_after.view(torch.int32))
                                          and torch.equal(x_before.view(torch.int32), x_fill.view(torch.int32))),
                          "cache_mb": cached.cached_mb * scale}
    res["proj_blocks"], res["load_proj"] = Psub // 4096, os.getloadavg()[0]

    # LESS-style loop (d=2048, projector drawn every time), its own warm-up example first.
    less_proj = Drawn(ProjectorConfig(dim=2048), P)
    less_loop(model, ex.encode_rows(lm.tokenizer, recs[-1:], cfg)[:1] * 1, lm.tokenizer.pad_token_id, layout,
              Projector(ProjectorConfig(dim=8), P), moments, cfg)
    enc_less = ex.encode_rows(lm.tokenizer, recs[:n_less], cfg)
    t = time.perf_counter()
    less = less_loop(model, enc_less, lm.tokenizer.pad_token_id, layout, less_proj, moments, cfg)
    res["less_s"], res["n_less"] = time.perf_counter() - t, n_less
    k = min(n_less, n_fast)
    res["gemm_fp32_after_less"] = gemm_sustained()
    res["cos_fast_less_min"] = float((fast[:k] * less[:k]).sum(1).min())
    res["load_end"] = os.getloadavg()[0]
    import resource
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps(res))



def report(res: dict) -> None:
    t = res["threads"]
    g32 = res["gemm_fp32"]
    fl = res["flops"]["2048"]
    rate = res["n_fast"] / res["fast_s"]
    less_rate = res["n_less"] / res["less_s"]
    grad_per_ex = (res["fast_s"] - res["fast_proj_s"]) / res["n_fast"]
    print(f"\n== {t} thread{'s' * (t > 1)}  (load average 1-min: start {res['load_start']:.2f}, after fast path "
          f"{res['load_fast']:.2f}, after projection {res['load_proj']:.2f}, end {res['load_end']:.2f}; "
          f"peak RSS {res['peak_rss_mb']:.0f} MB)")
    bf = (f"bf16 {res['gemm_bf16'] / 1e9:.1f} GFLOP/s (native)" if res["bf16_native"]
          else "bf16: not native on this CPU (emulated), no bf16 roofline")
    print(f"GEMM peak (2048^3 matmul): fp32 {g32 / 1e9:.1f} GFLOP/s (best of 6, at the start); {bf}; "
          f"fp32 sustained over 4 s right after the fast path {res['gemm_fp32_after_fast'] / 1e9:.1f}, after the "
          f"LESS-style loop {res['gemm_fp32_after_less'] / 1e9:.1f} GFLOP/s (the roofline under the load of the moment)")
    print(f"FLOPs per example (fast path, d=2048): {fl['total'] / 1e9:.2f} G = model {fl['model'] / 1e9:.2f} "
          f"+ LoRA {fl['lora'] / 1e9:.2f} + projection {fl['projection'] / 1e9:.2f}  "
          f"(d=8192: projection {res['flops']['8192']['projection'] / 1e9:.2f}, total "
          f"{res['flops']['8192']['total'] / 1e9:.2f})")
    print(f"fast path d=2048 fp32, {res['n_fast']} examples: {rate:.3f} examples/s ({1 / rate:.2f} s/example), "
          f"{rate * fl['total'] / 1e9:.1f} GFLOP/s = {100 * rate * fl['total'] / g32:.1f}% of the fp32 peak, "
          f"{100 * rate * fl['total'] / res['gemm_fp32_after_fast']:.1f}% of the sustained rate after it "
          f"(projection inside: {res['fast_proj_s']:.2f} s of {res['fast_s']:.1f} s; sign cache "
          f"{res['cached_mb_2048']:.0f} MB, filled in the warm-up)")
    print(f"projection of a {GROUP}-row group, per example, measured on {res['proj_blocks']} of "
          f"{math.ceil(res['n_params'] / 4096)} blocks and scaled; gradient part {grad_per_ex:.3f} s/example:")
    print(f"  {'d':>5} {'before s/ex':>12} {'share':>7} {'after s/ex':>11} {'share':>7} {'fill once':>10} "
          f"{'cache MB':>9} {'bitwise':>8}")
    for d, p in res["proj"].items():
        b, a = p["before"] / GROUP, p["after"] / GROUP
        print(f"  {d:>5} {b:>12.4f} {100 * b / (grad_per_ex + b):>6.1f}% {a:>11.4f} {100 * a / (grad_per_ex + a):>6.1f}% "
              f"{p['fill']:>9.1f}s {p['cache_mb']:>9.0f} {str(p['bitwise']):>8}")
    print(f"LESS-style loop (batch 1, full logits, .grad, projector drawn every {LESS_INTERVAL} examples), "
          f"{res['n_less']} examples: {less_rate:.3f} examples/s ({1 / less_rate:.2f} s/example); "
          f"fast / LESS-style = {rate / less_rate:.2f}x; min cosine fast vs LESS-style features "
          f"{res['cos_fast_less_min']:.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-fast", type=int, default=32, help="examples timed on the fast path")
    ap.add_argument("--n-less", type=int, default=16, help="examples timed on the LESS-style loop")
    ap.add_argument("--proj-blocks", type=int, default=32, help="blocks of R timed for the projection share")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, one process each")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*(int(x) for x in a.child[:4]), a.child[4])
        return
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average at start {os.getloadavg()}")
    print(f"default model, {T}-token T0 examples, LoRA r=8, train (Adam) features, fp32; "
          f"command: python bench/bench_gradients.py {' '.join(sys.argv[1:])}".rstrip())
    try:
        import bergson  # noqa: F401
        print("bergson: installed, but no contender is written for it in this bench (optional)")
    except ImportError:
        print("bergson: not installed, skipped (optional contender; not a dependency)")
    with tempfile.TemporaryDirectory() as tmp:
        for t in (int(x) for x in a.threads.split(",")):
            out = os.path.join(tmp, f"t{t}.json")
            env = {**os.environ, "G2IS_THREADS": str(t), "OMP_WAIT_POLICY": "PASSIVE"}
            subprocess.run([sys.executable, __file__, "--child", str(t), str(a.n_fast), str(a.n_less),
                            str(a.proj_blocks), out], check=True, env=env)
            report(json.loads(Path(out).read_text()))
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
