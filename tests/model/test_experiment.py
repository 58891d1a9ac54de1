"""The closed loop on the tiny model: a spec -> selection (incl. gradient methods) -> training -> eval."""
import json
from pathlib import Path

import pytest
import yaml

from g2is_core.loop.runner import run_experiment
from g2is_core.loop.spec import load_spec
from g2is_core.data.records import DataError
from g2is_core.loop.registry import Registry

SPEC = {
    "name": "tiny-e2e",
    "model": "tiny",
    "pool": {"builtin": {"seed": 0, "per_task": 12, "distractors": 24}},
    "targets": [{"name": "add_reverse", "eval_limit": 6, "n_select": 4}],
    "methods": ["g2is", "less", "bm25"],
    "ratios": [0.1],
    "seeds": [0],
    "train": {"lr": 1e-3, "epochs": 1, "batch_size": 4, "max_length": 64, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}},
    "selection": {"features": {"dim": 64, "max_length": 64,
                               "warmup": {"fraction": 0.1, "epochs": 2, "batch_size": 4, "grad_accum": 1,
                                          "max_length": 64}}},
    "eval": {"max_new_tokens": 4},
}


def _write(tmp_path, spec):
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.slow
def test_tiny_spec_end_to_end_and_resume(tmp_path, workspace):
    spec = load_spec(_write(tmp_path, SPEC))
    rows = run_experiment(spec, workspace, log=lambda m: None)
    methods = {r["method"] for r in rows}
    assert methods == {"base", "full", "random", "g2is", "less", "bm25"}  # baselines are always part of the table
    assert all(r["status"] == "done" for r in rows)
    pool_n = 9 * 12 + 24
    for r in rows:
        assert r["metrics"]["n_eval"] == 6 and 0.0 <= r["metrics"]["accuracy"] <= 1.0
        expected = {"base": 0, "full": pool_n}.get(r["method"])
        if expected is not None:
            assert r["metrics"]["n_train"] == expected
        elif r["method"] != "g2is":   # the walk may under-fill; the others take exactly B
            assert r["metrics"]["n_train"] == int(0.1 * pool_n)
    # Every cell keeps its per-question scores (the paired bootstrap resamples them) and its diagnostics.
    from g2is_core.loop.scores import load_scores
    from g2is_core.loop.stats import paired_differences

    qs = load_scores(Registry.open(workspace), "tiny-e2e")
    assert set(qs) == {r["config_hash"] for r in rows}
    assert all(len(q["ids"]) == 6 and len(q["values"]["accuracy"]) == 6 for q in qs.values())
    for r in rows:
        if r["method"] in ("g2is", "less", "bm25", "random"):
            d = r["info"]["diagnostics"]
            assert sum(d["composition"]["source"].values()) == r["metrics"]["n_train"]
            assert ("walk" in d and "hubs" in d) == (r["method"] == "g2is")
    tab = paired_differences(rows, qs, metric="accuracy", references=("random",))
    assert set(tab.method) == {"g2is", "less", "bm25"} and (tab.basis == "questions x seeds").all()
    # Resume: running again redoes nothing (every row is done) and returns the same rows.
    log = []
    again = run_experiment(spec, workspace, log=log.append)
    assert len(log) == len(rows) and all("skipped" in m for m in log)
    assert [r["finished"] for r in again] == [r["finished"] for r in rows]
    assert len(Registry.open(workspace).rows("tiny-e2e")) == len(rows)


def test_spec_errors_name_the_field(tmp_path):
    with pytest.raises(DataError, match="methods"):
        load_spec(_write(tmp_path, {**SPEC, "methods": ["nope"]}))
    with pytest.raises(DataError, match="ratio"):
        load_spec(_write(tmp_path, {**SPEC, "ratios": [0]}))
    with pytest.raises(DataError, match="targets"):
        load_spec(_write(tmp_path, {**SPEC, "targets": []}))
    with pytest.raises(DataError, match="unknown field"):
        load_spec(_write(tmp_path, {**SPEC, "oops": 1}))


