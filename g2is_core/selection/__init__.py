"""Training-data selection: the budget, the method registry, the methods, and stored selection runs.

Every method turns (pool records, target records, budget B) into an ordered list of B pool ids plus
a score for every pool record. :data:`METHODS` is the one registry, filled by
:mod:`g2is_core.selection.methods` (one module per method, one import line each).

    method     needs                        score of a pool record z                        order
    g2is       train + target features      signed similarity to its core component        the walk's
    less       train + target features      max_j mean_{v in V_j} sum_i w_i cos(x_i(z), y_i(v))  by score
    random     nothing                      a seeded uniform draw                           by score
    embedding  text (all-MiniLM-L6-v2)      max (or mean) cosine to the target examples     by score
    bm25       text (bm25s)                 max (or mean) BM25 of z under each target query by score
    repr       the causal LM                max (or mean) cosine of hidden states           by score
    heads      stores with head signatures  similarity of its [L, H] signature to the       by score
                                            target's activation pattern (docs/bridge.md)
    heads-hybrid  the same                  w z(heads) + (1 - w) z(less)                    by score

Modules: ``budget`` (B from a ratio or a count), ``features`` (:class:`FeatureSet`: gradient features
per warmup checkpoint, the pairing of pool and target), ``registry`` (the method interface and
:data:`METHODS`), ``methods/`` (one file per method; ``methods/g2is.py`` is also the one G2IS pipeline
behind ``g2is walk`` and ``g2is graph build``), ``runs`` (:func:`select`, :class:`SelectionRun` on
disk, the page views). Heavy libraries (torch, transformers, bm25s) load inside the methods that use
them, so importing this package costs numpy only.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.features`,
:mod:`g2is_core.graph` and the base modules.
"""
from .budget import resolve_budget, walk_budget
from .features import FeatureSet, centred_pair, pair_features
from .registry import METHODS, Context, Method, Scored, get_method, register
from .methods.bm25 import bm25_scores
from .methods.g2is import G2isOptions
from .methods.less import less_scores
from .runs import (Selection, SelectionRun, compare_runs, list_runs, load_dataset, precision, save_dataset, select,
                   walk_progress)

__all__ = ["METHODS", "Context", "FeatureSet", "G2isOptions", "Method", "Scored", "Selection", "SelectionRun",
           "bm25_scores", "centred_pair", "compare_runs", "get_method", "less_scores", "list_runs", "load_dataset",
           "pair_features", "precision", "register", "resolve_budget", "save_dataset", "select", "walk_budget",
           "walk_progress"]
