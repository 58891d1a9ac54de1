import math
import multiprocessing as mp

import pytest

from g2is_core.loop.tables import composition, overlap_matrix, paired_vs_random, primary_metric, summary_table
from g2is_core.loop.registry import Registry
from g2is_core.workspace import Workspace


def _row(target, method, ratio, seed, acc):
    return {"experiment": "e", "target": target, "method": method, "ratio": ratio, "seed": seed, "status": "done",
            "metrics": {"accuracy": acc, "n_train": 10}, "timings": {}, "selection": None, "train_dir": None}


def test_summary_table_means_spread_and_deltas():
    rows = [_row("t", "base", None, 0, 0.10), _row("t", "full", None, 0, 0.50),
            _row("t", "random", 0.05, 0, 0.20), _row("t", "random", 0.05, 1, 0.30),
            _row("t", "g2is", 0.05, 0, 0.40), _row("t", "g2is", 0.05, 1, 0.50),
            {**_row("t", "less", 0.05, 0, 0.9), "status": "failed"}]
    tab = summary_table(rows)
    g = tab[tab.method == "g2is"].iloc[0]
    assert g["n_seeds"] == 2 and math.isclose(g["mean"], 0.45) and math.isclose(g["std"], 0.0707106781, rel_tol=1e-6)
    assert math.isclose(g["vs_random"], 0.20) and math.isclose(g["vs_full"], -0.05) and math.isclose(g["vs_base"], 0.35)
    assert list(tab.method) == ["base", "full", "random", "g2is"]  # baselines first; failed rows left out
    assert math.isclose(tab[tab.method == "random"].iloc[0]["vs_random"], 0.0)


def test_summary_deltas_compare_the_same_metric_when_some_rows_lack_it():
    """A reference measured partly before a metric existed: its seeds without it fall back to their primary metric
    (another line of the table); the deltas subtract the reference's mean of the asked metric, never the other."""
    def r(method, seed, metrics):
        return {**_row("t", method, 0.05, seed, 0.0), "metrics": metrics}

    rows = [r("random", 0, {"nll": 2.0, "nll_answer": 5.0}), r("random", 1, {"nll": 2.2}),
            r("g2is", 0, {"nll": 1.8, "nll_answer": 4.0}), r("g2is", 1, {"nll": 1.9, "nll_answer": 4.5})]
    tab = summary_table(rows, "nll_answer")
    g = tab[(tab.method == "g2is") & (tab.metric == "nll_answer")].iloc[0]
    assert math.isclose(g["vs_random"], 4.25 - 5.0)
    assert math.isclose(tab[(tab.method == "random") & (tab.metric == "nll")].iloc[0]["vs_random"], 0.0)


def test_paired_vs_random_matches_seeds_and_direction():
    rows = [_row("t", "random", 0.05, 0, 0.20), _row("t", "random", 0.05, 1, 0.30), _row("t", "random", 0.01, 0, 0.9),
            _row("t", "g2is", 0.05, 0, 0.25), _row("t", "g2is", 0.05, 1, 0.10), _row("t", "g2is", 0.05, 2, 0.99),
            _row("t", "base", None, 0, 0.0)]
    tab = paired_vs_random(rows)
    assert len(tab) == 1  # base is not compared; seed 2 has no random partner; ratio 0.01 has no g2is row
    g = tab.iloc[0]
    assert g["n_pairs"] == 2 and g["better"] == 1
    assert math.isclose(g["mean_diff"], ((0.25 - 0.20) + (0.10 - 0.30)) / 2)
    assert math.isclose(g["min_diff"], -0.20) and math.isclose(g["max_diff"], 0.05)
    nll = [{**r, "metrics": {"nll": r["metrics"]["accuracy"]}} for r in rows]
    assert paired_vs_random(nll).iloc[0]["better"] == 1  # lower NLL is better: seed 1 (0.10 < 0.30) wins
    nll[3]["metrics"]["nll"] = 0.1  # now seed 0 wins too
    assert paired_vs_random(nll).iloc[0]["better"] == 2


def test_a_rerun_of_an_edited_spec_replaces_rather_than_averages():
    old = {**_row("t", "g2is", 0.05, 0, 0.10), "finished": 100.0, "config_hash": "a"}
    new = {**_row("t", "g2is", 0.05, 0, 0.30), "finished": 200.0, "config_hash": "b"}
    for rows in ([old, new], [new, old]):
        tab = summary_table(rows)
        assert len(tab) == 1 and tab.iloc[0]["n_seeds"] == 1 and math.isclose(tab.iloc[0]["mean"], 0.30)


def test_primary_metric_order():
    assert primary_metric({"f1": 0.5, "em": 0.4}) == ("em", 0.4)
    assert primary_metric({"nll": 2.0}) == ("nll", 2.0)
    assert primary_metric({}) == (None, None)


def test_overlap_and_composition():
    m = overlap_matrix({"a": ["1", "2", "3"], "b": ["2", "3", "4"], "c": []})
    assert m.loc["a", "b"] == pytest.approx(0.5) and m.loc["a", "a"] == 1.0 and m.loc["c", "c"] == 0.0
    c = composition(["1", "2", "9"], {"1": "x", "2": "x"})
    assert c["x"] == 2 and c["?"] == 1


