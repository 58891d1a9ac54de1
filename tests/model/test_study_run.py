"""Issue 17 end to end on the tiny model: `g2is bench run` on a 2-seed, 2-target spec keeps per-question
scores, and the table the Benchmarks page shows (readers.benchmark_intervals) is the interval table of
`g2is bench show --ci`: over questions and seeds, per target and pooled, each difference equal to the
difference of the registry's aggregates."""
import math

import pytest
import yaml

from g2is_core.app import readers
from g2is_core.loop.registry import Registry
from g2is_core.loop.scores import load_scores
from g2is_core.loop.stats import POOLED
from g2is_core.loop.study import paired_ci_table

SPEC = {
    "name": "tiny-study",
    "model": "tiny",
    "pool": {"builtin": {"seed": 0, "per_task": 4, "distractors": 8}},
    "targets": [{"name": "add_reverse", "eval_limit": 6, "n_select": 2},
                {"name": "sort_desc", "eval_limit": 6, "n_select": 2}],
    "methods": ["bm25"],
    "ratios": [0.2],
    "seeds": [0, 1],
    "train": {"lr": 1e-3, "epochs": 1, "batch_size": 4, "max_length": 48, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}},
    "eval": {"max_new_tokens": 4, "loglik": True},
}


@pytest.mark.slow
def test_bench_run_two_seeds_gives_the_benchmarks_interval_table(tmp_path, monkeypatch, capsys):
    from g2is_core import cli

    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert cli.main(["bench", "run", str(spec)]) == 0
    # before its first cell, the run says what it is in for: nothing measured yet, so nothing priced
    assert "14 cell(s) to run of 14 chosen (0 finished, 0 running elsewhere): not priced yet (no finished cell " \
           "measured them)" in capsys.readouterr().err
    reg = Registry.open()
    rows = reg.current_rows("tiny-study")
    assert {r["method"] for r in rows} == {"base", "full", "random", "bm25"} and all(r["status"] == "done" for r in rows)
    scores = load_scores(reg, "tiny-study")
    assert set(scores) == {r["config_hash"] for r in rows}

    # what the page shows: the same numbers as the core table over the same rows and scores
    tab = readers.benchmark_intervals(reg.path, "tiny-study", False, "nll")
    assert tab.equals(paired_ci_table(rows, scores, "nll"))
    assert set(tab.reference) == {"random"} and set(tab.method) == {"bm25"}  # no LESS cell: no vs-LESS line
    assert set(tab.target) == {"add_reverse", "sort_desc", POOLED} and (tab.metric == "nll").all()
    assert (tab.basis == "questions x seeds").all() and (tab.n_seeds == 2).all()
    assert list(tab.n_questions) == [6, 6, 12]
    agg = {(r["target"], r["method"], r["seed"]): r["metrics"]["nll"] for r in rows if r["ratio"] is not None}
    for t in ("add_reverse", "sort_desc"):
        line = tab[tab.target == t].iloc[0]
        # the estimate is the mean over seeds of the aggregate differences (token-weighted NLL)
        want = sum(agg[(t, "bm25", s)] - agg[(t, "random", s)] for s in (0, 1)) / 2
        assert line.mean_diff == pytest.approx(want, abs=1e-9)
        assert line.ci_low <= line.mean_diff <= line.ci_high and line.ci_high > line.ci_low
        assert line.mark == ("*" if line.sig else "") and line.sig in ("", "better", "worse")
    pooled = tab[tab.target == POOLED].iloc[0]
    assert pooled.n_targets == 2 and pooled.mean_diff == pytest.approx(tab[tab.target != POOLED].mean_diff.mean())
    assert all(math.isfinite(v) for v in (pooled.ci_low, pooled.ci_high))
    # the CLI prints the same table
    capsys.readouterr()
    assert cli.main(["bench", "show", "tiny-study", "--ci", "--metric", "nll"]) == 0
    out = capsys.readouterr().out
    assert "(pooled)" in out and f"{pooled.mean_diff:+.4f}" in out and f"{pooled.ci_low:+.4f}" in out

    # `bench plan` finds every cell by the runner's own keys: none missing; a third seed adds its cells, priced
    total = len(rows)
    capsys.readouterr()
    assert cli.main(["bench", "plan", str(spec)]) == 0
    assert f"tiny-study: {total} of {total} cells finished, 0 running now, 0 missing" in capsys.readouterr().out
    spec.write_text(yaml.safe_dump({**SPEC, "seeds": [0, 1, 2]}))
    assert cli.main(["bench", "plan", str(spec), "--processes", "2"]) == 0
    out = capsys.readouterr().out
    # seed 2: random and bm25 on both targets, and the full-data model (its seeds are the spec's) on both
    assert f"tiny-study: {total} of {total + 6} cells finished, 0 running now, 6 missing" in out
    assert "wall at 2 processes" in out and "unmeasured" in out and f"rates from {total} cell(s) on " in out
    assert cli.main(["bench", "plan", str(spec), "--seeds", "2", "--methods", "bm25"]) == 0
    assert "0 of 2 cells finished, 0 running now, 2 missing" in capsys.readouterr().out
