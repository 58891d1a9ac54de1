"""``bm25``: BM25 (bm25s, Lucene variant) of each pool example under the target examples as queries."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..registry import Context, Scored, option, record_text, reduce_targets, register, top_order


@dataclass
class Bm25Options:
    reduce: str = option("max", "max: best score under any target query; mean: average over target queries")
    k1: float = option(1.5, "BM25 term-frequency saturation")
    b: float = option(0.75, "BM25 length normalisation")


def bm25_scores(docs: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """[n_docs, n_queries] BM25 (Lucene variant, bm25s) of every document under every query.

    Tokens: lower-cased words of 1+ characters (numbers and single letters count: the built-in tasks
    are made of them); no stop words, no stemming.
    """
    import bm25s

    pattern = r"(?u)\b\w+\b"
    corpus = bm25s.tokenize(list(docs), lower=True, stopwords=None, token_pattern=pattern, show_progress=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(corpus, show_progress=False)
    vocab = corpus.vocab
    out = np.zeros((len(docs), len(queries)), np.float64)
    rx = re.compile(pattern)
    for j, q in enumerate(queries):
        toks = [w for w in rx.findall(q.lower()) if w in vocab]
        if toks:
            out[:, j] = retriever.get_scores(toks)
    return out


@register("bm25", "BM25 (bm25s) of each pool example under the target examples as queries", Bm25Options,
          needs=("text",))
def bm25_method(ctx: Context, budget: int, o: Bm25Options) -> Scored:
    s = reduce_targets(bm25_scores([record_text(r) for r in ctx.pool], [record_text(t) for t in ctx.targets],
                                   o.k1, o.b), o.reduce)
    return Scored(top_order(s, budget), s)