def test_registry_claim_finish_and_resume(tmp_path):
    reg = Registry.open(Workspace(tmp_path))
    assert reg.claim("k1", "e", "t", "m", 0.1, 0, {"a": 1})
    assert reg.claim("k1", "e", "t", "m", 0.1, 0, {"a": 1})  # our own claim: we may continue it
    reg.finish("k1", metrics={"accuracy": 0.5}, timings={"train_s": 1.0})
    assert not reg.claim("k1", "e", "t", "m", 0.1, 0, {"a": 1})  # done rows are never redone
    rows = reg.rows("e")
    assert len(rows) == 1 and rows[0]["metrics"] == {"accuracy": 0.5} and rows[0]["status"] == "done"


def _claim_in_child(path, key, q):
    reg = Registry(path)
    q.put(reg.claim(key, "e", "t", "m", 0.1, 0, {}))
    q.put("hold")
    import time as _t
    _t.sleep(3)


def test_two_processes_cannot_both_claim_a_row(tmp_path):
    reg = Registry.open(Workspace(tmp_path))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_claim_in_child, args=(reg.path, "k2", q))
    p.start()
    assert q.get(timeout=60) is True
    assert q.get(timeout=60) == "hold"
    assert not reg.claim("k2", "e", "t", "m", 0.1, 0, {})   # the child holds it and is alive
    p.join()
    assert reg.claim("k2", "e", "t", "m", 0.1, 0, {})       # a dead owner's claim is taken over


def test_metric_choice_and_available_metrics():
    from g2is_core.loop.tables import available_metrics

    rows = [{**_row("t", "random", 0.1, 0, 0.0), "metrics": {"accuracy": 0.0, "nll": 2.0, "ppl": 7.4, "n_eval": 4}},
            {**_row("t", "g2is", 0.1, 0, 0.0), "metrics": {"accuracy": 0.0, "nll": 1.5, "ppl": 4.5, "n_eval": 4}}]
    assert available_metrics(rows) == ["accuracy", "nll", "ppl"]
    tab = summary_table(rows, "nll")
    g = tab[tab.method == "g2is"].iloc[0]
    assert g["metric"] == "nll" and math.isclose(g["vs_random"], -0.5)


def test_default_metric_skips_a_constant_one():
    from g2is_core.loop.tables import default_metric

    rows = [{**_row("t", m, 0.1, 0, 0.0), "metrics": {"accuracy": 0.0, "nll": v}} for m, v in (("a", 1.0), ("b", 2.0))]
    assert default_metric(rows) == "nll"
    rows[1]["metrics"]["accuracy"] = 0.5
    assert default_metric(rows) == "accuracy"
    assert default_metric([]) is None


def test_registry_records_how_a_row_ran_and_opens_an_older_file(tmp_path):
    """Issue 15: an ``info`` column (the precision that ran) beside the config; a registry made before it gains
    the column on open, its rows keep NULL there."""
    import sqlite3

    from g2is_core.loop.registry import SCHEMA

    old = SCHEMA.replace(",\n    info", "\n    --").replace("finished    REAL,", "finished    REAL")
    with sqlite3.connect(tmp_path / "registry.sqlite") as c:
        c.executescript(old)
        assert "info" not in {r[1] for r in c.execute("PRAGMA table_info(runs)")}
        c.execute("INSERT INTO runs (config_hash, experiment, target, method, status, config, created) "
                  "VALUES ('k0', 'e', 't', 'm', 'done', '{}', 0)")
    reg = Registry.open(Workspace(tmp_path))
    assert reg.claim("k1", "e", "t", "m", 0.1, 0, {"a": 1})
    info = {"precision": {"train": {"precision": "fp32", "requested": True, "native_bf16": False, "forced": False}}}
    reg.finish("k1", metrics={"accuracy": 0.5}, timings={}, info=info)
    rows = {r["config_hash"]: r for r in reg.rows("e")}
    assert rows["k1"]["info"] == info and rows["k0"]["info"] is None


def test_a_rerun_keeps_only_the_latest_config_per_cell_across_seeds():
    """Without recorded versions (an older registry): old config at seeds 0 and 1, the edited one at seed 0 only.
    The table must not average seed 1 of the old config with seed 0 of the new one."""
    def r(seed, acc, lr, finished):
        return {**_row("t", "g2is", 0.05, seed, acc), "finished": finished, "config": {"seed": seed, "train": {"lr": lr}}}

    rows = [r(0, 0.10, 1e-4, 100.0), r(1, 0.20, 1e-4, 110.0), r(0, 0.90, 1e-3, 200.0)]
    tab = summary_table(rows)
    assert len(tab) == 1 and tab.iloc[0]["n_seeds"] == 1 and math.isclose(tab.iloc[0]["mean"], 0.90)
    rows.append(r(1, 0.70, 1e-3, 210.0))  # the edited config's second seed: now two seeds of ONE config
    tab = summary_table(rows)
    assert tab.iloc[0]["n_seeds"] == 2 and math.isclose(tab.iloc[0]["mean"], 0.80)