def test_target_overrides_full_seeds_and_bf16_eval(tmp_path, workspace):
    spec = load_spec(_write(tmp_path, {
        **SPEC, "name": "tiny-overrides", "methods": [], "seeds": [0, 1], "full_seeds": [0],
        "targets": [{"name": "add_reverse", "eval_limit": 4, "n_select": 4},
                    {"name": "lookup_add", "eval_limit": 4, "n_select": 4, "protocol": "loglik", "shots": 0}],
        "eval": {"max_new_tokens": 4, "dtype": "bf16"}}))
    rows = run_experiment(spec, workspace, log=lambda m: None)
    per = {}
    for r in rows:
        per.setdefault((r["target"], r["method"]), []).append(r)
    for t in ("add_reverse", "lookup_add"):
        assert len(per[(t, "full")]) == 1 and len(per[(t, "random")]) == 2 and len(per[(t, "base")]) == 1
    # the override: the generative built-in eval scored by the gold answer's log-likelihood instead
    assert all("nll" in r["metrics"] and "accuracy" not in r["metrics"] for r in rows if r["target"] == "lookup_add")
    assert all("accuracy" in r["metrics"] for r in rows if r["target"] == "add_reverse")
    # the registry records the precision that ran beside the key (eval.dtype bf16: fp32 where bf16 is not native)
    from g2is_core import runtime

    want = "bf16" if runtime.bf16_is_fast("cpu") else "fp32"
    assert all(r["info"]["precision"]["eval"]["precision"] == want and r["info"]["precision"]["eval"]["requested"]
               is True for r in rows)
    assert all(r["info"]["precision"]["train"]["precision"] == "fp32" for r in rows if r["method"] != "base")
    # a target without overrides keeps the config (and so the registry key) it had before they existed
    assert set(spec.targets[0].config()) == {"name", "select", "eval", "eval_limit", "n_select"}
    with pytest.raises(DataError, match="unknown field.*protcol"):
        load_spec(_write(tmp_path, {**SPEC, "targets": [{"name": "add_reverse", "protcol": "loglik"}]}))


