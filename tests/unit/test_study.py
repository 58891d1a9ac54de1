"""The study's tools on hand-made inputs with known answers: the paired bootstrap (loop/stats.py), per-question
scores (loop/scores.py), selection diagnostics (selection/diagnostics.py), the gold-option log-likelihood, the
walk ablations (graph/walk.py conflict / consistency switches, selection/methods/g2is_ablation.py)."""
import math
import os
import re

os.environ.setdefault("G2IS_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from g2is_core.loop.evaluation.metrics import gold_logprob  # noqa: E402
from g2is_core.loop.registry import Registry  # noqa: E402
from g2is_core.loop.scores import load_scores, merge_scores, question_scores, save_scores  # noqa: E402
from g2is_core.loop.stats import POOLED, BootstrapSettings, bootstrap_diff, paired_differences, significance  # noqa: E402
from g2is_core.selection import diagnostics as dg  # noqa: E402
from g2is_core.workspace import Workspace  # noqa: E402


# ----------------------------------------------------------------------------- the bootstrap
def test_constant_differences_give_a_zero_width_interval_at_the_constant():
    d = np.full((3, 40), 0.25)
    assert bootstrap_diff([(d, None)]) == (0.25, 0.25, 0.25)
    # weights change nothing when every difference is the same
    assert bootstrap_diff([(d, np.arange(1, 41))])[1:] == pytest.approx((0.25, 0.25))


def test_symmetric_case_matches_the_normal_interval():
    """One seed, 400 questions of +-1 (mean 0, sd 1): the bootstrap mean is ~ N(0, 1/400), so the 95%
    percentile interval is about +-1.96 / 20 = +-0.098."""
    d = np.where(np.arange(400) % 2 == 0, 1.0, -1.0)[None, :]
    est, lo, hi = bootstrap_diff([(d, None)], BootstrapSettings(n_boot=4000, seed=3))
    assert est == 0.0
    assert lo == pytest.approx(-0.098, abs=0.012) and hi == pytest.approx(0.098, abs=0.012)


def reference_bootstrap(blocks, settings):
    """The same replicates by explicit loops (same random draws in the same order)."""
    rng = np.random.default_rng(settings.seed)
    S = blocks[0][0].shape[0]
    qis = [rng.integers(0, d.shape[1], size=(settings.n_boot, d.shape[1])) for d, _ in blocks]
    si = rng.integers(0, S, size=(settings.n_boot, S))
    reps = []
    for b in range(settings.n_boot):
        per_t = []
        for (d, w), qi in zip(blocks, qis):
            w = np.ones(d.shape[1]) if w is None else np.asarray(w, float)
            per_t.append(np.mean([np.sum(d[s, qi[b]] * w[qi[b]]) / np.sum(w[qi[b]]) for s in si[b]]))
        reps.append(np.mean(per_t))
    a = (1 - settings.level) / 2
    return np.quantile(reps, [a, 1 - a])


def test_bootstrap_equals_a_direct_loop_reference_over_seeds_questions_and_targets():
    rng = np.random.default_rng(0)
    blocks = [(rng.normal(0.1, 1.0, size=(3, 30)), rng.integers(1, 9, size=30).astype(float)),
              (rng.normal(-0.2, 0.5, size=(3, 17)), None)]
    st = BootstrapSettings(n_boot=300, seed=5)
    est, lo, hi = bootstrap_diff(blocks, st)
    ref = reference_bootstrap(blocks, st)
    assert (lo, hi) == pytest.approx(tuple(ref), abs=1e-12)
    w0 = blocks[0][1]
    assert est == pytest.approx(np.mean([np.mean(blocks[0][0] @ w0 / w0.sum()), np.mean(blocks[1][0])]))


def test_one_seed_of_aggregates_has_no_interval():
    est, lo, hi = bootstrap_diff([(np.array([[0.3]]), None)])
    assert est == 0.3 and math.isnan(lo) and math.isnan(hi)


def test_significance_follows_the_metric_direction():
    assert significance(0.1, 0.2, "accuracy") == "better" and significance(-0.2, -0.1, "accuracy") == "worse"
    assert significance(-0.2, -0.1, "nll") == "better" and significance(0.1, 0.2, "nll") == "worse"
    assert significance(-0.1, 0.1, "accuracy") == "" and significance(math.nan, math.nan, "nll") == ""


# ----------------------------------------------------------------------------- paired table from registry rows
def _row(target, method, ratio, seed, metrics, key):
    return {"experiment": "e", "target": target, "method": method, "ratio": ratio, "seed": seed, "status": "done",
            "metrics": metrics, "finished": 1.0, "config_hash": key}


def _qs(ids, values, metric="accuracy", weights=None):
    return {"ids": list(ids), "values": {metric: list(values)}, "weights": {metric: list(weights)} if weights else {}}


def study_rows():
    """Two targets, methods random / m / less, seeds 0 and 1 (and an unpaired seed 2 of m).
    t1: m answers every question random gets wrong -> diff +0.5 on each seed, per question d = 1 or 0...
    made constant: random gets q0..q3 all wrong, m all right (d = 1 on every question)."""
    rows, scores = [], {}
    ids = ["q0", "q1", "q2", "q3"]
    for s in (0, 1):
        for t, m_val in (("t1", 1.0), ("t2", 0.5)):
            rows.append(_row(t, "random", 0.05, s, {"accuracy": 0.0}, f"{t}r{s}"))
            scores[f"{t}r{s}"] = _qs(ids, [0.0] * 4)
            rows.append(_row(t, "m", 0.05, s, {"accuracy": m_val}, f"{t}m{s}"))
            # the method's questions in another order: pairing is by id, not by position
            scores[f"{t}m{s}"] = _qs(ids[::-1], [m_val] * 4)
            rows.append(_row(t, "less", 0.05, s, {"accuracy": 0.25}, f"{t}l{s}"))
            scores[f"{t}l{s}"] = _qs(ids, [1.0, 0.0, 0.0, 0.0])
    rows.append(_row("t1", "m", 0.05, 2, {"accuracy": 1.0}, "t1m2"))  # no random seed 2: unpaired, left out
    rows.append(_row("t1", "base", None, 0, {"accuracy": 0.0}, "b"))
    return rows, scores


def test_paired_table_pairs_by_seed_and_question_and_pools_targets():
    rows, scores = study_rows()
    tab = paired_differences(rows, scores, references=("random",), settings=BootstrapSettings(n_boot=500))
    one = tab[(tab.target == "t1") & (tab.method == "m")].iloc[0]
    assert one.n_seeds == 2 and one.n_questions == 4 and one.basis == "questions x seeds"
    assert (one.mean_diff, one.ci_low, one.ci_high, one.sig) == (1.0, 1.0, 1.0, "better")
    two = tab[(tab.target == "t2") & (tab.method == "m")].iloc[0]
    assert (two.mean_diff, two.ci_low, two.ci_high) == (0.5, 0.5, 0.5)
    pooled = tab[(tab.target == POOLED) & (tab.method == "m")].iloc[0]
    assert pooled.n_targets == 2 and pooled.n_questions == 8
    assert (pooled.mean_diff, pooled.ci_low, pooled.ci_high) == (0.75, 0.75, 0.75)
    assert "base" not in set(tab.method) and "random" not in set(tab.method)
    # less vs random: +1 on q0, 0 elsewhere -> 0.25, and the interval spans the question draws
    less = tab[(tab.target == "t1") & (tab.method == "less")].iloc[0]
    assert less.mean_diff == 0.25 and less.ci_low == 0.0 and less.ci_high > 0.25


def test_paired_table_against_less_and_the_nll_direction():
    rows, scores = study_rows()
    tab = paired_differences(rows, scores, references=("less",), settings=BootstrapSettings(n_boot=300))
    m = tab[(tab.target == "t1") & (tab.method == "m")].iloc[0]
    assert m.reference == "less" and m.mean_diff == pytest.approx(0.75)
    nll_rows = [_row("g", "random", 0.01, s, {"nll": 2.0}, f"r{s}") for s in (0, 1)] + \
               [_row("g", "m", 0.01, s, {"nll": 1.5}, f"m{s}") for s in (0, 1)]
    nll_scores = {f"{k}{s}": _qs(["a", "b"], [v, v], "nll", weights=[3, 7]) for k, v in (("r", 2.0), ("m", 1.5))
                  for s in (0, 1)}
    t = paired_differences(nll_rows, nll_scores, references=("random",))
    assert (t.iloc[0].mean_diff, t.iloc[0].sig, t.iloc[0].basis) == (-0.5, "better", "questions x seeds")


def test_seeds_measured_before_a_metric_existed_form_their_own_line():
    """Seed 1 lacks label_logprob (measured before it existed): it falls back to nll, and pairs as nll apart;
    the asked metric's line keeps seed 0 (never one line mixing the two metrics, nor the asked one lost)."""
    rows = [_row("t", "random", 0.01, 0, {"nll": 2.0, "label_logprob": -1.0}, "r0"),
            _row("t", "m", 0.01, 0, {"nll": 1.5, "label_logprob": -0.5}, "m0"),
            _row("t", "random", 0.01, 1, {"nll": 2.2}, "r1"), _row("t", "m", 0.01, 1, {"nll": 1.6}, "m1")]
    scores = {"r0": {"ids": ["a", "b"], "values": {"nll": [2.0, 2.0], "label_logprob": [-1.0, -1.0]}, "weights": {}},
              "m0": {"ids": ["a", "b"], "values": {"nll": [1.5, 1.5], "label_logprob": [-0.5, -0.5]}, "weights": {}},
              "r1": _qs(["a", "b"], [2.2, 2.2], "nll"), "m1": _qs(["a", "b"], [1.6, 1.6], "nll")}
    tab = paired_differences(rows, scores, metric="label_logprob", references=("random",), pooled=False)
    assert list(tab.metric) == ["label_logprob", "nll"]
    lab, nll = tab.iloc[0], tab.iloc[1]
    assert (lab.n_seeds, lab.mean_diff) == (1, 0.5) and nll.n_seeds == 1 and nll.mean_diff == pytest.approx(-0.6)


def test_without_per_question_scores_the_interval_is_over_seeds():
    rows, _ = study_rows()
    tab = paired_differences(rows, None, references=("random",), settings=BootstrapSettings(n_boot=300))
    one = tab[(tab.target == "t1") & (tab.method == "m")].iloc[0]
    assert one.basis == "seeds" and one.n_questions == 0 and (one.ci_low, one.ci_high) == (1.0, 1.0)
    # seed-to-seed spread is what the interval then measures
    rows2 = [_row("t", "random", 0.05, s, {"accuracy": 0.0}, f"r{s}") for s in (0, 1, 2)] + \
            [_row("t", "m", 0.05, s, {"accuracy": v}, f"m{s}") for s, v in zip((0, 1, 2), (0.1, 0.2, 0.6))]
    r = paired_differences(rows2, {}, references=("random",), pooled=False).iloc[0]
    assert r.mean_diff == pytest.approx(0.3) and r.ci_low == pytest.approx(0.1) and r.ci_high == pytest.approx(0.6)
    single = paired_differences(rows2[:1] + rows2[3:4], {}, references=("random",)).iloc[0]
    assert single.n_seeds == 1 and math.isnan(single.ci_low)


# ----------------------------------------------------------------------------- per-question scores
def test_question_scores_from_eval_results_and_their_merge():
    mc = [{"id": "x", "correct": True, "correct_sum": True, "correct_norm": False, "gold_logprob": -0.1},
          {"id": "x", "correct": False, "correct_sum": False, "correct_norm": True, "gold_logprob": -2.0}]
    q = question_scores("mc", mc)
    assert q["ids"] == ["x", "x#2"] and q["values"]["accuracy"] == [1.0, 0.0] and q["values"]["gold_logprob"] == [-0.1, -2.0]
    ll = question_scores("loglik", [{"id": "x#2", "nll": 2.0, "n_tokens": 4}, {"id": "x", "nll": 1.0, "n_tokens": 2}])
    assert ll["ids"] == ["x#2", "x"] and ll["weights"]["nll"] == [4.0, 2.0]
    both = merge_scores(q, ll)
    assert both["values"]["nll"] == [1.0, 2.0] and both["weights"]["nll"] == [2.0, 4.0]  # aligned by id
    assert merge_scores(q, question_scores("loglik", [{"id": "other", "nll": 1.0, "n_tokens": 1}])) == q


def test_question_scores_round_trip_through_the_registry(tmp_path):
    reg = Registry.open(Workspace(tmp_path))
    q = _qs(["a", "b"], [1.0, float("nan")])
    save_scores(reg, "k1", "exp", q)
    save_scores(reg, "k2", "other", q)
    got = load_scores(reg, "exp")
    assert list(got) == ["k1"] and got["k1"]["ids"] == ["a", "b"] and math.isnan(got["k1"]["values"]["accuracy"][1])
    assert set(load_scores(reg)) == {"k1", "k2"}
    assert reg.rows() == []  # the runs table is untouched


def test_gold_logprob_is_a_log_softmax_over_the_options():
    assert gold_logprob([-1.0, -1.0], 0) == pytest.approx(math.log(0.5))
    assert gold_logprob([0.0, -1000.0, -1000.0], 0) == pytest.approx(0.0)
    assert gold_logprob([math.log(0.2), math.log(0.6), math.log(0.2)], 1) == pytest.approx(math.log(0.6))
    with pytest.raises(ValueError, match="gold index"):
        gold_logprob([0.0], 1)


# ----------------------------------------------------------------------------- diagnostics
def test_gini_and_top_share_on_known_vectors():
    assert dg.gini([1, 1, 1, 1]) == 0.0
    assert dg.gini([0, 0, 0, 4]) == pytest.approx(0.75)          # (n-1)/n: one holds everything
    assert dg.gini([1, 2, 3, 4]) == pytest.approx(0.25)          # sum|xi-xj| = 20, / (2 * 16 * 2.5)
    assert math.isnan(dg.gini([])) and math.isnan(dg.gini([0, 0]))
    assert dg.top_share([1] * 99 + [101]) == pytest.approx(101 / 200)  # top 1% of 100 nodes = 1 node
    assert dg.top_share([1] * 200, 0.01) == pytest.approx(0.01)


def test_hub_stats_of_a_star_graph():
    """Every node's nearest neighbour is node 0 (a hub); k = 2."""
    n = 100
    nb = np.array([[0, i % (n - 1) + 1] if i else [1, 2] for i in range(n)])
    deg = dg.in_degrees(nb)
    assert deg[0] == n - 1 and deg.sum() == 2 * n
    h = dg.hub_stats(deg, selected=[0, 5, 6, 7])
    assert h["top1_in_share"] == pytest.approx((n - 1) / (2 * n)) and h["n_top"] == 1
    assert h["selected_top1_share"] == 0.25 and h["max_in_degree"] == n - 1
    assert h["in_degree_gini"] == pytest.approx(dg.gini(deg))


def test_walk_stats_composition_and_jaccard():
    comps = [{"budget": 5, "filled": 5, "fallbacks": 1}, {"budget": 3, "filled": 1, "fallbacks": 0}]
    assert dg.walk_stats(comps) == {"budget": 8, "filled": 6, "fill": 0.75, "fallbacks": 1, "components": 2,
                                    "stopped_short": 1}

    class R:
        def __init__(self, source, task):
            self.source, self.task = source, task
    c = dg.composition([R("a", "x"), R("b", "x"), R("a", None)])
    assert c == {"source": {"a": 2, "b": 1}, "task": {"x": 2, "?": 1}}
    assert dg.jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3) and math.isnan(dg.jaccard([], []))


