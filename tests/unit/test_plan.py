"""`g2is bench plan` (loop/plan.py) on a hand-made registry: which cells are missing, and what they cost at the
medians of the finished cells' timings (the known answers are computed by hand beside each assertion)."""
import sqlite3
import statistics
import sys
from pathlib import Path

import pytest

from g2is_core.loop.plan import LATEST, plan, plan_table
from g2is_core.loop.registry import Registry
from g2is_core.loop.runner import all_cells, cell_config
from g2is_core.loop.spec import spec_from_dict
from g2is_core.workspace import hash_config

POOL = {"builtin": {"seed": 0, "per_task": 4, "distractors": 8}}
RAW = {"name": "p", "model": "tiny", "pool": POOL, "methods": ["bm25"], "ratios": [0.1, 0.5], "seeds": [0, 1],
       "targets": [{"name": "add_reverse", "n_select": 2}, {"name": "sort_desc", "n_select": 2}]}
POOL_HASH = "poolhash"


def _finish(reg, spec, target, method, ratio, seed, timings, n_train, train_dir=None):
    # a training dir per training, as the runner keys it: random and full share theirs across targets
    t = next(x for x in spec.targets if x.name == target)
    cfg = cell_config(spec, t, method, ratio, seed, POOL_HASH)
    key = hash_config(cfg)
    assert reg.claim(key, spec.name, target, method, ratio, seed, cfg)
    train_dir = train_dir or f"train-{method}-{ratio}-{seed}" + ("" if method in ("random", "full") else f"-{target}")
    reg.finish(key, metrics={"nll": 1.0, "n_train": n_train}, timings=timings,
               train_dir=train_dir if method != "base" else None)
    return key


@pytest.fixture
def study(workspace):
    spec = spec_from_dict(RAW, "spec.yaml")
    reg = Registry.open(workspace)
    keys = [hash_config(cell_config(spec, *c, POOL_HASH)) for c in all_cells(spec)]
    reg.record_version(spec.name, hash_config(spec.to_dict()), spec.to_dict(), keys)
    # add_reverse: base, and random / bm25 at ratio 0.1, seed 0 (pool of 40 -> 4 records)
    _finish(reg, spec, "add_reverse", "base", None, 0, {"select_s": 0.0, "eval_s": 10.0, "head_pattern_s": 1.0}, 0)
    _finish(reg, spec, "add_reverse", "random", 0.1, 0,
            {"select_s": 0.5, "train_s": 8.0, "eval_s": 12.0, "head_pattern_s": 2.0}, 4)
    # measured again later (bench remeasure): its remeasure timings are no part of running a cell
    _finish(reg, spec, "add_reverse", "bm25", 0.1, 0, {"select_s": 1.5, "train_s": 12.0, "eval_s": 14.0,
                                                       "head_pattern_s": 3.0, "remeasure_s": 90.0,
                                                       "remeasure_reused": 1.0}, 4)
    # the full-data model (40 records: the pool's size), measured on sort_desc; a reused evaluation is no rate
    _finish(reg, spec, "sort_desc", "full", None, 0,
            {"select_s": 0.0, "train_s": 100.0, "eval_s": 30.0, "head_pattern_s": 4.0}, 40)
    # as the runner writes a cell that read another's evaluation: no head pattern ran (no rate for the rest); its
    # training dir is add_reverse's (the same draw): 1.5 s of loading it is no training rate
    _finish(reg, spec, "sort_desc", "random", 0.1, 0, {"select_s": 0.5, "train_s": 1.5, "eval_s": 0.01,
                                                       "eval_reused": 1.0}, 4)
    return spec, reg


