"""The graph and walk views' numbers (g2is_core.app.bridge) on hand-made signatures with known answers, and its
reader on real gradient stores written with the store writer (no model)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from g2is_core.app import bridge
from g2is_core.app.bridge import Signatures
from g2is_core.features.store import write_store
from g2is_core.workspace import Workspace

L, H = 6, 2


def one_hot(l: int, h: int, value: float = 1.0) -> np.ndarray:
    z = np.zeros((L, H))
    z[l, h] = value
    return z


# ----------------------------------------------------------------------------- pure numbers
def test_shown_signature_and_pattern_combine_checkpoints_with_normalised_weights():
    a = np.stack([one_hot(0, 0, 2.0), one_hot(1, 1, 4.0)])        # checkpoint 0, rows 0 and 1
    b = np.stack([one_hot(0, 0, 6.0), one_hot(1, 1, 8.0)])        # checkpoint 1
    s = Signatures.from_arrays([a, b], weights=[3.0, 1.0])
    assert s.n == 2 and s.shape == (L, H) and s.ids == ("0", "1")
    np.testing.assert_allclose(s.weights, [0.75, 0.25])
    np.testing.assert_allclose(s.shown([0])[0], one_hot(0, 0, 0.75 * 2 + 0.25 * 6))
    pat = s.pattern()                                            # per checkpoint: the mean of the rows
    np.testing.assert_allclose(pat[0], (one_hot(0, 0, 2.0) + one_hot(1, 1, 4.0)) / 2)
    np.testing.assert_allclose(pat[1], (one_hot(0, 0, 6.0) + one_hot(1, 1, 8.0)) / 2)
    with pytest.raises(ValueError, match="at least one record"):
        s.pattern([])


def test_similarity_to_target_is_the_weighted_cosine_with_known_answers():
    rows = np.stack([one_hot(0, 0), one_hot(0, 1, 5.0), np.zeros((L, H)), one_hot(0, 0) + one_hot(0, 1)])
    pool = Signatures.from_arrays(rows)
    p = one_hot(0, 0) + one_hot(0, 1)                             # the target's pattern
    got = bridge.similarity_to_target(pool, [p], block=3)         # a block edge inside the pool
    np.testing.assert_allclose(got, [1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 1.0])
    # two checkpoints: sum_i w_i cos_i
    pool2 = Signatures.from_arrays([rows, rows[[3, 3, 3, 3]]], weights=[1, 3])
    np.testing.assert_allclose(bridge.similarity_to_target(pool2, [p, p]),
                               0.25 * np.array([1 / math.sqrt(2), 1 / math.sqrt(2), 0, 1]) + 0.75)
    with pytest.raises(ValueError, match="target pattern"):
        bridge.similarity_to_target(pool2, [p])


def test_similarity_to_target_equals_the_heads_method_score():
    """The colour is the ``heads`` score (normalise=unit, all heads) of every pool row."""
    from g2is_core.selection import FeatureSet
    from g2is_core.selection.methods.heads import head_scores

    rng = np.random.default_rng(0)
    sp = [np.abs(rng.normal(size=(9, L, H))) for _ in range(2)]
    st = [np.abs(rng.normal(size=(4, L, H))) for _ in range(2)]
    w = [0.3, 0.7]
    train = FeatureSet.from_arrays([rng.normal(size=(9, 5)) for _ in range(2)], weights=w, signatures=sp)
    target = FeatureSet.from_arrays([rng.normal(size=(4, 5)) for _ in range(2)], weights=w, signatures=st)
    want = head_scores(train, target, "unit")
    pool, tgt = Signatures.from_arrays(sp, weights=w), Signatures.from_arrays(st, weights=w)
    np.testing.assert_allclose(bridge.similarity_to_target(pool, tgt.pattern()), want, rtol=1e-12)


def test_dominant_band_takes_the_layer_third_with_most_mass():
    assert [(r.start, r.stop) for r in bridge.layer_bands(30)] == [(0, 10), (10, 20), (20, 30)]
    assert [(r.start, r.stop) for r in bridge.layer_bands(L)] == [(0, 2), (2, 4), (4, 6)]
    sigs = np.stack([one_hot(4, 1),                                   # late
                     one_hot(0, 0, 1.0) + one_hot(3, 0, 2.0),         # middle outweighs early
                     one_hot(1, 0) + one_hot(2, 1),                   # a tie: the earlier band
                     np.zeros((L, H)),                                # no signal
                     one_hot(0, 0, 1.0) + one_hot(4, 0, 0.6) + one_hot(5, 1, 0.6)])  # late by mass, not by peak
    np.testing.assert_array_equal(bridge.dominant_band(sigs), [2, 1, 0, bridge.NO_SIGNAL, 2])
    pool = Signatures.from_arrays([sigs, sigs[::-1]], weights=[1, 0])   # weight 0: only checkpoint 0 counts
    np.testing.assert_array_equal(bridge.pool_bands(pool, block=2), [2, 1, 0, bridge.NO_SIGNAL, 2])
    assert bridge.band_label(0, 30) == "early layers 0-9"
    assert bridge.band_label(2, 30) == "late layers 20-29"
    assert bridge.band_label(bridge.NO_SIGNAL, 30) == "no signal"


def test_walk_similarity_running_and_per_component_with_known_answers():
    a, b = one_hot(0, 0), one_hot(3, 1)
    rows = np.stack([a, b, a, np.zeros((L, H))])
    pool = Signatures.from_arrays(rows, ids=["r0", "r1", "r2", "r3"])
    out = bridge.walk_similarity(pool, [0, 1, 2, 3], [a], components=[0, 0, 1, 1])
    np.testing.assert_array_equal(out["t"], [1, 2, 3, 4])
    np.testing.assert_allclose(out["added"], [1, 0, 1, 0])
    # the selection so far: a; (a+b)/2; (2a+b)/3; (2a+b)/4 -> cos with a
    np.testing.assert_allclose(out["running"], [1, 1 / math.sqrt(2), 2 / math.sqrt(5), 2 / math.sqrt(5)])
    # each component from its own start: a, (a+b)/2 | a, a/2
    np.testing.assert_allclose(out["component_running"], [1, 1 / math.sqrt(2), 1, 1])
    # two checkpoints: the weighted sum of the per-checkpoint cosines
    pool2 = Signatures.from_arrays([rows, np.stack([b, b, b, b])], weights=[1, 1])
    out2 = bridge.walk_similarity(pool2, [0, 1, 2, 3], [a, a])
    np.testing.assert_allclose(out2["running"], 0.5 * out["running"])
    assert "component_running" not in out2


def test_check_nodes_refuses_rows_of_other_stores():
    pool = Signatures.from_arrays(np.ones((3, L, H)), ids=["a", "b", "c"])
    np.testing.assert_array_equal(bridge.check_nodes(pool, [2, 0], ["c", "a"]), [2, 0])
    with pytest.raises(ValueError, match="not a row"):
        bridge.check_nodes(pool, [3])
    with pytest.raises(ValueError, match="step 1: node 0 is record 'a'"):
        bridge.check_nodes(pool, [2, 0], ["c", "x"])


def test_pattern_similarity_of_a_set():
    a, b = one_hot(0, 0), one_hot(3, 1)
    pool = Signatures.from_arrays(np.stack([a, b, a]))
    assert bridge.pattern_similarity(pool.pattern([0, 1]), [a], pool.weights) == pytest.approx(1 / math.sqrt(2))
    assert bridge.pattern_similarity(pool.pattern([0, 2]), [a], pool.weights) == pytest.approx(1.0)
    assert bridge.cosine(np.zeros((L, H)), a) == 0.0


def test_target_choices_graph_first_then_each_runs_distinct_keys():
    def run(keys, name):
        return SimpleNamespace(meta={"inputs": {"target_store_keys": keys}}, target="add", method="g2is",
                               path=SimpleNamespace(name=name))

    got = bridge.target_choices({"inputs": {"target_store_keys": ["t1"]}},
                                [run(["t1"], "r1"), run(["t2", "t3"], "r2"), run(["t2", "t3"], "r3"), run(None, "r4")])
    assert list(got) == [("t1",), ("t2", "t3")]
    assert got[("t1",)] == "the graph's target" and "r2" in got[("t2", "t3")]
    assert bridge.target_choices(None, []) == {}


# ----------------------------------------------------------------------------- the reader, on real stores
def _store(ws: Workspace, key: str, sigs: np.ndarray | None, epoch: int = 0, weight: float | None = 1.0,
           ids: list[str] | None = None) -> None:
    n = len(sigs) if sigs is not None else 4
    feats = np.random.default_rng(epoch).normal(size=(n, 8)).astype(np.float32)
    cfg = {"model_key": "m", "lora": {}, "projector": {"seed": 0, "dim": 8}, "kind": "adam", "features": {},
           "checkpoint": {"warmup": "w", "epoch": epoch, "weight": weight}}

    def compute(r):
        return (feats[r.start: r.stop], sigs[r.start: r.stop]) if sigs is not None else feats[r.start: r.stop]

    write_store(ws.root / bridge.STORES / key, cfg, ids or [f"r{i}" for i in range(n)], 8, compute,
                inputs={"data_hash": "d"}, shard_rows=3, heads_shape=None if sigs is None else sigs.shape[1:],
                extra=None if sigs is None else {"head_signatures": {"route": "gate"}})


def test_store_signatures_reads_the_stores_and_says_how_to_get_missing_ones(tmp_path):
    ws = Workspace(tmp_path)
    rng = np.random.default_rng(1)
    s0, s1 = np.abs(rng.normal(size=(5, L, H))), np.abs(rng.normal(size=(5, L, H)))
    _store(ws, "k0", s0, epoch=0, weight=3.0)
    _store(ws, "k1", s1, epoch=1, weight=1.0)
    _store(ws, "plain", None)
    got = bridge.store_signatures(Workspace(tmp_path, read_only=True), ["k0", "k1"])
    assert got.keys == ("k0", "k1") and got.ids == tuple(f"r{i}" for i in range(5))
    np.testing.assert_allclose(got.weights, [0.75, 0.25])
    np.testing.assert_array_equal(got.per_checkpoint[0], s0.astype(np.float32))
    np.testing.assert_allclose(got.shown([2])[0], 0.75 * s0[2].astype(np.float32) + 0.25 * s1[2].astype(np.float32),
                               rtol=1e-6)
    with pytest.raises(bridge.MissingSignatures, match="plain has no head signatures.*--head-signatures"):
        bridge.store_signatures(ws, ["plain"])
    with pytest.raises(bridge.MissingSignatures, match="gone is not in this workspace"):
        bridge.store_signatures(ws, ["gone"], side="target")
    with pytest.raises(bridge.MissingSignatures, match="no pool gradient store is recorded"):
        bridge.store_signatures(ws, [])
    _store(ws, "other", s0, epoch=2, ids=[f"x{i}" for i in range(5)])
    with pytest.raises(ValueError, match="different records"):
        bridge.store_signatures(ws, ["k0", "other"])
    assert bridge.signature_stamp(ws, ["k0"]) > 0 > bridge.signature_stamp(ws, ["gone"])


def test_check_pair_refuses_other_checkpoints_or_models():
    a = Signatures.from_arrays(np.ones((2, L, H)))
    with pytest.raises(ValueError, match="checkpoint"):
        bridge.check_pair(a, Signatures.from_arrays([np.ones((2, L, H))] * 2))
    with pytest.raises(ValueError, match="same model"):
        bridge.check_pair(a, Signatures.from_arrays(np.ones((2, L, H + 1))))