# ----------------------------------------------------------------------------- the ablations
def _features(seed=0, n=60, d=10):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[: n // 3] += 3 * np.eye(d)[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_walk_without_a_check_never_rejects_for_it():
    from g2is_core.graph.knn import build_knn
    from g2is_core.graph.walk import core_knowledge, walk

    x = _features()
    y = x[:6].astype(np.float64) + 0.05
    core = core_knowledge(y, 0.5)
    nb, _ = build_knn(x, 8)
    faithful = walk(x, core, nb, 20)
    t = faithful.trajectory
    assert (t["nbr_conflict"] + t["scan_conflict"]).sum() > 0  # the check bites on these features
    nocon = walk(x, core, nb, 20, conflict=False)
    assert (nocon.trajectory["nbr_conflict"] + nocon.trajectory["scan_conflict"]).sum() == 0
    assert nocon.config["conflict_check"] is False and "conflict_check" not in faithful.config
    nocons = walk(x, core, nb, 20, consistency=False)
    assert (nocons.trajectory["nbr_consistency"] + nocons.trajectory["scan_consistency"]).sum() == 0
    neither = walk(x, core, nb, 20, conflict=False, consistency=False)
    tt = neither.trajectory
    assert len(neither.selected) == 20 and (tt[tt.source != "anchor"].source == "local").all()
    # with no check, every step takes s*'s first neighbour not yet selected
    assert (tt[["nbr_conflict", "nbr_consistency"]].to_numpy() == 0).all()
    assert not np.array_equal(nocon.selected, faithful.selected)


def test_score_ablation_is_the_top_b_of_the_core_score(workspace):
    import g2is_core.selection as S
    from g2is_core.data.records import simple
    from g2is_core.graph.walk import core_knowledge

    x = _features(1)
    y = (x[:5].astype(np.float64) + 0.1).astype(np.float32)
    pool = [simple(f"p{i}", "q", "a", source="s", task="t") for i in range(len(x))]
    tg = [simple(f"t{i}", "q", "a", source="s", task="t") for i in range(len(y))]
    kw = {"train_features": S.FeatureSet.from_arrays(x, ids=[r.id for r in pool]),
          "target_features": S.FeatureSet.from_arrays(y, ids=[r.id for r in tg])}
    sel = S.select("g2is-score", pool, tg, count=7, workspace=workspace, **kw)
    fx = kw["train_features"].combined().astype(np.float64)
    core = core_knowledge(kw["target_features"].combined(), 0.5)
    want = (core.components @ fx.T).max(axis=0)
    assert np.allclose(sel.pool_scores, want)
    assert sel.ids == [pool[i].id for i in np.lexsort((np.arange(len(want)), -want))[:7]]
    w = S.select("g2is-score", pool, tg, count=7, workspace=workspace, reduce="weighted", **kw)
    assert np.allclose(w.pool_scores, core.weights @ (core.components @ fx.T))
    with pytest.raises(ValueError, match="reduce"):
        S.select("g2is-score", pool, tg, count=7, workspace=workspace, reduce="median", **kw)


# ----------------------------------------------------------------------------- evals and targets by path (item 6)
def test_a_spec_takes_targets_and_evals_by_path_outside_the_workspace(tmp_path):
    """A user's own files, anywhere on disk, as a target's selection examples and as its evaluation: a
    prompt/response file is scored by log-likelihood, a file with options and a gold index by mc."""
    import json as _json

    import yaml

    from g2is_core.loop.evaluation import eval_records, get_spec
    from g2is_core.loop.spec import load_spec

    own = tmp_path / "elsewhere"
    own.mkdir()
    qa = own / "my_eval.jsonl"
    qa.write_text("".join(_json.dumps({"prompt": f"What is {i}+1?", "completion": str(i + 1)}) + "\n"
                          for i in range(30)))
    mc = own / "my_mc.jsonl"
    mc.write_text("".join(_json.dumps({"query": f"Pick {i}:", "choices": [str(i), "x"], "gold": 0}) + "\n"
                          for i in range(12)))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "own-files", "model": "tiny", "pool": "builtin:pool?limit=50", "methods": ["bm25"],
        "targets": [{"name": "mine", "select": f"{qa}[0:10]", "eval": f"{qa}[10:]", "eval_limit": 8},
                    {"name": "mine-mc", "select": str(mc), "eval": f"{mc}?fmt=foundry_eval"}]}))
    spec = load_spec(spec_file)
    loglik, choice = get_spec(spec.targets[0].eval), get_spec(spec.targets[1].eval)
    assert loglik.protocol == "loglik" and choice.protocol == "mc"
    assert [r.prompt for r in eval_records(loglik)][0] == "What is 10+1?" and len(eval_records(loglik)) == 20
    assert len(eval_records(loglik, limit=8)) == 8 and len(eval_records(choice)) == 12
    with pytest.raises(ValueError, match="unknown eval .*or a data file by path"):
        get_spec("no_such_eval")