def test_missing_cells_and_their_costs_are_the_medians_of_what_finished(study):
    spec, reg = study
    p = plan(spec, reg)
    # 2 targets x (base 1 + full 2 seeds + random/bm25 x 2 ratios x 2 seeds) = 2 x 11 = 22 cells, 5 finished
    assert p.n_cells == 22 and p.n_done == 5 and not p.running and len(p.missing) == 17
    assert not p.unmeasured
    per_record = statistics.median([8.0 / 4, 12.0 / 4, 100.0 / 40])   # one rate per training dir
    by = {(c.target, c.method, c.ratio, c.seed): c for c in p.missing}
    c = by[("add_reverse", "bm25", 0.5, 1)]
    assert c.train_s == pytest.approx(per_record * 20)                # round(0.5 x 40) records
    assert c.eval_s == pytest.approx(statistics.median([10.0, 12.0, 14.0]))
    assert c.rest_s == pytest.approx(2.0) and c.select_s == pytest.approx(1.5)
    s = by[("sort_desc", "bm25", 0.1, 1)]
    assert s.eval_s == pytest.approx(30.0)                            # the reused evaluation left out
    assert s.rest_s == pytest.approx(4.0)                             # the reused row left out here too
    # the full pool trains once per seed for every target: seed 0 trained (sort_desc); seed 1 on its first target
    assert by[("add_reverse", "full", None, 0)].train_s == 0.0
    assert by[("add_reverse", "full", None, 1)].train_s == pytest.approx(per_record * 40)
    assert by[("sort_desc", "full", None, 1)].train_s == 0.0
    assert ("add_reverse", "base", None, 0) not in by and by[("sort_desc", "base", None, 0)].train_s == 0.0
    # random: one draw per (ratio, seed) trains once for every target (the first target's cell, in run order)
    assert by[("add_reverse", "random", 0.1, 1)].train_s > 0 and by[("sort_desc", "random", 0.1, 1)].train_s == 0.0
    assert by[("add_reverse", "random", 0.5, 0)].train_s == pytest.approx(per_record * 20)
    assert by[("sort_desc", "random", 0.5, 0)].train_s == 0.0
    # 0.1/0 trained already (add_reverse): the other target's cell at that draw trains nothing (not missing here)
    assert ("sort_desc", "random", 0.1, 0) not in by


def test_the_table_sums_the_cells_and_divides_the_wall_by_the_processes(study):
    spec, reg = study
    p = plan(spec, reg)
    tab = plan_table(p, processes=2)
    total = tab.iloc[-1]
    assert total.ratio == "all" and total.cells == 17 == tab.cells.iloc[:-1].sum()
    assert total.total_h == pytest.approx(sum(c.total_s for c in p.missing) / 3600)
    assert total.total_h == pytest.approx(total.train_h + total.eval_h + total.other_h)
    assert f"{total.total_h / 2:.1f} h" in total.method
    assert list(tab.ratio.iloc[:2]) == ["-", "-"] and set(tab.method.iloc[:2]) == {"base", "full"}


def test_running_cells_of_live_processes_are_apart_and_stale_ones_are_missing(study):
    spec, reg = study
    t = spec.targets[1]
    live = cell_config(spec, t, "bm25", 0.1, 0, POOL_HASH)
    assert reg.claim(hash_config(live), spec.name, t.name, "bm25", 0.1, 0, live)   # this process: alive
    dead = cell_config(spec, t, "bm25", 0.5, 0, POOL_HASH)
    assert reg.claim(hash_config(dead), spec.name, t.name, "bm25", 0.5, 0, dead)
    with sqlite3.connect(reg.path) as c:   # a killed process's claim: no such pid on this host
        c.execute("UPDATE runs SET owner=? WHERE config_hash=?", (f"{__import__('socket').gethostname()}:999999999",
                                                                  hash_config(dead)))
    p = plan(spec, reg)
    assert p.running == [("sort_desc", "bm25", 0.1, 0)]
    assert ("sort_desc", "bm25", 0.5, 0) in {(c.target, c.method, c.ratio, c.seed) for c in p.missing}
    assert p.n_done + len(p.running) + len(p.missing) == p.n_cells


def test_an_edited_pool_has_every_cell_missing_and_an_unmeasured_target_says_so(study):
    spec, reg = study
    edited = spec_from_dict({**RAW, "pool": {"builtin": {"seed": 1, "per_task": 4, "distractors": 8}}}, "spec.yaml")
    p = plan(edited, reg)
    assert p.n_done == 0 and len(p.missing) == p.n_cells and "every cell is missing" in " ".join(p.notes)
    # another pool draws other records: the random draw 0.1/0 trained on the old pool is trained again
    assert [c.train_s > 0 for c in p.missing if (c.method, c.ratio, c.seed) == ("random", 0.1, 0)] == [True, False]
    # so does another model (the training dir is keyed by it)
    p = plan(spec_from_dict({**RAW, "model": "default"}, "spec.yaml"), reg)
    assert [c.train_s > 0 for c in p.missing if (c.method, c.ratio, c.seed) == ("random", 0.1, 0)] == [True, False]
    more = spec_from_dict({**RAW, "targets": RAW["targets"] + [{"name": "first_last", "n_select": 2}]}, "spec.yaml")
    p = plan(more, reg)
    assert p.n_done == 5   # the same pool: the finished cells are found by their keys
    new = [c for c in p.missing if c.target == "first_last"]
    assert new and all(c.eval_s is None and c.total_s is None for c in new) and p.unmeasured == new
    assert plan_table(p).iloc[-1].unmeasured == len(new)
    # a method no cell has run is not priced from the others' selections (its first may compute much more)
    p = plan(spec_from_dict({**RAW, "methods": ["bm25", "repr", {"name": "bm25-x", "method": "bm25",
                                                                  "options": {"k1": 1.2}}]}, "spec.yaml"), reg)
    assert {c.select_s for c in p.missing if c.method == "repr"} == {None}
    assert {c.select_s for c in p.missing if c.method == "bm25-x"} == {1.5}   # a variant: its method's rate


