"""The head analyses on small hand-made inputs with known answers."""
import numpy as np
import pytest

from g2is_core.heads import analysis as ha


def test_normalise_and_change():
    p = np.array([[1.0, 3.0], [2.0, 2.0]])
    assert ha.normalise(p).sum() == pytest.approx(1.0)
    assert ha.normalise(p)[0, 1] == pytest.approx(3 / 8)
    assert np.array_equal(ha.change(p, p), np.zeros_like(p))
    assert np.allclose(ha.change(p, 2 * p, normalised=True), 0.0)   # a rescaled pattern has no normalised change
    assert np.allclose(ha.change(p, 2 * p), p)
    with pytest.raises(ValueError):
        ha.change(p, np.ones((3, 2)))
    with pytest.raises(ValueError):
        ha.normalise(np.zeros((2, 2)))


def test_gini_known_values():
    assert ha.gini(np.ones((3, 4))) == pytest.approx(0.0)
    assert ha.gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)      # (n-1)/n for one holder
    assert ha.gini(np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.25)
    assert ha.gini(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(0.25)  # order does not matter
    with pytest.raises(ValueError):
        ha.gini(np.array([-1.0, 2.0]))


def test_cv_known_values():
    assert ha.cv(np.ones(5)) == pytest.approx(0.0)
    assert ha.cv(np.array([1.0, 3.0])) == pytest.approx(0.5)            # population std 1, mean 2
    with pytest.raises(ValueError):
        ha.cv(np.zeros(3))


def test_top_heads_order_and_abs():
    p = np.array([[0.1, -0.9], [0.5, 0.2]])
    assert ha.top_heads(p, 2) == [(0, 1, -0.9), (1, 0, 0.5)]
    assert ha.top_heads(p, 1, by_abs=False) == [(1, 0, 0.5)]


def test_correlations_and_jaccard():
    a = np.arange(6.0).reshape(2, 3)
    assert ha.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert ha.pearson(a, -a) == pytest.approx(-1.0)
    assert ha.spearman(a, np.exp(a)) == pytest.approx(1.0)               # monotone: rank correlation 1
    assert ha.pearson(a, np.exp(a)) < 1.0
    assert np.isnan(ha.pearson(a, np.ones_like(a)))
    x = np.array([[5.0, 4.0, 0.0], [0.0, 0.0, 3.0]])   # top-2: (0,0), (0,1)
    y = np.array([[5.0, 0.0, 0.0], [4.0, 0.0, 0.0]])   # top-2: (0,0), (1,0)
    assert ha.jaccard_topk(x, y, 2) == pytest.approx(1 / 3)
    assert ha.jaccard_topk(x, x, 3) == pytest.approx(1.0)


def test_similarity_matrix_symmetric():
    rng = np.random.default_rng(0)
    pats = {n: rng.random((3, 4)) for n in "abc"}
    for m in ("pearson", "spearman", "jaccard"):
        S = ha.similarity_matrix(pats, m, k=3)
        assert S.shape == (3, 3) and np.allclose(S, S.T) and np.allclose(np.diag(S), 1.0)
    assert ha.similarity_matrix(pats)[0, 1] == pytest.approx(ha.pearson(pats["a"], pats["b"]))
    with pytest.raises(ValueError):
        ha.similarity_matrix(pats, "cosine")


def test_noise_floor():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5)), rng.random((4, 5))
    nf = ha.noise_floor({"a": [a, a], "b": [b, b + 1e-9]})
    assert nf.within["a"] == pytest.approx(1.0) and nf.within["b"] == pytest.approx(1.0)
    assert nf.between == pytest.approx(np.mean([ha.pearson(a, b), ha.pearson(a, b + 1e-9)]))
    assert nf.within_mean == pytest.approx(1.0)


def _basics(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return {"x1": rng.random(n), "x2": rng.random(n), "x3": rng.random(n)}


def test_ols_recovers_exact_linear_combination():
    X = _basics()
    y = 0.5 + 2.0 * X["x1"] + 3.0 * X["x2"]
    fit = ha.fit_composition(y.reshape(6, 10), {k: v.reshape(6, 10) for k, v in X.items()}, "ols")
    assert fit.intercept == pytest.approx(0.5)
    assert np.allclose(fit.coef, [2.0, 3.0, 0.0], atol=1e-10)
    assert fit.r2 == pytest.approx(1.0) and fit.adj_r2 == pytest.approx(1.0)
    assert fit.as_dict()["coef"]["x2"] == pytest.approx(3.0)


def test_nnls_clips_negative_weight_and_keeps_free_intercept():
    X = _basics()
    y = -0.3 + 2.0 * X["x1"] - 1.0 * X["x2"]
    ols = ha.fit_composition(y, X, "ols")
    nn = ha.fit_composition(y, X, "nnls")
    assert ols.coef[1] == pytest.approx(-1.0)
    assert nn.coef.min() >= 0 and nn.coef[1] == pytest.approx(0.0)
    assert nn.r2 < ols.r2 == pytest.approx(1.0)
    y2 = -0.3 + 2.0 * X["x1"]
    nn2 = ha.fit_composition(y2, X, "nnls")
    assert nn2.intercept == pytest.approx(-0.3) and nn2.coef[0] == pytest.approx(2.0)


def test_adjusted_r2_formula():
    assert ha.adjusted_r2(0.5, 11, 2) == pytest.approx(1 - 0.5 * 10 / 8)
    assert np.isnan(ha.adjusted_r2(0.5, 3, 2))


def test_permutation_null():
    X = _basics(80)
    y = 1.0 * X["x1"] + 0.5 * X["x3"]
    res = ha.permutation_null(y, X, "ols", n_perm=1000, seed=0)
    assert res.observed == pytest.approx(1.0)
    assert res.null.shape == (1000,) and res.p_value == pytest.approx(1 / 1001)
    assert res.null_mean < 0.2
    noise = np.random.default_rng(5).random(80)
    res2 = ha.permutation_null(noise, X, "ols", n_perm=1000, seed=0)
    assert res2.p_value > 0.05                       # an unrelated target fits no better than shuffles
    assert 1 / 1001 <= res2.p_value <= 1.0
    res3 = ha.permutation_null(noise, X, "nnls", n_perm=200, seed=0)
    assert res3.null.min() >= 0 and res3.p_value > 0.05


def test_convergence():
    final = np.array([[1.0, 2.0], [3.0, 4.0]])
    P = np.stack([np.array([[4.0, 3.0], [2.0, 1.0]]), final * 5, final])
    c = ha.convergence(P, normalised=True)
    assert c["corr"][-1] == pytest.approx(1.0) and c["mse"][-1] == 0.0
    assert c["corr"][1] == pytest.approx(1.0) and c["mse"][1] == pytest.approx(0.0)   # rescaled: same after norm
    assert c["corr"][0] == pytest.approx(-1.0)
    raw = ha.convergence(P, normalised=False)
    assert raw["mse"][1] == pytest.approx(((final * 4) ** 2).mean())


def test_relative_change():
    before = {"a": np.array([3.0, 4.0]), "b": np.zeros(2)}
    after = {"a": np.array([3.0, 9.0]), "b": np.zeros(2)}
    assert ha.relative_change(before, after) == pytest.approx(1.0)
    assert ha.relative_change(before, before) == 0.0
