"""``repr``: cosine of the causal LM's own hidden-state representations (last layer, after the final
norm, of the rendered conversation) to the target examples."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...data.records import Record
from ..registry import Context, Scored, cached_matrix, data_hash, option, reduce_targets, register, top_order


@dataclass
class ReprOptions:
    model: str = option("default", "model spec for models.load_model: default, tiny, a directory or a .gguf")
    pooling: str = option("mean", "mean: average of the last hidden states over tokens; last: the last token's")
    reduce: str = option("max", "max or mean over target examples")
    max_length: int = option(512, "tokens per example")
    batch_tokens: int = option(4096, "padded tokens per forward pass")


def hidden_representations(loaded, records: Sequence[Record], pooling: str = "mean", max_length: int = 512,
                           batch_tokens: int = 4096) -> np.ndarray:
    """[n, hidden] unit vectors: last-layer hidden states (after the final norm) of the rendered
    conversation (chat template, prompt + response), mean over tokens or the last token."""
    import torch

    from ...data.encoding import collate, encode_record, length_buckets
    from ...models import lm_ops
    from ...runtime import apply_thread_policy

    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last'; got {pooling!r}")
    apply_thread_policy()
    tok, model = loaded.tokenizer, loaded.model
    enc = [encode_record(tok, r, max_length=max_length, require_response=False) for r in records]
    base = lm_ops.decoder_parts(model)[0]
    dev = next(model.parameters()).device
    out = np.zeros((len(records), int(model.config.hidden_size)), np.float32)
    with torch.inference_mode():
        for idx in length_buckets(enc, max_tokens=batch_tokens, max_batch=64):
            b = collate([enc[i] for i in idx], tok.pad_token_id, device=str(dev))
            h = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state.float()
            m = b["attention_mask"].unsqueeze(-1).float()
            if pooling == "mean":
                v = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            else:  # right padding: the last real token sits at length - 1
                last = b["attention_mask"].sum(1) - 1
                v = h[torch.arange(h.shape[0], device=h.device), last]
            out[idx] = torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
    return out


@register("repr", "cosine of the model's own hidden-state representations to the target examples", ReprOptions,
          needs=("model",))
def repr_method(ctx: Context, budget: int, o: ReprOptions) -> Scored:
    from ...models.loading import load_model

    loaded: list[Any] = []

    def get_model():
        if not loaded:
            loaded.append(load_model(o.model, workspace=ctx.workspace))
        return loaded[0]

    def rep(recs: Sequence[Record]) -> np.ndarray:
        # the cache key needs the model's identity; for the default model it is known without loading
        ident = {"model": _model_ident(o.model, get_model), "pooling": o.pooling, "max_length": o.max_length,
                 "data_hash": data_hash(recs)}
        return cached_matrix(ctx.ws, "representations", ident, len(recs),
                             lambda a, b: hidden_representations(get_model(), recs[a:b], o.pooling, o.max_length,
                                                                 o.batch_tokens), progress=ctx.progress)

    p, t = rep(ctx.pool), rep(ctx.targets)
    s = reduce_targets(p @ t.T, o.reduce).astype(np.float64)
    return Scored(top_order(s, budget), s)


def _model_ident(spec: str, get_model: Callable[[], Any]) -> Any:
    from ...models.loading import DEFAULT_MODEL, resolve_spec

    if resolve_spec(spec) == "default":
        return {"name": DEFAULT_MODEL.name, "gguf_sha256": DEFAULT_MODEL.gguf_sha256, "dtype": "fp32"}
    return get_model().key
