"""The closed loop of the bridge end to end on the tiny model (issue 16 item 5): a spec with eval.head_pattern
on -> every row carries the target's head pattern of its model and every selection its head similarity."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from g2is_core.loop import bridge
from g2is_core.loop.runner import run_experiment
from g2is_core.loop.spec import load_spec

N_PATTERN = 3
SPEC = {
    "name": "tiny-loop",
    "model": "tiny",
    "pool": {"builtin": {"seed": 0, "per_task": 4, "distractors": 8}},
    "targets": [{"name": "add_reverse", "eval_limit": 4, "n_select": 4}],
    "methods": ["less", "bm25"],
    "ratios": [0.25],
    "seeds": [0],
    "train": {"lr": 1e-2, "epochs": 1, "batch_size": 4, "max_length": 48, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}},
    "selection": {"features": {"dim": 32, "max_length": 48,
                               "warmup": {"fraction": 0.2, "epochs": 1, "batch_size": 4, "grad_accum": 1,
                                          "max_length": 48}}},
    "eval": {"max_new_tokens": 2, "head_pattern": N_PATTERN},
}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    from g2is_core.workspace import Workspace

    d = tmp_path_factory.mktemp("loop")
    p = d / "spec.yaml"
    p.write_text(yaml.safe_dump(SPEC))
    spec = load_spec(p)
    ws = Workspace(d / "ws")
    return spec, ws, run_experiment(spec, ws, log=lambda m: None)


def _trained_model(spec, ws, row):
    """The cell's model rebuilt as the runner trains it: its training directory holds the finished run, so
    train() resumes at the last step and ends with the very weights the cell was evaluated with."""
    from g2is_core.app.readers import selected_ids
    from g2is_core.data.encoding import encode_all
    from g2is_core.loop.experiment import load_pool
    from g2is_core.models.loading import load_model
    from g2is_core.models.lora import attach_lora
    from g2is_core.models.training import train

    lm = load_model(spec.model, workspace=ws)
    by_id = {r.id: r for r in load_pool(spec.pool)}
    chosen = [by_id[i] for i in selected_ids(row["selection"])] if row["selection"] else list(by_id.values())
    model = attach_lora(lm.model, replace(spec.train.lora, seed=row["seed"]))
    enc, _ = encode_all(lm.tokenizer, chosen, max_length=spec.train.max_length)
    res = train(model, enc, spec.train.train_config(row["seed"]), pad_id=lm.tokenizer.pad_token_id,
                out_dir=row["train_dir"])
    assert res.losses
    lm.model = model
    return lm


def _measured(lm, spec):
    from g2is_core.data.encoding import encode_all
    from g2is_core.heads.patterns import activation_pattern
    from g2is_core.loop.experiment import load_target

    t = spec.targets[0]
    recs = load_target(t.select, t.n_select, seed=0)[:N_PATTERN]
    enc, _ = encode_all(lm.tokenizer, recs, max_length=spec.train.max_length)
    return activation_pattern(lm.model, enc, pad_id=lm.tokenizer.pad_token_id)


def test_rows_carry_the_pattern_of_their_own_model(loop_run):
    from g2is_core.models.loading import load_model

    spec, ws, rows = loop_run
    by = {r["method"]: r for r in rows}
    assert set(by) == {"base", "random", "full", "less", "bm25"} and all(r["status"] == "done" for r in rows)
    recs = [r["info"][bridge.PATTERN] for r in rows]
    assert all(r["timings"]["head_pattern_s"] > 0 for r in rows)
    assert len({tuple(p["ids"]) for p in recs}) == 1 and recs[0]["n"] == N_PATTERN   # one example set per target
    # the base row's pattern is that of the untrained model; the trained rows' that of their trained model
    base = _measured(load_model("tiny", workspace=ws), spec)
    assert list(base.ids) == recs[0]["ids"]
    np.testing.assert_array_equal(bridge.row_pattern(by["base"]), base.values)
    assert bridge.row_pattern(by["base"]).shape == (2, 4)                             # tiny Llama: 2 layers x 4 heads
    for m in ("less", "full"):
        np.testing.assert_allclose(bridge.row_pattern(by[m]), _measured(_trained_model(spec, ws, by[m]), spec).values,
                                   rtol=1e-6, atol=1e-9)
    # training moved the target's pattern; the base's change is zero by construction
    hl = bridge.closed_loop(rows, "add_reverse", n_perm=99)
    assert "base" not in hl.changes and np.abs(hl.changes["full"]).max() > 0
    np.testing.assert_array_equal(bridge.row_pattern(by["base"]) - base.values, 0)
    assert set(hl.points["method"]) == {"random", "less", "bm25"} and hl.notes == []
    assert np.isfinite(hl.points[[bridge.X_CHANGE, bridge.X_HEADS, bridge.X_GRAD]].to_numpy()).all()


def test_selections_carry_their_head_similarity(loop_run):
    from g2is_core.app.readers import selected_ids
    from g2is_core.loop.experiment import load_pool, load_target
    from g2is_core.loop.runner import gradient_stores
    from g2is_core.selection import FeatureSet

    spec, ws, rows = loop_run
    pool = load_pool(spec.pool)
    t = spec.targets[0]
    stores = gradient_stores(spec, pool, load_target(t.select, t.n_select, seed=0), ws)   # cached: read back
    assert all(s.has_head_signatures for s in stores["train_stores"] + stores["target_stores"])
    train = FeatureSet.from_stores(stores["train_stores"])
    target = FeatureSet.from_stores(stores["target_stores"], "target")
    for r in rows:
        got, grad = r["info"].get(bridge.SIMILARITY), r["info"].get(bridge.GRADIENT)
        if r["method"] == "base":
            assert got is None and grad is None
            continue
        ids = selected_ids(r["selection"]) if r["selection"] else [p.id for p in pool]
        want = bridge.selection_head_similarity(train, target, ids)
        assert got["n_selected"] == len(ids) == r["metrics"]["n_train"]
        assert got["cosine"] == pytest.approx(want["cosine"], abs=1e-12) and -1 <= got["cosine"] <= 1
        assert grad["cosine"] == pytest.approx(bridge.selection_gradient_similarity(train, target, ids)["cosine"],
                                               abs=1e-12)
