"""The closed loop's analysis (g2is_core/loop/bridge.py) on hand-made rows and arrays with known answers."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from g2is_core.loop import bridge
from g2is_core.loop.bridge import (X_CHANGE, X_GRAD, X_HEADS, closed_loop, correlation_difference, correlation_test,
                                   cosine, loop_targets,
                                   pattern_record, selection_gradient_similarity, selection_head_similarity)
from g2is_core.workspace import canonical_json


# ----------------------------------------------------------------------------- correlation and its null
def test_correlation_known_values_and_signs():
    t = correlation_test([1, 2, 3], [1, 3, 2], n_perm=50)
    # centred x (-1, 0, 1), y (-1, 1, 0): r = 1 / 2; every order of y gives |r| 0.5 or 1, so p is exactly 1
    assert t.r == pytest.approx(0.5) and t.p == 1.0 and t.n == 3
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=12)
    assert correlation_test(x, y).r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert correlation_test(x, -2 * x + 1).r == pytest.approx(-1.0)
    from scipy.stats import spearmanr

    xt, yt = [1, 2, 2, 3, 5, 5, 7], [3, 1, 4, 1, 5, 9, 2]   # ties: average ranks
    assert correlation_test(xt, yt, "spearman").r == pytest.approx(spearmanr(xt, yt).statistic, abs=1e-12)


def test_permutation_p_is_the_exact_null_up_to_monte_carlo_error():
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 4, 3, 5])
    r = np.corrcoef(x, y)[0, 1]
    exact = np.mean([abs(np.corrcoef(x, y[list(p)])[0, 1]) >= abs(r) - 1e-12
                     for p in itertools.permutations(range(5))])   # all 120 orders
    t = correlation_test(x, y, n_perm=20000, seed=1)
    # r = 1 - sum d^2 / 20 here, so |r| >= 0.8 needs sum d^2 <= 4 from the identity or the reversal: the order
    # itself, 4 adjacent swaps and 3 pairs of disjoint adjacent swaps, on each side: 16 of the 120 orders
    assert r == pytest.approx(0.8) and exact == pytest.approx(16 / 120)
    assert abs(t.p - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000)
    # counted as (1 + hits) / (1 + n_perm): never 0, seeded, reproducible
    perfect = correlation_test(np.arange(10), np.arange(10), n_perm=99, seed=0)
    assert perfect.r == pytest.approx(1.0) and perfect.p == pytest.approx(1 / 100)  # 10! orders: no hit in 99
    assert correlation_test(x, y, n_perm=999, seed=7) == correlation_test(x, y, n_perm=999, seed=7)


def test_correlation_undefined_and_refused():
    for x, y in (([1, 2], [2, 1]), ([1, 1, 1, 1], [1, 2, 3, 4]), ([0.1] * 3, [3, 2, 1])):
        t = correlation_test(x, y)
        assert np.isnan(t.r) and np.isnan(t.p)
    with pytest.raises(ValueError, match="one pair per point"):
        correlation_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        correlation_test([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="pearson, spearman"):
        correlation_test([1, 2, 3], [1, 2, 3], "kendall")


def test_correlation_difference_equals_a_loop_reference_draw_for_draw():
    rng = np.random.default_rng(5)
    y = rng.normal(size=15)
    x1, x2 = y + rng.normal(size=15), rng.normal(size=15)
    got = correlation_difference(x1, x2, y, n_boot=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 15, size=(300, 15))   # the same draws, one by one
    ref = [abs(np.corrcoef(x1[i], y[i])[0, 1]) - abs(np.corrcoef(x2[i], y[i])[0, 1]) for i in idx]
    assert got.n_used == 300 and got.n == 15
    assert (got.lo, got.hi) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)
    assert got.d == pytest.approx(abs(np.corrcoef(x1, y)[0, 1]) - abs(np.corrcoef(x2, y)[0, 1]), abs=1e-12)


def test_correlation_difference_known_answers():
    y = np.arange(10.0) ** 1.5
    same = correlation_difference(y + 1, 2 * y, y)                         # both r = 1: no difference, no spread
    assert same.d == 0 and (same.lo, same.hi) == pytest.approx((0.0, 0.0), abs=1e-12) and not same.excludes_zero
    sign = correlation_difference(-y, np.sin(y), y, "spearman")            # strength, whatever the sign
    assert sign.r1 == pytest.approx(-1.0) and sign.d > 0 and sign.excludes_zero and sign.lo > 0
    flip = correlation_difference(np.sin(y), -y, y, "spearman")
    assert flip.d == pytest.approx(-sign.d) and flip.hi < 0
    assert np.isnan(correlation_difference([1, 2, 3, 4, 5], [3, 1, 2, 5, 4], [1, 2, 3, 4, 5]).lo)   # n < 6: no interval
    with pytest.raises(ValueError, match="one triple per point"):
        correlation_difference([1, 2], [1, 2, 3], [1, 2, 3])


def test_cosine():
    assert cosine([[1, 0], [0, 0]], [[3, 0], [0, 0]]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 2]) == 0.0 and cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert np.isnan(cosine([0, 0], [1, 2]))
    with pytest.raises(ValueError, match="same model"):
        cosine([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------- head similarity of a selection
def test_selection_head_similarity_known_answers():
    from g2is_core.selection import FeatureSet

    feats = [np.eye(3, 4), np.eye(3, 4)]
    pool = {"a": [[2, 0], [0, 0]], "b": [[0, 1], [0, 0]], "c": [[0, 0], [0, 5]]}
    sig0 = np.array(list(pool.values()), float)                  # checkpoint 0
    sig1 = np.array([[[0, 0], [0, 1]], [[0, 0], [0, 1]], [[0, 0], [0, 1]]], float)  # checkpoint 1: all alike
    train = FeatureSet.from_arrays(feats, ids=list(pool), weights=[3, 1], signatures=[sig0, sig1])
    tsig = np.array([[[1, 0], [0, 0]], [[3, 0], [0, 0]]], float)  # target pattern = mean: [[2, 0], [0, 0]]
    target = FeatureSet.from_arrays([np.eye(2, 4), np.eye(2, 4)], weights=[3, 1], signatures=[tsig, tsig])
    s = selection_head_similarity(train, target, ["a"])
    assert s["per_checkpoint"] == pytest.approx([1.0, 0.0]) and s["cosine"] == pytest.approx(0.75)
    ab = selection_head_similarity(train, target, ["b", "a"])        # mean [[1, .5], [0, 0]]
    assert ab["per_checkpoint"][0] == pytest.approx(1 / np.sqrt(1.25)) and ab["n_selected"] == 2
    assert selection_head_similarity(train, target, ["c"])["cosine"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not rows"):
        selection_head_similarity(train, target, ["zz"])
    with pytest.raises(ValueError, match="head signatures"):
        selection_head_similarity(FeatureSet.from_arrays(feats, ids=list(pool)), target, ["a"])


def test_selection_gradient_similarity_known_answers():
    from g2is_core.selection import FeatureSet

    # checkpoint 0: pool rows e1, 3 e2, e1 + e2 (unit: (e1 + e2) / sqrt 2); the target's rows 2 e1, e1 -> mean e1
    x0 = np.array([[1.0, 0, 0], [0, 3, 0], [1, 1, 0]])
    x1 = np.array([[0.0, 0, 1], [0, 0, 1], [0, 0, 1]])          # checkpoint 1: every row along e3
    train = FeatureSet.from_arrays([x0, x1], ids=["a", "b", "c"], weights=[1, 1])
    target = FeatureSet.from_arrays([np.array([[2.0, 0, 0], [1, 0, 0]]), np.array([[0, 1.0, 0], [0, 1, 0]])],
                                    weights=[1, 1])
    g = selection_gradient_similarity(train, target, ["a"])
    assert g["per_checkpoint"] == pytest.approx([1.0, 0.0]) and g["cosine"] == pytest.approx(0.5)
    # rows are unit-normalised first: b's length 3 does not outweigh a; mean (e1 + e2) / 2 -> cos 1 / sqrt 2
    assert selection_gradient_similarity(train, target, ["a", "b"])["per_checkpoint"][0] == pytest.approx(2 ** -0.5)
    assert selection_gradient_similarity(train, target, ["c"])["per_checkpoint"][0] == pytest.approx(2 ** -0.5)


# ----------------------------------------------------------------------------- the closed loop of rows
P = np.array([[1.0, 2.0, 0.5], [0.2, 0.1, 3.0]])      # the base model's pattern [L=2, H=3]
D = np.array([[0.5, -1.0, 0.0], [0.0, 0.2, -0.4]])    # the full-data model's change


def _row(method, ratio, seed, values, score, ids=("t0", "t1"), hsim=None, target="t", gsim=None, **kw):
    info = {bridge.PATTERN: json.loads(canonical_json(pattern_record(values, ids, n_kv_heads=1, max_length=32)))}
    if hsim is not None:
        info[bridge.SIMILARITY] = {"cosine": hsim}
    if gsim is not None:
        info[bridge.GRADIENT] = {"cosine": gsim}
    return {"experiment": "e", "target": target, "method": method, "ratio": ratio, "seed": seed, "status": "done",
            "finished": kw.get("finished", 1.0), "config_hash": f"{target}-{method}-{ratio}-{seed}",
            "metrics": {"accuracy": score, "nll": -score}, "info": info}


def test_pattern_record_survives_the_registry_json_exactly():
    v = np.random.default_rng(0).random((3, 4))
    rec = json.loads(canonical_json(pattern_record(v, ["a", "b"], n_kv_heads=2, max_length=64)))
    assert np.array_equal(np.asarray(rec["values"]), v) and rec["shape"] == [3, 4] and rec["ids"] == ["a", "b"]
    with pytest.raises(ValueError, match="layer, head"):
        pattern_record(v[0], ["a"], n_kv_heads=1, max_length=8)


def test_closed_loop_changes_points_and_correlations():
    rows = [_row("base", None, 0, P, 0.1), _row("full", None, 0, P + D, 0.9),
            _row("less", 0.1, 0, P + D, 0.8, hsim=0.9), _row("less", 0.1, 1, P + 2 * D, 0.7, hsim=0.8),
            _row("random", 0.1, 0, P - D, 0.2, hsim=0.1), _row("random", 0.1, 1, P + 0 * D, 0.3, hsim=0.3),
            _row("bm25", 0.1, 0, P + np.roll(D, 1), 0.5, hsim=0.5, gsim=0.2),
            {"experiment": "e", "target": "t", "method": "g2is", "ratio": 0.1, "seed": 0, "status": "running",
             "config_hash": "x"}]
    hl = closed_loop(rows, "t", "accuracy", n_perm=999)
    assert hl.shape == (2, 3) and hl.metric == "accuracy" and hl.notes == []
    assert list(hl.changes) == ["full", "less", "random", "bm25"]          # base left out: its change is 0
    np.testing.assert_allclose(hl.changes["full"], D)
    np.testing.assert_allclose(hl.changes["less"], 1.5 * D)                 # mean over the two seeds
    np.testing.assert_allclose(hl.changes["random"], -0.5 * D)
    assert hl.zmax == pytest.approx(1.5)
    pts = hl.points.set_index(["method", "seed"])
    assert len(pts) == 5                                                     # the selections only
    assert pts.loc[("less", 0), X_CHANGE] == pytest.approx(1.0) and pts.loc[("less", 1), X_CHANGE] == pytest.approx(1.0)
    assert pts.loc[("random", 0), X_CHANGE] == pytest.approx(-1.0)
    assert np.isnan(pts.loc[("random", 1), X_CHANGE])                        # no change: no direction
    assert pts.loc[("bm25", 0), X_HEADS] == 0.5 and pts.loc[("less", 0), "score"] == 0.8
    assert pts.loc[("bm25", 0), X_GRAD] == 0.2 and pts[X_GRAD].isna().sum() == 4
    assert np.isnan(hl.tests[X_GRAD]["pearson"].r) and hl.tests[X_GRAD]["pearson"].n == 1
    t = hl.tests[X_HEADS]["pearson"]
    assert t.n == 5 and t.r == pytest.approx(np.corrcoef([0.9, 0.8, 0.1, 0.3, 0.5], [0.8, 0.7, 0.2, 0.3, 0.5])[0, 1])
    assert hl.tests[X_CHANGE]["pearson"].n == 4                              # random seed 1 has no x
    # the score follows the metric asked for; nll = -accuracy flips the sign
    assert closed_loop(rows, "t", "nll", n_perm=99).tests[X_HEADS]["pearson"].r == pytest.approx(-t.r)
    assert loop_targets(rows) == ["t"]
    assert hl.versus["pearson"].n == 1 and np.isnan(hl.versus["pearson"].d)   # bm25 alone has both x's


def test_closed_loop_never_scores_a_cell_by_another_metric():
    """A cell measured before the asked metric existed is left out (and said so), not scored by its nll."""
    rows = [_row("base", None, 0, P, 0.1), _row("less", 0.1, 0, P + D, 0.8, hsim=0.9),
            _row("random", 0.1, 0, P - D, 0.2, hsim=0.1), _row("bm25", 0.1, 0, P + D, 0.5, hsim=0.5)]
    for r, v in zip(rows[1:3], (-0.4, -1.2)):
        r["metrics"]["label_logprob"] = v
    hl = closed_loop(rows, "t", "label_logprob", n_perm=9)
    pts = hl.points.set_index("method")
    assert hl.metric == "label_logprob" and pts.loc["less", "score"] == -0.4 and np.isnan(pts.loc["bm25", "score"])
    assert hl.tests[X_HEADS]["pearson"].n == 2 and any("1 of 3 trained cells do not report" in n for n in hl.notes)
    assert closed_loop(rows, "t", "nope", n_perm=9).metric == "accuracy"   # nobody reports it: the primary one


def test_by_selection_merges_a_deterministic_methods_seeds():
    import pandas as pd

    from g2is_core.loop.bridge import by_selection

    pts = pd.DataFrame([("less", 0.1, 0, 1.0, 0.9, 0.5), ("less", 0.1, 1, 2.0, 0.9, 0.5),     # one selection
                        ("random", 0.1, 0, 3.0, 0.2, 0.1), ("random", 0.1, 1, 4.0, 0.3, 0.1),  # two draws
                        ("less", 0.5, 0, 5.0, 0.9, 0.5),                                       # another budget
                        ("g2is", 0.1, 0, 6.0, 0.7, 0.2), ("g2is-noconflict", 0.1, 0, 6.0, 0.7, 0.2)],  # same picks
                       columns=["method", "ratio", "seed", "score", X_HEADS, X_GRAD])
    got = by_selection(pts)
    assert list(zip(got.method, got.ratio, got.score, got.n_cells)) == [
        ("less", 0.1, 1.5, 2), ("random", 0.1, 3.0, 1), ("random", 0.1, 4.0, 1), ("less", 0.5, 5.0, 1),
        ("g2is=g2is-noconflict", 0.1, 6.0, 2)]
    assert list(got[X_HEADS]) == [0.9, 0.2, 0.3, 0.9, 0.7]
    assert by_selection(pts.iloc[:0]).empty


def test_closed_loop_says_what_it_leaves_out():
    old = [{**_row("base", None, 0, P, 0.1), "info": {}}, {**_row("less", 0.1, 0, P, 0.2), "info": None}]
    assert loop_targets(old) == [] and closed_loop(old, "t") is None          # rows recorded before: no loop
    rows = [_row("base", None, 0, P, 0.1), _row("full", None, 0, P + D, 0.9),
            _row("less", 0.1, 0, P + D, 0.8, ids=("t0", "other")), _row("less", 0.2, 0, P + D, 0.6)]
    hl = closed_loop(rows, "t", n_perm=9)
    assert any("other examples" in n for n in hl.notes)
    assert list(hl.changes) == ["full", "less @ 0.2"]                        # two ratios: labelled by ratio
    assert any("no head signatures" in n for n in hl.notes)
    no_base = closed_loop([_row("less", 0.1, 0, P, 0.8)], "t")
    assert no_base.changes == {} and any("base model's pattern is missing" in n for n in no_base.notes)
    # a second target's rows do not enter
    assert closed_loop(rows + [_row("less", 0.1, 1, P - D, 0.0, target="u")], "t", n_perm=9).points.shape[0] == 2


def test_spec_setting_keeps_keys_when_absent(tmp_path):
    import yaml

    from g2is_core.data.records import DataError
    from g2is_core.loop.runner import cell_config, needs_head_signatures
    from g2is_core.loop.spec import load_spec

    base = {"name": "x", "model": "tiny", "targets": [{"name": "sort"}], "methods": ["less"]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(base))
    spec = load_spec(p)
    assert spec.eval.head_pattern == 0 and not needs_head_signatures(spec)
    assert cell_config(spec, spec.targets[0], "base", None, 0, "h")["eval"] == {}
    p.write_text(yaml.safe_dump({**base, "eval": {"head_pattern": 8}}))
    on = load_spec(p)
    assert on.eval.head_pattern == 8 and needs_head_signatures(on)          # a gradient method: signatures ride along
    assert cell_config(on, on.targets[0], "base", None, 0, "h")["eval"] == {"head_pattern": 8}
    p.write_text(yaml.safe_dump({**base, "methods": ["bm25"], "eval": {"head_pattern": 8}}))
    assert not needs_head_signatures(load_spec(p))                          # no stores to take them from
    p.write_text(yaml.safe_dump({**base, "eval": {"head_pattern": -1}}))
    with pytest.raises(DataError, match=r"field 'eval.head_pattern': .*negative"):
        load_spec(p)
