"""FLOPs per example of gradient-feature extraction and the measured GEMM peak: the roofline's two numbers.

The FLOP count is bench/bench_gradients.py's formula (same terms, same constants) with the sequence
length T and the label count as arguments instead of that bench's fixed T = 128, so examples of
different lengths are counted each at its own length (attention grows with T^2). Kept in a module
of its own so that every bench can share it (bench/gpu_check.py uses it; bench_gradients.py can).

    from flops import example_flops, batch_flops, gemm_peak
"""
from __future__ import annotations

import time
from typing import Any, Sequence

IGNORE = -100


def example_flops(config: Any, n_params: int, dim: int, T: int, n_labels: float,
                  full_logits: bool = False) -> dict[str, float]:
    """Matmul FLOPs of one example of T tokens (multiply-add = 2), by part.

    ``config``: the decoder's config (hidden_size, num_hidden_layers, intermediate_size,
    num_attention_heads, num_key_value_heads, vocab_size). ``n_params``: LoRA parameters P;
    ``dim``: projection d; ``n_labels``: label positions (the fast path's lm_head rows).
    Frozen base: forward 2*N*T, backward input grads 2*N*T (no weight grads); lm_head on label
    positions only (fast) or all T (reference); attention scores (causal half, forward + 2x
    backward); LoRA branch forward, backward and per-example weight grads 2*P*T*3; projection 2*P*d.
    Returns {"model", "lora", "projection", "total"}.
    """
    H, L, I = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = H // config.num_attention_heads * (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    n_layer = L * (2 * H * H + 2 * H * kv + 3 * H * I)                 # q,o + k,v + gate,up,down weights
    V = config.vocab_size
    head_rows = T if full_logits else n_labels
    base = 2 * n_layer * T * 2                                           # forward + input-grad backward
    attn = 6 * T * T * H * L                                             # QK^T, AV: causal half, fwd + 2x bwd
    head = 2 * H * V * head_rows * 2                                     # lm_head forward + input grad
    lora = 2 * n_params * T * 3                                          # branch fwd, bwd, weight grads
    proj = 2 * n_params * dim
    return {"model": float(base + attn + head), "lora": float(lora), "projection": float(proj),
            "total": float(base + attn + head + lora + proj)}


def forward_flops(config: Any, T: int, n_labels: float) -> float:
    """Matmul FLOPs of one forward pass over T tokens with the vocabulary projection at ``n_labels`` positions only
    (the scoring path: :func:`g2is_core.loop.evaluation.scoring.sequence_logprobs`); the terms of
    :func:`example_flops` without the backward."""
    H, L, I = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = H // config.num_attention_heads * (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    n_layer = L * (2 * H * H + 2 * H * kv + 3 * H * I)
    return float(2 * n_layer * T + 2 * T * T * H * L + 2 * H * config.vocab_size * n_labels)


def n_labels_of(labels: Sequence[int]) -> int:
    """Label positions the loss sees: labels[1:] that are not -100 (position t predicts token t+1)."""
    return sum(1 for x in list(labels)[1:] if x != IGNORE)


def batch_flops(config: Any, n_params: int, dim: int, encoded: Sequence[Any],
                full_logits: bool = False) -> dict[str, float]:
    """Summed :func:`example_flops` of ``encoded`` (objects with ``input_ids`` and ``labels``), each at its
    own length; padding is not counted (it is work the batching adds, not work the features need)."""
    tot = {"model": 0.0, "lora": 0.0, "projection": 0.0, "total": 0.0}
    for e in encoded:
        f = example_flops(config, n_params, dim, len(e.input_ids), n_labels_of(e.labels), full_logits)
        for key in tot:
            tot[key] += f[key]
    return tot


def gemm_peak(dtype_name: str, device: str = "cpu", n: int = 2048, reps: int = 6, warmup: int = 2) -> float:
    """FLOP/s of the best of ``reps`` n x n x n matmuls in ``dtype_name`` ("fp32" | "bf16") on ``device``.

    On CUDA each product is timed with CUDA events (the launch is asynchronous); on the CPU with a
    wall clock. Random normal operands (zeros run faster on some GPUs).
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
    for _ in range(warmup):
        a @ b
    best = float("inf")
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best
