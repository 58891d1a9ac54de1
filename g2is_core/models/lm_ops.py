"""Model plumbing written once: the peft unwrap, the decoder parts, the per-example response loss, and
managed hooks. Every feature (gradients, head patterns, selection by representations) calls these.

Shapes: B examples, T positions (right-padded), V vocabulary, hidden the model width.

Per-example response loss (LESS section 2; heads_method.md section 1): for example b with labels
y_b [T] (-100 outside the response),

    loss_b = mean_{t : y_b[t+1] != -100}  CE(logits_b[t], y_b[t+1])      (0 when b has no label)

Position t predicts token t+1. The vocabulary projection (the LM head, ~20% of a 135M model's
forward) runs only at positions that carry a label: hidden[:, :-1] is gathered where
labels[:, 1:] != -100, giving [n_labels, V] logits instead of [B, T, V]. Since examples do not interact
(causal attention, padding masked), the gradient of sum_b loss_b w.r.t. anything that belongs to
example b is example b's own gradient: one backward gives every example's.

Heavy imports (torch) stay inside the functions.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..data.encoding import IGNORE

HookPairs = Mapping[Any, Callable] | Iterable[tuple[Any, Callable]]
_O_PROJ = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.o_proj$")


def unwrap(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected in it); else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_parts(model) -> tuple[Any, Any]:
    """(decoder, lm_head) of a (peft-wrapped) causal LM.

    ``decoder(input_ids [B, T], attention_mask [B, T])`` returns hidden states ``.last_hidden_state``
    [B, T, hidden] (after the final norm); ``lm_head(h [..., hidden])`` returns logits [..., V].
    """
    base = unwrap(model)
    get = getattr(base, "get_decoder", None)
    backbone = get() if get is not None else None
    head = base.get_output_embeddings()
    if backbone is None or head is None:
        raise ValueError(f"{type(base).__name__}: this needs a decoder-only causal LM with a decoder and an output "
                         "embedding (Llama-style: Llama, Mistral, Qwen2, SmolLM2, ...)")
    return backbone, head


def o_proj_modules(model) -> list[Any]:
    """Each layer's ``self_attn.o_proj`` module, indexed by layer (works under a peft wrapper).

    Its input is [B, T, H * head_dim]: the heads' outputs side by side, before they are mixed (the
    head-pattern gate of :mod:`g2is_core.heads.patterns` hooks there).
    """
    found: dict[int, Any] = {}
    for name, mod in model.named_modules():
        m = _O_PROJ.search(name)
        if m:
            found[int(m.group(1))] = mod
    if not found or sorted(found) != list(range(len(found))):
        raise ValueError("this model has no '<...>.layers.<i>.self_attn.o_proj' modules; activation patterns "
                         "need a Llama-style decoder (Llama, Mistral, Qwen2, SmolLM2, ...)")
    return [found[i] for i in range(len(found))]


def head_gates(model, gate) -> list[tuple[Any, Callable]]:
    """Forward pre-hook pairs (for :func:`hooks`) that scale head h of layer l of example b by ``gate[b, l, h]``.

    ``gate`` [B, L, H] (H query heads) multiplies each head's slice of the ``o_proj`` input
    [B, T, H * head_dim] before the heads are mixed. At gate = 1 the forward is unchanged (x * 1 is
    exact in every float type) and dLoss_b/dgate[b, l, h] is head (l, h)'s activation score of
    heads_method.md section 1 (the gate route). Written once here because two callers must agree to
    the bit: the activation pattern (:mod:`g2is_core.heads.patterns`) and the head signature taken in
    the gradient-feature pass (:mod:`g2is_core.features.extract`).
    """
    n_heads = int(unwrap(model).config.num_attention_heads)

    def make_hook(layer: int):
        def hook(_mod, args):
            x = args[0]                                            # [B, T, H * head_dim]
            g = gate[:, layer].to(x.dtype)[:, None, :, None]       # [B, 1, H, 1]
            y = (x.view(*x.shape[:-1], n_heads, -1) * g).view(x.shape)
            return (y, *args[1:])
        return hook

    return [(m, make_hook(i)) for i, m in enumerate(o_proj_modules(model))]


def response_loss(model, batch: Mapping[str, Any], **decoder_kw: Any) -> tuple[Any, Any]:
    """(per [B], decoder output): each example's mean response-token cross-entropy (module doc).

    ``batch``: ``input_ids`` [B, T], ``attention_mask`` [B, T], ``labels`` [B, T] (-100 outside the
    response; :func:`g2is_core.data.encoding.collate`). ``per`` is fp32 (logits are cast to fp32 before
    the loss); an example without labels gets 0. ``decoder_kw`` go to the decoder call, e.g.
    ``output_attentions=True``, or ``input_ids=None, inputs_embeds=E`` [B, T, hidden] to start from
    embeddings.
    """
    import torch
    import torch.nn.functional as F

    backbone, head = decoder_parts(model)
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **decoder_kw}
    out = backbone(**kw)
    hidden = out.last_hidden_state[:, :-1]                # position t predicts token t+1
    tgt = batch["labels"][:, 1:]
    sel = tgt != IGNORE                                   # [B, T-1]
    rows = sel.nonzero(as_tuple=True)[0]                  # example index of each label position
    logits = head(hidden[sel]).float()                    # [n_labels, V]
    ce = F.cross_entropy(logits, tgt[sel], reduction="none")
    per = torch.zeros(tgt.shape[0], dtype=ce.dtype, device=ce.device).index_add_(0, rows, ce)
    return per / sel.sum(1).clamp_min(1), out


def token_mean_loss(model, batch: Mapping[str, Any]):
    """The batch's mean cross-entropy over ALL its label tokens (scalar, fp32): what ``model(**batch).loss`` of
    a transformers causal LM returns, with the LM head run only at the positions that carry a label.

    Why: the SFT loop's loss. The full [B, T, V] logits cost ~20% of a 135M model's forward and backward
    (V = 49,152 against a width of 576) while a short task answer labels a few of the T positions; this
    computes the same number from [n_labels, V] logits (tested equal to the model's own loss). A model
    without the decoder parts falls back to its own loss.
    """
    import torch.nn.functional as F

    try:
        backbone, head = decoder_parts(model)
    except ValueError:
        return model(**batch).loss
    out = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    tgt = batch["labels"][:, 1:]
    sel = tgt != IGNORE                                   # [B, T-1]: position t predicts token t+1
    logits = head(out.last_hidden_state[:, :-1][sel]).float()   # [n_labels, V]
    return F.cross_entropy(logits, tgt[sel])


@contextlib.contextmanager
def hooks(forward: HookPairs = (), pre: HookPairs = ()) -> Iterator[None]:
    """Hooks registered for the ``with`` block and removed on leaving it, also on an exception.

    ``forward``: (module, fn) pairs or a {module: fn} mapping, ``fn(module, args, output)`` (may return
    a replacement output). ``pre``: the same for forward pre-hooks, ``fn(module, args)`` (may return
    replacement args). Pairs allow several hooks on one module; they run in the order given.
    """
    def pairs(h: HookPairs) -> list[tuple[Any, Callable]]:
        return list(h.items()) if isinstance(h, Mapping) else list(h)

    handles: list[Any] = []
    try:
        for mod, fn in pairs(pre):
            handles.append(mod.register_forward_pre_hook(fn))
        for mod, fn in pairs(forward):
            handles.append(mod.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()