def test_latest_cells_set_the_evaluation_rate(workspace):
    spec = spec_from_dict({**RAW, "seeds": list(range(LATEST + 2)), "ratios": [0.1]}, "spec.yaml")
    reg = Registry.open(workspace)
    reg.record_version(spec.name, "v", spec.to_dict(), [hash_config(cell_config(spec, *c, POOL_HASH))
                                                        for c in all_cells(spec)])
    # seeds 0-1 measured with old, slow code (100 s); the latest LATEST at 10 s: the rate follows the code as it is
    for s in range(LATEST + 2):
        _finish(reg, spec, "add_reverse", "bm25", 0.1, s, {"select_s": 1.0, "train_s": 4.0,
                                                           "eval_s": 100.0 if s < 2 else 10.0}, 4)
    p = plan(spec, reg)
    assert {c.eval_s for c in p.missing if c.target == "add_reverse"} == {10.0}


def test_the_report_fills_a_plan_table_and_refuses_a_bad_process_count(study):
    spec, reg = study
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from report_experiment import fill_doc

    doc = "Left:\n\n<!-- study-plan processes=2 -->\nold\n<!-- /study-table -->\n"
    out, n = fill_doc(doc, [], {}, ["add_reverse", "sort_desc"], plan=plan(spec, reg))
    assert n == 1 and "old" not in out and "5 of the spec's 22 cells finished" in out
    assert "| all " in out and "wall at 2 processes" in out
    with pytest.raises(ValueError, match="processes must be a whole number"):
        fill_doc(doc.replace("processes=2", "processes=two"), [], {}, ["add_reverse"], plan=plan(spec, reg))


def test_likely_hours_discount_the_measured_share_of_cells_that_read_another_methods_weights(workspace):
    # bm25-b picks what bm25 picks on 3 of its 4 finished cells at 0.1 (the runner then reads bm25's training and
    # evaluation: eval_reused), none at 0.5 has run: its 0.5 cells take the share over every ratio, 3/4
    raw = {**RAW, "methods": ["bm25", {"name": "bm25-b", "method": "bm25", "options": {"k1": 1.2}}],
           "seeds": [0, 1, 2, 3]}
    spec = spec_from_dict(raw, "spec.yaml")
    reg = Registry.open(workspace)
    reg.record_version(spec.name, "v", spec.to_dict(), [hash_config(cell_config(spec, *c, POOL_HASH))
                                                        for c in all_cells(spec)])
    for s in range(4):
        _finish(reg, spec, "add_reverse", "bm25", 0.1, s, {"select_s": 2.0, "train_s": 8.0, "eval_s": 10.0}, 4)
        reused = {"train_s": 0.5, "eval_s": 0.01, "eval_reused": 1.0} if s < 3 else {"train_s": 8.0, "eval_s": 10.0}
        _finish(reg, spec, "add_reverse", "bm25-b", 0.1, s, {"select_s": 2.0, **reused}, 4)
    p = plan(spec, reg)
    by = {(c.target, c.method, c.ratio, c.seed): c for c in p.missing}
    c = by[("add_reverse", "bm25-b", 0.5, 0)]
    assert c.reuse == pytest.approx(0.75) and by[("add_reverse", "bm25", 0.5, 0)].reuse == 0.0
    # select 2 s, then a quarter of (train 2 s/record x 20 records + eval 10 s + rest 0 s)
    assert c.total_s == pytest.approx(2.0 + 40.0 + 10.0) and c.likely_s == pytest.approx(2.0 + 0.25 * 50.0)
    assert by[("add_reverse", "bm25", 0.5, 0)].likely_s == pytest.approx(by[("add_reverse", "bm25", 0.5, 0)].total_s)
    tab = plan_table(p)
    line = tab[(tab.method == "bm25-b") & (tab.ratio == "0.5")].iloc[0]
    assert line.likely_h == pytest.approx(sum(x.likely_s for x in p.missing if (x.method, x.ratio) == ("bm25-b", 0.5)
                                                             and x.total_s is not None)
                                          / 3600)
    assert line.likely_h < line.total_h
    assert "likely" in tab.iloc[-1].method and "bm25-b 3 of 4 at 0.1" in " ".join(p.all_notes())
    assert "(likely " in p.cost_phrase()