@pytest.mark.slow
def test_cli_features_up_front_then_method_subsets(tmp_path, monkeypatch, capsys):
    from g2is_core import cli

    ws = tmp_path / "ws"
    monkeypatch.setenv("G2IS_WORKSPACE", str(ws))
    monkeypatch.setenv("G2IS_THREADS", "1")
    spec = _write(tmp_path, {**SPEC, "name": "tiny-cli", "methods": ["less", "bm25"]})
    assert cli.main(["bench", "features", str(spec)]) == 0
    assert "features ready for 1 target" in capsys.readouterr().out
    stores = sorted(p.parent for p in ws.glob("grads/*/sidecar.json"))
    assert len(stores) == 4  # 2 warmup checkpoints x (pool, target)
    assert cli.main(["bench", "run", str(spec), "--methods", "base,random"]) == 0
    assert {r["method"] for r in Registry.open().rows("tiny-cli")} == {"base", "random"}
    assert cli.main(["bench", "run", str(spec), "--methods", "random,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["bench", "run", str(spec), "--targets", "add_reverse,nope"]) == 2
    assert "--targets: ['nope'] not in the spec; its targets: ['add_reverse']" in capsys.readouterr().err
    assert cli.main(["bench", "run", str(spec), "--seeds", "0,x"]) == 2
    assert "--seeds: '0,x' is not a comma-separated list of int values" in capsys.readouterr().err
    assert cli.main(["bench", "run", str(spec), "--ratios", "0.5"]) == 2
    assert "--ratios: [0.5] not in the spec; its ratios: [0.1]" in capsys.readouterr().err
    assert cli.main(["bench", "run", str(spec)]) == 0
    rows = Registry.open().rows("tiny-cli")
    assert {r["method"] for r in rows} == {"base", "random", "full", "less", "bm25"} and len(rows) == 5
    assert sorted(p.parent for p in ws.glob("grads/*/sidecar.json")) == stores  # the run reused them


def test_chosen_cells_keep_the_named_methods_and_targets_in_run_order(tmp_path):
    from g2is_core.loop.runner import all_cells, chosen_cells

    spec = load_spec(_write(tmp_path, {**SPEC, "targets": [{"name": "add_reverse"}, {"name": "sort_desc"}],
                                       "seeds": [0, 1]}))
    every = all_cells(spec)
    assert chosen_cells(spec) == every
    got = chosen_cells(spec, {"random", "bm25"}, {"sort_desc"})
    assert got == [c for c in every if c[1] in ("random", "bm25") and c[0].name == "sort_desc"]
    assert [(c[1], c[3]) for c in got] == [("random", 0), ("random", 1), ("bm25", 0), ("bm25", 1)]
    assert chosen_cells(spec, targets={"add_reverse"}) == every[: len(every) // 2]
    seed1 = chosen_cells(spec, seeds={1}, ratios={0.1})
    assert seed1 == [c for c in every if c[3] == 1] and all(c[1] != "base" for c in seed1)  # base runs seed 0 only
    assert chosen_cells(spec, {"base", "random"}, ratios={0.5}) == [c for c in every if c[1] == "base"]


def test_method_variants_run_under_their_own_name(tmp_path, workspace):
    spec = load_spec(_write(tmp_path, {
        **SPEC, "name": "tiny-variants",
        "methods": ["g2is", {"name": "g2is-centred", "method": "g2is", "options": {"pool_centre": True, "k": 4}}]}))
    assert spec.methods == ["g2is", "g2is-centred"] and spec.base_method("g2is-centred") == "g2is"
    rows = run_experiment(spec, workspace, log=lambda m: None, methods={"g2is", "g2is-centred"})
    by = {r["method"]: r for r in rows}
    assert set(by) == {"g2is", "g2is-centred"} and all(r["status"] == "done" for r in rows)
    assert by["g2is-centred"]["config"]["variant"] == {"method": "g2is", "options": {"pool_centre": True, "k": 4}}
    assert "variant" not in by["g2is"]["config"]  # plain methods keep the config (and key) they had
    side = json.loads((Path(by["g2is-centred"]["selection"]) / "sidecar.json").read_text())
    assert side["config"]["options"]["pool_centre"] is True and side["config"]["options"]["k"] == 4
    assert side["name"].endswith("/g2is-centred/0.1/0")
    for bad, match in ([{"name": "g2is", "method": "g2is"}, "name of its own"],
                       [{"name": "v", "method": "nope"}, "unknown method"],
                       [{"name": "v", "method": "g2is", "options": {"nope": 1}}, "nope"],
                       ["bm25", "twice"]):
        with pytest.raises(DataError, match=match):
            load_spec(_write(tmp_path, {**SPEC, "methods": ["bm25", bad]}))


def test_a_cell_whose_weights_were_measured_reads_that_result(tmp_path, workspace):
    """bm25 under two names selects the same records at the same seed: one training dir, so the second cell reads
    the first one's eval (and head pattern) instead of scoring the same weights again; its row says so."""
    from g2is_core.loop.scores import load_scores

    spec = load_spec(_write(tmp_path, {
        **SPEC, "name": "tiny-reuse", "eval": {"max_new_tokens": 4, "head_pattern": 2},
        "methods": ["bm25", {"name": "bm25-again", "method": "bm25", "options": {}}]}))
    rows = run_experiment(spec, workspace, log=lambda m: None, methods={"bm25", "bm25-again"})
    by = {r["method"]: r for r in rows}
    first, second = by["bm25"], by["bm25-again"]
    assert first["train_dir"] == second["train_dir"] and first["config_hash"] != second["config_hash"]
    assert "eval_reused" not in first["timings"] and second["timings"]["eval_reused"] == 1.0
    assert second["timings"]["eval_s"] < first["timings"]["eval_s"]
    assert first["metrics"] == second["metrics"] and first["info"]["eval_dir"] == second["info"]["eval_dir"]
    assert first["info"]["head_pattern"] == second["info"]["head_pattern"]
    qs = load_scores(Registry.open(workspace), "tiny-reuse")
    assert qs[first["config_hash"]] == qs[second["config_hash"]]
    kept = json.loads((Path(first["info"]["eval_dir"]) / "result.json").read_text())
    assert kept["made_by"]["cell"] == first["config_hash"] and kept["metrics"] == {
        k: v for k, v in first["metrics"].items() if k != "n_train"}


# ============================================================================ typed settings
def _cell_keys(spec):
    from g2is_core.loop.runner import cell_config
    from g2is_core.loop.spec import BASE
    from g2is_core.workspace import hash_config

    return [hash_config(cell_config(spec, t, m, r, s, "POOLHASH")) for t in spec.targets for m in spec.all_methods()
            for r in ([None] if m in (BASE, "full") else spec.ratios) for s in spec.seeds]


@pytest.mark.parametrize("path, spec_hash, first_key, digest", [
    # the demo spec redesigned (issue 14: first_last, a 56-record pool): new keys, those of the shipped pack's rows
    ("g2is_core/specs/demo.yaml", "b909d171eae152d1", "d858ffb776af5ebd", "db45bbf4007d9ab7"),
    # bf16 true -> auto (issue 15): a changed setting, so new keys; the spec as it was keeps its old ones (below)
    ("bench/specs/real_data.yaml", "38976ff60b704402", "a07b77a7ac34b605", "2bc6c85f29f0204d"),
    ("bench/specs/real_data.yaml@bf16-true", "d010d27543066324", "034fa2e0a068ccbf", "604abdcd96072658"),
])
def test_shipped_specs_keep_their_registry_keys(path, spec_hash, first_key, digest, tmp_path):
    """The keys the registry rows on record were written under (before the settings were typed): a cell hashes
    its settings as the file wrote them, so neither typing nor a moved default may change them.
    ``@bf16-true``: real_data.yaml with its four bf16 switches as they were before issue 15 set them to auto."""
    import hashlib

    from g2is_core.workspace import hash_config

    path, _, variant = path.partition("@")
    file = Path(__file__).resolve().parents[2] / path
    if variant == "bf16-true":
        text = file.read_text().replace("bf16: auto", "bf16: true").replace("dtype: auto", "dtype: bf16")
        file = tmp_path / "real_data.yaml"
        file.write_text(text)
    spec = load_spec(file)
    keys = _cell_keys(spec)
    assert hash_config(spec.to_dict()) == spec_hash and keys[0] == first_key
    assert hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16] == digest


def test_spec_type_errors_name_the_file_and_the_field(tmp_path):
    lora = {"r": 2, "alpha": 4, "dropout": 0.0}
    cases = [({"train": {"lr": "1e-3", "lora": lora}}, "train.lr", "must be a number"),
             ({"train": {"lora": {**lora, "rank": 4}}}, "train.lora", r"unknown field.*rank"),
             ({"train": {"epochs": True}}, "train.epochs", "whole number"),
             ({"train": {"bf16": "sometimes"}}, "train.bf16", "true, false or auto"),
             ({"selection": {"features": {"warmup": {"epochs": "two"}}}}, "selection.features.warmup.epochs",
              "whole number"),
             ({"selection": {"nope": {}}}, "selection", "unknown field 'nope'"),
             ({"selection": {"bm25": {"k": 3}}}, "selection.bm25", "no option"),
             ({"eval": {"dtype": "maybe"}}, "eval.dtype", "true, false or auto"),
             ({"eval": {"limit": 3}}, "eval", r"unknown field.*limit"),
             ({"seeds": [0, "1"]}, r"seeds\[1\]", "whole number"),
             ({"targets": [{"name": "add_reverse", "n_select": "4"}]}, r"targets\[0\]\.n_select", "whole number"),
             ({"targets": [{"name": "add_reverse", "eval": "gsm8kk"}]}, r"targets\[0\]\.eval", "unknown eval"),
             ({"targets": [{"name": "add_reverse", "protocol": "mc"}]}, r"targets\[0\]\.protocol",
              "supports the protocols"),
             ({"targets": [{"select": "builtin:add_reverse"}]}, r"targets\[0\]", "missing 'name'")]
    for change, field_name, why in cases:
        with pytest.raises(DataError, match=rf"spec\.yaml, field '{field_name}': .*{why}"):
            load_spec(_write(tmp_path, {**SPEC, **change}))


def test_settings_carry_help_and_read_their_defaults_once():
    from dataclasses import fields

    from g2is_core.features.warmup import WarmupConfig
    from g2is_core.loop import spec as S
    from g2is_core.models.training import TrainConfig

    for cls in (S.ExperimentSpec, S.TargetSpec, S.MethodVariant, S.TrainSettings, S.SelectionSettings,
                S.FeatureSettings, S.WarmupSettings, S.EvalOptions):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    # the mirrors cover the configs they feed (a new TrainConfig/WarmupConfig field must be settable)
    assert {f.name for f in fields(TrainConfig)} - {"seed"} <= {f.name for f in fields(S.TrainSettings)}
    assert {f.name for f in fields(WarmupConfig)} == {f.name for f in fields(S.WarmupSettings)}
    assert S.WarmupSettings().config() == WarmupConfig()
    t = S.TrainSettings().train_config(seed=3)
    assert (t.lr, t.epochs, t.batch_size, t.save_every, t.seed) == (2e-4, 2, 8, 20, 3)
    assert (S.TRAIN_LORA.r, S.TRAIN_LORA.alpha, S.TRAIN_LORA.dropout) == (8, 32, 0.0)


def test_spec_written_form_is_the_identity(tmp_path):
    """Absent parts are written as {}; given ones as given (a whole number stays one); code-built parts hash
    every field."""
    from dataclasses import replace

    from g2is_core.loop.runner import cell_config

    spec = load_spec(_write(tmp_path, {"name": "bare", "targets": [{"name": "sort"}], "ratios": [1],
                                       "train": {"lr": 1, "epochs": 1}}))
    cfg = cell_config(spec, spec.targets[0], "bm25", 1.0, 0, "h")
    assert cfg["train"] == {"lr": 1, "epochs": 1} and cfg["selection"] == {} and cfg["eval"] == {}
    assert spec.ratios == [1.0] and spec.train.lr == 1 and spec.train.batch_size == 8
    assert spec.targets[0].config() == {"name": "sort", "select": "builtin:sort", "eval": "builtin:sort",
                                        "eval_limit": None, "n_select": 32}
    changed = replace(spec.train, lr=0.5)
    assert changed.as_written()["lr"] == 0.5 and "save_every" in changed.as_written()


def test_gradient_methods_come_from_the_selection_registry(tmp_path, monkeypatch):
    """A method whose registry entry needs features gets the gradient stores; no second list to add it to."""
    from g2is_core.loop.runner import needs_features
    from g2is_core.selection import METHODS, Method

    assert needs_features("g2is") and needs_features("less")
    assert not needs_features("bm25") and not needs_features("full") and not needs_features("base")
    monkeypatch.setitem(METHODS, "toy-grad", Method("toy-grad", "a test method", METHODS["random"].options,
                                                    METHODS["random"].run, needs=("features",)))
    assert needs_features("toy-grad")
    spec = load_spec(_write(tmp_path, {**SPEC, "methods": ["toy-grad"]}))
    assert spec.methods == ["toy-grad"]


def test_remeasure_replaces_an_old_measurement_from_the_trained_weights(tmp_path, workspace):
    """A row measured before its protocol learnt a metric (here: nll_answer removed, an older eval key) is measured
    again from its trained weights, without training: the same numbers as the run itself, its timings kept with
    remeasure_s added; a second remeasure finds nothing to do; a cell not run yet is left to `bench run`."""
    from g2is_core.loop.runner import remeasure_experiment
    from g2is_core.loop.scores import load_scores
    import shutil

    spec = load_spec(_write(tmp_path, {
        **SPEC, "name": "tiny-remeasure", "methods": ["bm25"],
        "targets": [{"name": "add_reverse", "eval_limit": 6, "n_select": 4, "protocol": "loglik"}]}))
    rows = run_experiment(spec, workspace, log=lambda m: None, methods={"base", "bm25"})
    reg = Registry.open(workspace)
    before = {r["method"]: r for r in rows if r["status"] == "done"}
    scores = load_scores(reg, "tiny-remeasure")
    assert set(before) == {"base", "bm25"} and "nll_answer" in before["bm25"]["metrics"]
    assert before["bm25"]["metrics"]["nll_answer"] != before["base"]["metrics"]["nll_answer"]  # trained: it moved
    for r in before.values():  # as an older version left it: no nll_answer, another eval dir, no result kept
        shutil.rmtree(r["info"]["eval_dir"])
        old = {k: v for k, v in r["metrics"].items() if not k.startswith(("nll_answer", "n_answer"))}
        reg.update_measurement(r["config_hash"], metrics=old, timings=r["timings"],
                               info={**r["info"], "eval_dir": str(tmp_path / "old")})
    log: list[str] = []
    assert remeasure_experiment(spec, workspace, log=log.append, methods={"base", "bm25", "random"}) == 2
    assert sum("left to `g2is bench run`" in m for m in log) == 1   # random: never run
    after = {r["method"]: r for r in Registry.open(workspace).rows("tiny-remeasure") if r["status"] == "done"}
    again = load_scores(Registry.open(workspace), "tiny-remeasure")
    for m, r in before.items():
        a = after[m]
        assert a["metrics"].keys() == r["metrics"].keys()
        assert all(a["metrics"][k] == pytest.approx(v, abs=1e-6) for k, v in r["metrics"].items())
        assert a["timings"] == {**r["timings"], "remeasure_s": a["timings"]["remeasure_s"]}
        assert a["info"]["eval_dir"] == r["info"]["eval_dir"] and a["train_dir"] == r["train_dir"]
        assert a["finished"] == r["finished"]
        assert again[r["config_hash"]]["values"]["nll_answer"] == pytest.approx(
            scores[r["config_hash"]]["values"]["nll_answer"], abs=1e-6)
    assert remeasure_experiment(spec, workspace, log=lambda m: None, methods={"base", "bm25"}) == 0
