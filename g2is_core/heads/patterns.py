"""Attention-head activation patterns (heads_method.md section 1; Zhao et al., ACL 2025).

For samples x_1..x_N and a model with L layers and H query heads::

    AP[l, h] = (1/N) * sum_i | sum_{q,k} A_lh(x_i)[q, k] * dLoss(x_i)/dA_lh(x_i)[q, k] |

with Loss(x_i) the mean cross-entropy over the RESPONSE tokens of sample i (labels != -100).

Two routes compute the same numbers:

- ``"gate"`` (the default): a scalar gate g[b, l, h] = 1 multiplies each head's output before
  ``o_proj`` (a forward pre-hook on every layer's ``self_attn.o_proj``, whose input is
  [B, T, H * head_dim]). Since head h's output is o[q] = sum_k A[q, k] v[k], dLoss/dg equals the
  inner sum above exactly (Michel et al. 2019, without their layer normalisation). One backward
  gives all L x H values for every sample of the batch, with any attention kernel (sdpa, flash),
  and never materialises the T x T probabilities.
- ``"eager"`` (the test oracle): run with ``attn_implementation="eager"`` and
  ``output_attentions=True``, take the gradient of the loss w.r.t. each returned probability
  matrix and contract it with the matrix.

Per-sample values come from one batched pass because the loss is the SUM of per-sample losses and
samples do not interact: the gradient w.r.t. gate[b] is sample b's own.

Measurement runs in eval mode (dropout off), never updates or leaves gradients on the parameters
(their ``requires_grad`` flags are lowered for the pass and restored), and runs in fp32 unless
``autocast=True`` is asked for. With grouped-query attention the pattern has one column per QUERY
head; :func:`kv_group` says which KV head a query head reads.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .. import runtime
from ..data.encoding import Encoded, collate, length_buckets
from ..models import lm_ops
from ..progress import Progress, no_progress

ROUTES = ("gate", "eager")


# ----------------------------------------------------------------------------- labels
def head_label(layer: int, head: int) -> str:
    """Display name of a head: ``L{layer}H{head}`` (both 0-based)."""
    return f"L{layer}H{head}"


def kv_group(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The KV head that query head ``head`` reads under grouped-query attention."""
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot be grouped over {n_kv_heads} KV heads")
    return head // (n_heads // n_kv_heads)


# ----------------------------------------------------------------------------- the pattern
@dataclass
class ActivationPattern:
    """An activation pattern and what it was measured on.

    ``values``: [layer, head] mean over samples of the absolute per-sample scores (the AP).
    ``per_sample``: [sample, layer, head] absolute per-sample scores, in the order of the inputs.
    """

    values: np.ndarray
    per_sample: np.ndarray
    n_kv_heads: int
    route: str = "gate"
    ids: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.values.shape[1])

    def kv_groups(self) -> np.ndarray:
        """[head] KV group of each query head."""
        return np.array([kv_group(h, self.n_heads, self.n_kv_heads) for h in range(self.n_heads)])


# ----------------------------------------------------------------------------- model plumbing
def _dims(model) -> tuple[int, int, int]:
    cfg = lm_ops.unwrap(model).config
    h = int(cfg.num_attention_heads)
    return int(cfg.num_hidden_layers), h, int(getattr(cfg, "num_key_value_heads", None) or h)


@contextlib.contextmanager
def measuring(model) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; both restored afterwards (grads untouched)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


@contextlib.contextmanager
def attention_implementation(model, name: str) -> Iterator[None]:
    """Switch the attention kernel (e.g. to "eager") for the duration, then restore it."""
    base = lm_ops.unwrap(model)
    old = base.config._attn_implementation
    if old == name:
        yield
        return
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(old)


def _gate_scores(model, batch, n_layers: int, n_heads: int):
    """[B, L, H] signed dLoss_b/dgate[b, l, h] at gate = 1 (see the module docstring)."""
    import torch

    B = batch["input_ids"].shape[0]
    gate = torch.ones(B, n_layers, n_heads, requires_grad=True, device=batch["input_ids"].device)
    with lm_ops.hooks(pre=lm_ops.head_gates(model, gate)):
        per, _ = lm_ops.response_loss(model, batch)
        (g,) = torch.autograd.grad(per.sum(), gate)
    return g


def _eager_scores(model, batch, n_layers: int, n_heads: int):
    """[B, L, H] signed sum_{q,k} A * dLoss/dA from the eager attention probabilities."""
    import torch

    # With every parameter frozen nothing upstream of the probabilities would need a gradient:
    # feed embeddings that require one so the probabilities join the graph.
    emb = lm_ops.unwrap(model).get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    per, out = lm_ops.response_loss(model, batch, input_ids=None, inputs_embeds=emb, output_attentions=True)
    attn = out.attentions
    if attn is None or len(attn) != n_layers or attn[0] is None:
        raise ValueError("the model returned no attention probabilities; the eager route needs "
                         "attn_implementation='eager' and output_attentions support")
    grads = torch.autograd.grad(per.sum(), list(attn))
    return torch.stack([(a * g).sum((-1, -2)) for a, g in zip(attn, grads)], 1)   # [B, L, H]


def activation_pattern(model, examples: Sequence[Encoded], *, pad_id: int, route: str = "gate",
                       batch_size: int = 8, max_tokens: int = 4096, autocast: bool | str = False,
                       progress: Progress = no_progress) -> ActivationPattern:
    """The activation pattern of ``model`` on ``examples`` (heads_method.md section 1).

    ``route``: "gate" (any attention kernel, one backward per batch) or "eager" (attention
    probabilities; the oracle). Batches group similar lengths (``length_buckets``); per-sample
    results come back in input order. fp32 unless ``autocast`` (bf16 matmuls; faster, less exact; true / false /
    auto, decided by :func:`g2is_core.runtime.resolve_precision`: a true without native bf16 runs fp32).
    """
    import torch

    if route not in ROUTES:
        raise ValueError(f"route {route!r}: use one of {', '.join(ROUTES)}")
    if not examples:
        raise ValueError("no samples to measure the activation pattern on")
    if not any(e.n_response for e in examples):
        raise ValueError("no sample has response tokens; the activation pattern needs a loss on responses")
    runtime.apply_thread_policy()
    L, H, KV = _dims(model)
    dev = next(model.parameters()).device
    autocast = runtime.resolve_bf16(autocast, dev.type, what="the activation pattern")
    per = np.zeros((len(examples), L, H), dtype=np.float64)
    batches = list(length_buckets(examples, max_tokens=max_tokens, max_batch=batch_size))
    done = 0
    kernel = attention_implementation(model, "eager") if route == "eager" else contextlib.nullcontext()
    with measuring(model), kernel:
        for idx in batches:
            batch = collate([examples[i] for i in idx], pad_id, dev.type)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
                s = (_gate_scores if route == "gate" else _eager_scores)(model, batch, L, H)
            per[idx] = s.detach().abs().double().cpu().numpy()
            done += len(idx)
            progress(done / len(examples), f"activation pattern: {done}/{len(examples)} samples")
    return ActivationPattern(values=per.mean(0), per_sample=per.astype(np.float32), n_kv_heads=KV, route=route,
                             ids=tuple(e.id for e in examples),
                             info={"n_samples": len(examples), "autocast_bf16": autocast})