# ----------------------------------------------------------------------------- the faces: CLI and report
def test_bench_show_ci_and_the_report_read_the_intervals_from_the_registry(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path

    from g2is_core.cli import main
    from g2is_core.loop.study import diagnostics_table, overlap_by_cell, paired_ci_table

    ws = Workspace(tmp_path / "ws")
    monkeypatch.setenv("G2IS_WORKSPACE", str(ws.root))
    reg = Registry.open(ws)
    rows, scores = study_rows()
    for r in rows:   # t2 is a multiple-choice target: gold_logprob beside its accuracy (m -0.5, random -1.0)
        if r["target"] == "t2" and r["config_hash"] in scores:
            r["metrics"]["gold_logprob"] = r["metrics"]["accuracy"] - 1.0
            scores[r["config_hash"]]["values"]["gold_logprob"] = [r["metrics"]["gold_logprob"]] * 4
    for r in rows:
        sel = tmp_path / "sel" / r["config_hash"]
        sel.mkdir(parents=True)
        picks = {"random": ["a", "b"], "m": ["a", "c"], "less": ["c", "d"], "base": []}[r["method"]]
        (sel / "selected_ids.json").write_text(__import__("json").dumps(picks))
        assert reg.claim(r["config_hash"], "e", r["target"], r["method"], r["ratio"], r["seed"], {"k": r["config_hash"]})
        if r["config_hash"] in scores:
            save_scores(reg, r["config_hash"], "e", scores[r["config_hash"]])
        diag = {"composition": {"source": {"s1": 3, "s2": 1}}, "walk": {"fill": 0.5, "fallbacks": 2},
                "hubs": {"in_degree_gini": 0.4, "top1_in_share": 0.2, "selected_top1_share": 0.5}}
        reg.finish(r["config_hash"], metrics=r["metrics"], timings={}, selection=str(sel) if picks else None,
                   info={"diagnostics": diag} if r["method"] == "m" else None)
    done = reg.rows("e")
    ci = paired_ci_table(done, load_scores(reg, "e"), n_boot=200)
    row = ci[(ci.target == "t1") & (ci.method == "m") & (ci.reference == "random")].iloc[0]
    assert (row.mean_diff, row.ci_low, row.ci_high, row.mark) == (1.0, 1.0, 1.0, "*")
    ov = overlap_by_cell(done)
    mr = ov[(ov.target == "t1") & (ov.method_a == "m") & (ov.method_b == "random")].iloc[0]
    assert mr.jaccard == pytest.approx(1 / 3) and mr.n_seeds == 2
    dt = diagnostics_table(done)
    assert list(dt.method) == ["m", "m"] and dt.top_source_share.iloc[0] == 0.75 and dt.fill.iloc[0] == 0.5
    assert main(["bench", "show", "e", "--ci", "--diagnostics"]) == 0
    out = capsys.readouterr().out
    assert "95% bootstrap interval" in out and "(pooled)" in out and "questions x seeds" in out
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: e\ntargets: [{name: add_reverse}]\n")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import report_experiment

    assert report_experiment.main([str(spec), "--out", str(tmp_path / "r.md"), "--n-boot", "200"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## Paired differences with 95% bootstrap intervals" in text and "[+1.0000, +1.0000]" in text
    assert "## Selection diagnostics" in text and "averaged over seeds" in text
    gold = text.split("## Multiple-choice targets on gold_logprob")[1].split("## The G2IS ablation")[0]
    assert re.search(r"\| t2 \| gold_logprob \| m \| 5% \| \d \| -0\.500 ± 0\.000 \| \+0\.500 \|", gold)
    assert "| t2 | gold_logprob | m | 5% | 2 | 4 | +0.5000 | [+0.5000, +0.5000] | * better |" in gold
    assert "| t1 |" not in gold   # t1 reports accuracy only: not in this section
    # an edit of the spec records a version without these cells: the report leaves them out, as the tables do
    reg.record_version("e", "edited", {"name": "e"}, [rows[0]["config_hash"]])
    assert report_experiment.main([str(spec), "--out", str(tmp_path / "r2.md"), "--n-boot", "200"]) == 0
    edited = (tmp_path / "r2.md").read_text()
    assert "[+1.0000, +1.0000]" not in edited and "no paired cells yet" in edited


def test_the_grid_of_the_study_doc_shows_means_paired_intervals_and_what_did_not_run():
    from g2is_core.loop.study import study_grid

    rows, scores = study_rows()
    cols = [("t1", "accuracy", "-"), ("t1", "accuracy", "random"), ("t2", "accuracy", "random"),
            ("(pooled)", "accuracy", "random")]
    g = study_grid(rows, scores, cols, ["base", "random", "m", "less", "nobody"], 0.05, n_boot=200)
    assert list(g.index) == ["base", "random", "m", "less", "nobody"]
    # base: its value wherever it ran, nothing in a pooled column; the reference shows its own mean ± sd
    # (in a difference column only where the table has no mean column of that target)
    assert list(g.loc["base"]) == ["0.000", "", "not run", ""]
    assert g.loc["random", "1"] == "" and g.loc["random", "2"] == "0.000 ± 0.000" and g.loc["random", "3"] == ""
    # m ran 3 seeds on t1 (seed 2 unpaired: left out of the difference, kept in the mean)
    assert list(g.loc["m"]) == ["1.000 ± 0.000", "+1.000 [+1.000, +1.000] * better", "+0.500 [+0.500, +0.500] * better",
                                "+0.750 [+0.750, +0.750] * better"]
    assert g.loc["less", "0"] == "0.250 ± 0.000 (2 seeds)" and g.loc["less", "1"].startswith("+0.250 [+0.000, +")
    assert set(g.loc["nobody"]) == {"not run"}
    # a method that ran on some of a pooled column's targets says over how many its mean is
    t3 = [dict(r, target="t3", config_hash="3" + r["config_hash"]) for r in rows if r["target"] == "t2"]
    scores3 = {**scores, **{"3" + k: v for k, v in scores.items() if k.startswith("t2")}}
    part = [r for r in rows + t3 if not (r["target"] == "t2" and r["method"] == "less")]
    g = study_grid(part, scores3, cols[1:3] + [("t3", "accuracy", "random"), cols[3]], ["m", "less"], 0.05, n_boot=50)
    assert g.loc["less", "1"] == "not run" and g.loc["less", "3"].endswith("] (2 of 3 targets)")
    assert g.loc["m", "3"] == "+0.667 [+0.667, +0.667] * better"   # (1 + 0.5 + 0.5) / 3
    # a pooled cell pairs the seeds all its targets have: t3 at seed 0 only pools m at one seed, and says so
    one = [r for r in rows + t3 if not (r["target"] == "t3" and r["seed"] == 1)]
    g = study_grid(one, scores3, cols[1:3] + [("t3", "accuracy", "random"), cols[3]], ["m"], 0.05, n_boot=50)
    assert g.loc["m", "0"] == "+1.000 [+1.000, +1.000] * better" and g.loc["m", "2"] == "+0.500 [+0.500, +0.500] * better"
    assert g.loc["m", "3"] == "+0.667 [+0.667, +0.667] * better (1 seed)"
    # a metric the rows do not report never fills a cell from another metric
    assert set(study_grid(rows, scores, [("t1", "nll", "random")], ["m"], 0.05, n_boot=50).loc["m"]) == {"not run"}


def test_power_table_reads_the_interval_half_widths_against_random():
    from g2is_core.loop.study import paired_ci_table, power_table

    rows, scores = study_rows()
    tab = power_table(rows, scores, [("t1", "accuracy"), ("t2", "accuracy"), ("t1", "nll")], 0.05, n_boot=200)
    assert list(tab.target) == ["t1", "t2"]          # no row reports nll: no line for it
    ci = paired_ci_table(rows, scores, references=("random",), n_boot=200)
    less = ci[(ci.target == "t1") & (ci.method == "less")].iloc[0]
    t1 = tab.iloc[0]
    # m's interval is [1, 1] (half-width 0), less's is [0, hi]: the median of the two half-widths
    assert t1.n_methods == 2 and t1.half_width_median == pytest.approx((less.ci_high - less.ci_low) / 4)
    assert t1.half_width_max == pytest.approx((less.ci_high - less.ci_low) / 2) and t1.n_excluding_zero == 1
    # 80% power at the median width: (1.960 + 0.842) standard errors, a standard error being half-width / 1.960
    assert t1.detectable_80 == pytest.approx(t1.half_width_median * (1.959964 + 0.841621) / 1.959964, rel=1e-6)
    assert t1.reference_minus_base == 0.0 and math.isnan(tab.iloc[1].reference_minus_base)   # t2 has no base row
    assert (t1.n_seeds, t1.n_questions) == (2, 4)


def test_the_report_fills_the_marked_tables_of_a_doc_and_leaves_its_prose(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from report_experiment import fill_doc

    rows, scores = study_rows()
    doc = ("# Reading\n\nhand-written prose 1.234\n\n"
           "<!-- study-grid ratio=0.05 rows=random,m cols=t*:accuracy:random -->\nstale | table\n<!-- /study-table -->\n"
           "more prose\n<!-- study-anchors ratio=0.05 cols=t1:accuracy -->\n<!-- /study-table -->\n"
           "<!-- study-power ratio=0.05 cols=t*:accuracy -->\n<!-- /study-table -->\n")
    out, n = fill_doc(doc, rows, scores, ["t1", "t2"], n_boot=100)
    assert "| t2 | accuracy | 2 | 2 | 4 |" in out and "| 1 of 2 |  |" in out   # t2: no base, no scale
    assert n == 3 and "stale" not in out and out.startswith("# Reading\n\nhand-written prose 1.234\n\n")
    assert "| m | +1.000 [+1.000, +1.000] * better | +0.500 [+0.500, +0.500] * better |" in out
    assert "| method | t1 | t2 |" in out and "more prose" in out
    assert "| t1 | accuracy | 0.000 | 0.000 | m 1.000 | not run |" in out   # base, random, best, full (none)
    assert fill_doc(out, rows, scores, ["t1", "t2"], n_boot=100) == (out, 3)   # regenerating changes nothing
    with pytest.raises(ValueError, match=r"line 3: .*'x\*' matches none of the spec's targets \(t1, t2\)"):
        fill_doc("a\n\n<!-- study-grid ratio=0.05 rows=m cols=x*:accuracy:random -->\n<!-- /study-table -->",
                 rows, scores, ["t1", "t2"])
    with pytest.raises(ValueError, match="line 2: '<!-- study-grd ratio=0.05 -->' is not a table this report fills"):
        fill_doc("x\n<!-- study-grd ratio=0.05 -->\n<!-- /study-table -->", rows, scores, ["t1"])
    with pytest.raises(ValueError, match="line 1: .* closed by <!-- /study-table -->"):   # never closed: stale
        fill_doc("<!-- study-power ratio=0.05 cols=t1:accuracy -->\n| old |\n", rows, scores, ["t1"])
    with pytest.raises(ValueError, match="line 1: .*give exactly cols, ratio, rows"):
        fill_doc("<!-- study-grid ratio=0.05 cols=t1:accuracy:random -->\n<!-- /study-table -->", rows, scores, ["t1"])


def test_report_counts_picks_per_source_file():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from report_experiment import _source_file

    assert _source_file("flan_v2_cot:aqua_train:12", "flan_v2_cot") == "flan_v2_cot:aqua_train"
    assert _source_file("t0_train_50k:quoref_Find_Answer:49", "t0_train_50k") == "t0_train_50k"   # templates: one
    assert _source_file("seed_task_62", "self_instruct") == "self_instruct"     # ids without the file: the source
    assert _source_file("667ddeb7-cf48-4ab8", "") == "667ddeb7-cf48-4ab8"
