"""Issue 17 on the Benchmarks page: the seed-paired differences to random and to LESS with bootstrap 95%
intervals (the numbers of ``loop.study.paired_ci_table`` on the same registry rows), and the per-cell
diagnostics (composition, walk fill, hub share, overlap between methods)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from g2is_core.loop.registry import Registry
from g2is_core.loop.scores import load_scores, save_scores
from g2is_core.loop.study import diagnostics_table, overlap_by_cell, paired_ci_table
from g2is_core.workspace import Workspace

from conftest import TIMEOUT_MS
from stwait import wait_idle

pytestmark = pytest.mark.browser

EXP = "study-page"
TARGETS = ("t_a", "t_b")
METHODS = {"random": 0.3, "less": 0.5, "g2is": 0.8}  # chance of a right answer per question
QUESTIONS = [f"q{i}" for i in range(12)]
POOL = [f"p{i}" for i in range(10)]


def _store_study(ws: Workspace) -> Registry:
    """2 targets x (random, less, g2is) x seeds 0 and 1 at ratio 0.2, plus base; each cell with its
    per-question accuracy, its selection (ids + scores table) and, for the selections, stored diagnostics."""
    reg = Registry.open(ws)
    rng = np.random.default_rng(17)
    picks = {"random": [0, 1, 2, 3], "less": [2, 3, 4, 5], "g2is": [3, 4, 5, 6]}
    for t in TARGETS:
        key = f"{EXP}-{t}-base"
        assert reg.claim(key, EXP, t, "base", None, 0, {"t": t, "m": "base"})
        save_scores(reg, key, EXP, {"ids": QUESTIONS, "values": {"accuracy": [0.0] * 12}, "weights": {}})
        reg.finish(key, metrics={"accuracy": 0.0, "n_eval": 12}, timings={})
        for method, p in METHODS.items():
            for seed in (0, 1):
                key = f"{EXP}-{t}-{method}-{seed}"
                vals = (rng.random(len(QUESTIONS)) < p).astype(float).tolist()
                assert reg.claim(key, EXP, t, method, 0.2, seed, {"t": t, "m": method})
                save_scores(reg, key, EXP, {"ids": QUESTIONS, "values": {"accuracy": vals}, "weights": {}})
                sel = ws.root / "sel" / key
                sel.mkdir(parents=True)
                chosen = [POOL[(i + seed) % len(POOL)] for i in picks[method]]
                (sel / "selected_ids.json").write_text(json.dumps(chosen))
                pd.DataFrame({"id": POOL, "source": ["src_a"] * 6 + ["src_b"] * 4, "task": ["x"] * 10,
                              "score": np.linspace(1, 0, 10), "selected": [i in chosen for i in POOL],
                              "rank": range(10)}).to_parquet(sel / "scores.parquet")
                diag = {"n_selected": 4, "budget": 4,
                        "composition": {"source": {"src_a": 3, "src_b": 1} if method != "g2is" else {"src_a": 4},
                                        "task": {"x": 4}}}
                if method == "g2is":
                    diag["walk"] = {"budget": 4, "filled": 3 + seed, "fill": (3 + seed) / 4, "fallbacks": 2 * seed}
                    diag["hubs"] = {"in_degree_gini": 0.5, "top1_in_share": 0.25, "selected_top1_share": 0.25}
                reg.finish(key, metrics={"accuracy": float(np.mean(vals)), "n_eval": 12, "n_train": 4}, timings={},
                           selection=str(sel), info={"diagnostics": diag})
    return reg


def _choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_idle(page)


def _tables(page, column: str) -> list[list[dict[str, str]]]:
    """Every table of the page with a column ``column``: its data rows as {column header: cell text}."""
    out = []
    for table in page.locator('[data-testid="stDataFrame"]').all():
        heads = [h.strip() for h in table.locator('[role="columnheader"]').all_text_contents()]
        if column in heads:
            rows = [r.locator('[role="gridcell"]').all_text_contents() for r in table.locator('[role="row"]').all()]
            out.append([dict(zip(heads, r)) for r in rows if r])
    return out


def test_benchmarks_page_shows_the_bootstrap_intervals_and_diagnostics(page, app_url, app_workspace):
    ws = Workspace(app_workspace)
    reg = _store_study(ws)
    rows = reg.current_rows(EXP)
    want = paired_ci_table(rows, load_scores(reg, EXP), "accuracy")
    assert set(want.reference) == {"random", "less"} and "(pooled)" in set(want.target)
    assert (want.basis == "questions x seeds").all() and want.ci_low.notna().all()

    page.goto(f"{app_url}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    _choose(page, "Experiment", EXP)
    page.get_by_text("Seed-matched differences to random and to LESS").first.wait_for(timeout=TIMEOUT_MS)
    page.locator('[role="columnheader"]').filter(has_text="ci_low").first.wait_for(state="attached",
                                                                                     timeout=TIMEOUT_MS)
    body = page.inner_text("body")
    assert "bootstrap 95% intervals" in body and f"g2is bench show {EXP} --ci" in body

    page.locator('[data-testid="stDataFrame"]').nth(1).screenshot(path="/tmp/g2is_benchmarks_intervals.png")
    tables = _tables(page, "ci_low")
    assert len(tables) == 2  # vs random, then vs less (the order of paired_ci_table)
    for got, ref in zip(tables, ("random", "less")):
        expect = want[want.reference == ref]
        assert len(got) == len(expect)
        for g, (_, e) in zip(got, expect.iterrows()):
            assert (g["target"], g["method"], int(g["n_seeds"]), int(g["n_questions"])) == \
                (e.target, e.method, e.n_seeds, e.n_questions)
            for col in ("mean_diff", "ci_low", "ci_high"):
                assert math.isclose(float(g[col]), e[col], abs_tol=5e-5), (ref, e.target, e.method, col, g[col])
            assert g["excludes_zero"] == (f"* {e.sig}" if e.mark else "")
    assert (want.mark == "*").any() and (want.mark == "").any()  # the data exercise both marks
    # what the experiment can tell apart: the half-widths of the intervals to random just shown
    power = _tables(page, "detectable_80")
    assert len(power) == 1 and [g["target"] for g in power[0]] == list(TARGETS)
    for g in power[0]:
        lines = want[(want.reference == "random") & (want.target == g["target"])]
        half = ((lines.ci_high - lines.ci_low) / 2).median()
        assert math.isclose(float(g["half_width_median"]), half, abs_tol=5e-5)
        assert math.isclose(float(g["detectable_80"]), half * 2.801585 / 1.959964, abs_tol=5e-4)
        assert int(g["n_excluding_zero"]) == (lines.mark == "*").sum()

    # diagnostics: the stored per-cell numbers, averaged over seeds, and the overlap between methods
    page.get_by_role("heading", name="Diagnostics").first.wait_for(timeout=TIMEOUT_MS)
    diag = diagnostics_table(rows)
    g2 = diag[(diag.method == "g2is") & (diag.target == "t_a")].iloc[0]
    assert (g2.fill, g2.fallbacks, g2.top_source_share) == (0.875, 1.0, 1.0)
    dtab = _tables(page, "in_degree_gini")
    assert len(dtab) == 1
    got = dtab[0]
    g2row = next(g for g in got if g and g["target"] == "t_a" and g["method"] == "g2is")
    assert float(g2row["fill"]) == 0.875 and float(g2row["fallbacks"]) == 1.0
    assert float(g2row["in_degree_gini"]) == 0.5 and float(g2row["top1_in_share"]) == 0.25
    assert g2row["top_source"] == "src_a" and float(g2row["top_source_share"]) == 1.0
    ov = overlap_by_cell(rows)
    want_j = ov[(ov.target == "t_a") & (ov.method_a == "g2is") & (ov.method_b == "less")].jaccard.iloc[0]
    otab = _tables(page, "jaccard")
    assert len(otab) == 1
    got = otab[0]
    hit = next(g for g in got if g and g["target"] == "t_a" and (g["method_a"], g["method_b"]) == ("g2is", "less"))
    assert math.isclose(float(hit["jaccard"]), want_j, abs_tol=1e-6) and want_j == pytest.approx(3 / 5)
    assert "Share of each selection by source" in page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0
    page.get_by_role("heading", name="Diagnostics").first.scroll_into_view_if_needed()
    page.screenshot(path="/tmp/g2is_benchmarks_study.png")


def test_benchmarks_page_says_what_is_left_of_a_partly_run_spec(page, app_url, app_workspace):
    from g2is_core.loop.plan import plan, plan_table
    from g2is_core.loop.runner import all_cells, cell_config
    from g2is_core.loop.spec import spec_from_dict
    from g2is_core.workspace import hash_config

    spec = spec_from_dict({"name": "plan-page", "model": "tiny", "methods": ["bm25"], "ratios": [0.1], "seeds": [0, 1],
                           "pool": {"builtin": {"seed": 0}}, "targets": [{"name": "add_reverse"}, {"name": "sort_desc"}]},
                          "plan-page.yaml")
    reg = Registry.open(Workspace(app_workspace))
    cells = all_cells(spec)
    reg.record_version(spec.name, "v1", spec.to_dict(), [hash_config(cell_config(spec, *c, "ph")) for c in cells])
    for t, m, r, s in cells[:3]:   # add_reverse: base, random seeds 0-1 finished
        cfg = cell_config(spec, t, m, r, s, "ph")
        assert reg.claim(hash_config(cfg), spec.name, t.name, m, r, s, cfg)
        reg.finish(hash_config(cfg), metrics={"nll": 1.0, "n_train": 0 if m == "base" else 4},
                   timings={"select_s": 1.0, "eval_s": 60.0, **({"train_s": 40.0} if m != "base" else {})},
                   train_dir=None if m == "base" else "t")
    want = plan_table(plan(spec, reg), 2)

    page.goto(f"{app_url}/benchmarks")
    page.get_by_role("heading", name="Benchmarks").first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page)
    _choose(page, "Experiment", "plan-page")
    title = f"What is left: {want.cells.iloc[-1]} of the spec's {len(cells)} cells"
    page.get_by_text(title).first.click()
    wait_idle(page)
    page.locator('[role="columnheader"]').filter(has_text="total_h").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    got = _tables(page, "total_h")
    assert len(got) == 1 and len(got[0]) == len(want)
    for g, (_, e) in zip(got[0], want.iterrows()):
        assert (g["method"], int(g["cells"])) == (e.method, e.cells)
        assert math.isclose(float(g["total_h"]), e.total_h, abs_tol=5e-3)
    assert "3 cells finished, 0 running now" in page.inner_text("body")
    assert page.locator('[data-testid="stException"]').count() == 0
