"""Impact and relationship functions on known inputs, and a tiny end-to-end study with resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from g2is_core.loop.evaluation import EvalResult
from g2is_core.impact.study import (CorpusSpec, ImpactConfig, ImpactStudy, SuiteEntry, circle_layout, classify_pair,
                              correlation_matrix, example_losses, impact_vector, paired_drop, relationship_edges,
                              run_study)
from g2is_core.impact.unlearning import UnlearnConfig


# ----------------------------------------------------------------------------- pure functions
def test_paired_drop_known_numbers():
    m, se = paired_drop([1.0, 2.0, 3.0], [2.0, 2.0, 5.0])      # d = 1, 0, 2: mean 1, sd 1
    assert m == pytest.approx(1.0) and se == pytest.approx(1 / math.sqrt(3))
    assert paired_drop([1.0], [1.5]) [0] == 0.5 and math.isnan(paired_drop([1.0], [1.5])[1])
    with pytest.raises(ValueError):
        paired_drop([1.0, 2.0], [1.0])


def test_impact_vector_averages_evals_per_category():
    suite = (SuiteEntry("math", "e1"), SuiteEntry("math", "e2"), SuiteEntry("qa", "e3"))
    before = {"e1": [1.0, 1.0], "e2": [2.0, 2.0], "e3": [0.0, 0.0]}
    after = {"e1": [2.0, 2.0], "e2": [2.0, 2.0], "e3": [-1.0, 1.0]}
    cats, drop, se = impact_vector(before, after, suite)
    assert cats == ["math", "qa"]
    assert drop.tolist() == pytest.approx([0.5, 0.0])          # (1 + 0) / 2 ; (-1 + 1) / 2
    assert se.tolist() == pytest.approx([0.0, 1.0])           # qa: sd sqrt(2) / sqrt(2) = 1


def test_correlation_matrix_known_rows():
    M = np.array([[1, 2, 3], [2, 4, 6], [3, 2, 1], [1, 1, 1]], float)
    R = correlation_matrix(M)
    assert R[0, 1] == pytest.approx(1.0) and R[0, 2] == pytest.approx(-1.0)
    assert np.isnan(R[0, 3]) and R[3, 3] == 1.0 and np.allclose(R, R.T, equal_nan=True)


def test_classify_pair_rules():
    # 1. complementary: joint 4 > 1 + 1 by 2, beyond tolerance max(z*SE, 0.1 * 2).
    p = classify_pair("a", "b", [1, 0], [0, 1], [2, 2])
    assert p.kind == "complementary" and p.excess == pytest.approx(2.0) and p.tolerance == pytest.approx(0.2)
    assert p.additivity == "super-additive"
    # ... but not when the standard errors make the excess noise.
    q = classify_pair("a", "b", [1, 0], [0, 1], [2, 2], se_a=[1, 1], se_b=[1, 1], se_joint=[1, 1])
    assert q.tolerance == pytest.approx(2 * math.sqrt(6)) and q.kind != "complementary"
    # 2. correlated: same direction across capabilities, joint additive.
    c = classify_pair("a", "b", [1, 2, 3], [2, 4, 7], [3, 6, 10])
    assert c.kind == "correlated" and c.r > 0.99 and c.additivity == "additive"
    # 3. orthogonal: r = -0.5 < 0.5; a sub-additive joint does not make it complementary.
    o = classify_pair("a", "b", [1, 0, 0], [0, 0, 1], [0.5, 0, 0])
    assert o.kind == "orthogonal" and o.r == pytest.approx(-0.5) and o.additivity == "sub-additive"
    # Without a joint run only the correlation decides; a constant vector has no r.
    assert classify_pair("a", "b", [1, 1, 1], [1, 2, 3]).kind == "orthogonal"
    assert classify_pair("a", "b", [1, 2, 3], [1, 2, 3]).total_joint is None


def test_relationship_edges_and_layout():
    M = np.array([[1, 2, 3], [2, 4, 6], [3, 2, 1]], float)
    joint = {("c", "a"): classify_pair("c", "a", M[2], M[0], M[2] + M[0] + 5)}
    edges = relationship_edges(["a", "b", "c"], M, joint)
    assert {(e["a"], e["b"], e["kind"], e["joint"]) for e in edges} == {("a", "b", "correlated", False),
                                                                       ("a", "c", "complementary", True)}
    pos = circle_layout(4)
    assert pos.shape == (4, 2) and pos[0] == pytest.approx([0, 1]) and np.allclose(np.linalg.norm(pos, axis=1), 1)


def test_example_losses_from_eval_results():
    ll = EvalResult("x", "loglik", 2, {}, [{"nll": 1.5}, {"nll": 0.5}])
    assert example_losses(ll) == [1.5, 0.5]
    mc = EvalResult("y", "mc", 1, {}, [{"gold": 1, "logprob_sum": [-1.0, -6.0], "n_tokens": [1, 3]}])
    assert example_losses(mc) == [2.0]
    with pytest.raises(ValueError):
        example_losses(EvalResult("z", "exact_match", 1, {}, [{}]))


def test_config_validation():
    c = (CorpusSpec("a", "x.txt"), CorpusSpec("b", "y.txt"))
    with pytest.raises(ValueError, match="at least two"):
        ImpactConfig(corpora=c[:1], pairs=())
    with pytest.raises(ValueError, match="third corpus"):
        ImpactConfig(corpora=c, pairs=(("a", "b"),))
    with pytest.raises(ValueError, match="letters"):
        CorpusSpec("a+b", "x.txt")
    cfg = ImpactConfig(corpora=c, pairs=())
    assert ImpactConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------------- tiny end-to-end
def _write_corpora(tmp_path):
    (tmp_path / "animals.txt").write_text("\n\n".join(
        f"Paragraph {i}: the cat and the dog play in the garden while birds sing number {i}." for i in range(8)))
    (tmp_path / "space.md").write_text("\n\n".join(
        f"Note {i}: planets orbit the star, and the moon {i} reflects its light at night." for i in range(8)))
    with open(tmp_path / "qa.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": f"What is {i} plus {i}?", "completion": f"It is {2 * i}, as {i}+{i}={2 * i}."}) + "\n")
    return (CorpusSpec("animals", str(tmp_path / "animals.txt")), CorpusSpec("space", str(tmp_path / "space.md")),
            CorpusSpec("qa", str(tmp_path / "qa.jsonl")))


def tiny_config(tmp_path) -> ImpactConfig:
    return ImpactConfig(model="tiny", corpora=_write_corpora(tmp_path), pairs=(("animals", "space"),),
                        suite=(SuiteEntry("symbolic", "builtin:add", limit=2), SuiteEntry("text", "builtin:sort", limit=2),
                               SuiteEntry("text", "builtin:lookup", limit=2)),
                        n_train=3, n_heldout=1, n_probe=2, max_tokens=24,
                        unlearn=UnlearnConfig(lr=1e-3, max_steps=2))


def test_tiny_study_end_to_end_and_resume(tmp_path):
    from g2is_core.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    st = run_study(tiny_config(tmp_path), ws, log=lambda *_: None)
    assert st.complete and st.corpora == ["animals", "space", "qa"] and st.pairs == [("animals", "space")]
    M, SE = st.impact_matrix()
    assert M.shape == (3, 2) and SE.shape == (3, 2)
    assert np.load(st.dir / "impact.npy").tolist() == M.tolist()
    u = st.runs["animals+space"]["unlearn"]
    assert u["targets"] == ["animals", "space"] and u["non_targets"] == ["qa"]
    assert u["curve"][0]["target"] == u["thresholds"]["target_original"]
    f = st.findings()
    assert len(f["relations"]) == 3 and {r["kind"] for r in f["relations"]} <= {"complementary", "correlated", "orthogonal"}
    stored = json.loads((st.dir / "findings.json").read_text())     # NaN is stored as "NaN" (workspace rule)
    assert stored["impact"] == f["impact"] and stored["corpora"] == f["corpora"]
    # Resume: a lost run is redone, the others are kept as they are.
    keep = (st.dir / "runs" / "qa" / "eval.json").stat().st_mtime_ns
    (st.dir / "runs" / "space" / "eval.json").unlink()
    (st.dir / "sidecar.json").unlink()
    assert not ImpactStudy.load(st.dir).complete and "space" not in ImpactStudy.load(st.dir).corpora
    st2 = run_study(tiny_config(tmp_path), ws, log=lambda *_: None)
    assert st2.complete and st2.dir == st.dir and st2.corpora == st.corpora
    assert (st.dir / "runs" / "qa" / "eval.json").stat().st_mtime_ns == keep
    # The original model's state is restored between runs: the redone run gives the same numbers.
    assert np.allclose(st2.impact_matrix()[0], M)