def _spec(tmp_path, name, lr, seeds, methods):
    from g2is_core.loop.spec import load_spec

    p = tmp_path / f"{name}-{lr}-{len(seeds)}.yaml"
    p.write_text(f"name: {name}\nmodel: tiny\npool: {{builtin: {{seed: 0, per_task: 4}}}}\n"
                 f"targets: [{{name: add_reverse}}]\nmethods: {methods}\nratios: [0.1]\nseeds: {seeds}\n"
                 f"train: {{lr: {lr}}}\n")
    return load_spec(p)


def test_run_edit_rerun_under_the_same_name_never_averages_two_configs(tmp_path, monkeypatch, capsys):
    """Issue 18 item 4: run a spec, edit it (another lr, fewer seeds, a method dropped), run it again under the
    same name. The real runner writes the rows (the cell's work is replaced by a score that says which lr ran);
    the table and `g2is bench show` show the edited spec's cells only."""
    from g2is_core import cli
    from g2is_core.loop import runner

    def fake_cell(spec, target, method, ratio, seed, pool, ws, key, progress):
        acc = 0.0 if method == "base" else spec.train.lr * 1000  # 0.1 with lr 1e-4, 0.9 with lr 9e-4
        return {"accuracy": acc, "n_eval": 8, "n_train": 3, "n_truncated": 2.0}, {}, None, None, {}

    monkeypatch.setattr(runner, "_run_cell", fake_cell)
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    ws = Workspace(tmp_path / "ws")
    log = []
    runner.run_experiment(_spec(tmp_path, "e1", 1e-4, [0, 1], ["bm25"]), ws, log=log.append)
    reg = Registry.open(ws)
    assert len(reg.rows("e1")) == 1 + 2 + 2 + 2   # base, full x2, random x2, bm25 x2
    first = summary_table(reg.current_rows("e1"))
    assert set(first.method) == {"base", "full", "random", "bm25"} and (first[first.method != "base"].n_seeds == 2).all()

    rows = runner.run_experiment(_spec(tmp_path, "e1", 9e-4, [0], []), ws, log=log.append)  # edited: lr, seeds, methods
    tab = summary_table(rows)
    assert set(tab.method) == {"base", "full", "random"}               # bm25 is no longer in the spec: not compared
    trained = tab[tab.method != "base"]
    assert (trained.n_seeds == 1).all() and trained["mean"].map(lambda v: math.isclose(v, 0.9)).all()
    assert (trained["std"] == 0).all()
    assert len(reg.rows("e1")) == 7 + 2                                 # the old rows stay in the file ...
    v = reg.version_summary("e1")
    assert v["version"] == 2 and v["n_versions"] == 2 and v["hidden"] == 6  # ... counted, not shown
    assert list(tab.n_cut) == [2, 2, 2]                                 # the eval's cut prompts reach the table

    capsys.readouterr()
    assert cli.main(["bench", "show", "e1"]) == 0
    out = capsys.readouterr()
    assert "spec version 2 of 2" in out.err and "6 finished row(s) of earlier versions" in out.err
    assert "bm25" not in out.out and "prompt(s) were cut" in out.err

    # running the first spec again makes it current again (its rows were kept: nothing reruns)
    rows = runner.run_experiment(_spec(tmp_path, "e1", 1e-4, [0, 1], ["bm25"]), ws, log=log.append)
    again = summary_table(rows)
    assert set(again.method) == {"base", "full", "random", "bm25"} and (again[again.method != "base"].n_seeds == 2).all()
    assert sum("done already" in m for m in log) == 7 + 1              # nothing recomputed; base is the same cell


def test_the_scored_length_follows_the_model_context_unless_set():
    """Issue 18 item 8: a fixed 2048 cut BBH 3-shot prompts on a model that takes 8192 positions."""
    from types import SimpleNamespace

    from g2is_core.loop.evaluation import EvalSettings, scored_length

    lm = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192)))
    assert EvalSettings().max_length is None
    assert scored_length(lm) == 8192 and scored_length(lm, None) == 8192
    assert scored_length(lm, 2048) == 2048 and scored_length(lm, 10 ** 6) == 8192  # capped at the context
    bare = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace()))
    assert scored_length(bare) == 2048 and scored_length(bare, 100) == 100


def test_the_truncation_note_names_the_cut_cells():
    from g2is_core.loop.tables import truncation_note

    rows = [{**_row("t", "base", None, 0, 0.1), "metrics": {"accuracy": 0.1, "n_truncated": 0.0}},
            {**_row("t", "g2is", 0.05, 0, 0.4), "metrics": {"accuracy": 0.4, "n_truncated": 3.0,
                                                            "n_truncated_loglik": 2.0}}]
    tab = summary_table(rows)
    assert dict(zip(tab.method, tab.n_cut)) == {"base": 0, "g2is": 5}
    note = truncation_note(tab)
    assert note is not None and "t/g2is@0.05 (5)" in note and "base" not in note
    assert truncation_note(summary_table(rows[:1])) is None
