"""Head signatures (issue 16; docs/bridge.md): the per-example activation pattern taken in the gradient-feature
pass, stored beside the features, and the ``heads`` / ``heads-hybrid`` selection methods.

Model tests run on the tiny random Llama (2 layers, 4 query heads over 2 KV heads) with a LoRA whose A
and B are both non-zero; method tests on hand-made signatures with known answers.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import g2is_core.selection as S
from g2is_core.data import tasks
from g2is_core.data.loaders import data_hash
from g2is_core.data.records import simple
from g2is_core.features.extract import (FeatureConfig, encode_rows, extract, extract_fast, extract_store, head_dims,
                                        load_checkpoint_into, lora_layout, prepare_model)
from g2is_core.features.projection import Projector, ProjectorConfig
from g2is_core.features.store import GradientStore, write_store
from g2is_core.features.warmup import WarmupConfig, warmup
from g2is_core.heads.patterns import activation_pattern
from g2is_core.models.loading import load_model
from g2is_core.models.lm_ops import o_proj_modules
from g2is_core.models.lora import LoraSettings, lora_parameters, randomise_lora
from g2is_core.selection.methods.heads import head_scores, standardise, top_heads
from g2is_core.selection.methods.less import less_scores
from g2is_core.workspace import Workspace

TINY_LORA = LoraSettings(r=4, alpha=16, dropout=0.1)


@pytest.fixture(scope="module")
def perturbed():
    lm = load_model("tiny")
    model = prepare_model(lm, TINY_LORA)
    g = torch.Generator().manual_seed(1)
    randomise_lora(model, g, 0.05)
    return lm, model, list(tasks.make_pool(0).records[:12])


def _extract(lm, model, recs, cfg, method="fast"):
    proj = Projector(ProjectorConfig(dim=32, seed=0), lora_layout(model).total)
    sig = np.zeros((len(recs), *head_dims(model)), np.float32)
    feats = extract(model, lm.tokenizer, recs, cfg, proj, heads=sig, method=method)
    return feats, sig, proj


def test_signature_of_one_example_is_its_activation_pattern_alone(perturbed):
    lm, model, recs = perturbed
    cfg = FeatureConfig(kind="sgd", max_length=64, max_batch=5, proj_rows=4)   # several buckets and groups
    _, sig, proj = _extract(lm, model, recs, cfg)
    enc = encode_rows(lm.tokenizer, recs, cfg)
    assert sig.shape == (12, 2, 4) and sig.min() > 0
    for i, e in enumerate(enc):
        alone = activation_pattern(model, [e], pad_id=lm.tokenizer.pad_token_id).per_sample[0]
        assert np.allclose(sig[i], alone, rtol=1e-5, atol=1e-8), i
    # an example without a label keeps the zero row (activation_pattern's value for it) and does not move the others
    blank = dataclasses.replace(enc[3], labels=(-100,) * enc[3].length)
    sig2 = np.zeros((4, 2, 4), np.float32)
    extract_fast(model, [enc[0], blank, enc[1], enc[2]], cfg, proj, pad_id=lm.tokenizer.pad_token_id, heads=sig2)
    assert not sig2[1].any() and np.allclose(sig2[[0, 2, 3]], sig[:3], rtol=1e-5, atol=1e-8)
    # the extraction leaves the model as it found it: LoRA trainable, no gate hooks left behind
    assert all(p.requires_grad and p.grad is None for _, p in lora_parameters(model))
    assert not any(m._forward_pre_hooks for m in o_proj_modules(model))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_in_pass_signature_equals_a_separate_pass_and_features_do_not_move(perturbed, kind):
    lm, model, recs = perturbed
    P = lora_layout(model).total
    g = torch.Generator().manual_seed(2)
    moments = (torch.randn(P, generator=g) * 1e-3, torch.rand(P, generator=g) * 1e-5) if kind == "adam" else None
    cfg = FeatureConfig(kind=kind, max_length=64, max_batch=6, proj_rows=7)
    proj = Projector(ProjectorConfig(dim=32, seed=0), P)
    sig = np.zeros((len(recs), *head_dims(model)), np.float32)
    with_heads = extract(model, lm.tokenizer, recs, cfg, proj, moments=moments, heads=sig)
    without = extract(model, lm.tokenizer, recs, cfg, proj, moments=moments)
    assert np.array_equal(with_heads, without)                     # gate = 1 changes no feature bit
    separate = activation_pattern(model, encode_rows(lm.tokenizer, recs, cfg), pad_id=lm.tokenizer.pad_token_id,
                                  batch_size=4)
    assert np.allclose(sig, separate.per_sample, rtol=1e-5, atol=1e-8)
    ref_sig = np.zeros_like(sig)                                   # the reference path, one backward per example
    extract(model, lm.tokenizer, recs, cfg, proj, moments=moments, heads=ref_sig, method="reference")
    assert np.allclose(ref_sig, sig, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="head-signature buffer"):
        extract(model, lm.tokenizer, recs, cfg, proj, moments=moments, heads=np.zeros((2, 2, 4), np.float32))


def test_signature_flag_keys_only_the_stores_that_carry_it():
    assert "head_signatures" not in FeatureConfig().identity()     # stores made before the switch keep their keys
    assert FeatureConfig(head_signatures=True).identity()["head_signatures"] is True


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    lm = load_model("tiny")
    recs = list(tasks.make_pool(0).records[:16])
    cfg = WarmupConfig(fraction=0.5, epochs=1, lr=1e-3, batch_size=4, grad_accum=1, max_length=96, lora=TINY_LORA)
    return ws, warmup(lm, recs, cfg, data_hash=data_hash(recs), workspace=ws)


class _Stop(Exception):
    pass


def test_store_with_signatures_resumes_to_the_same_values(warm, tmp_path, monkeypatch):
    """Interrupted after its first shard (plus a torn heads shard of the next one), the store resumes through
    `g2is grads --head-signatures` to the uninterrupted values, features and signatures bit for bit; each row
    is the activation pattern of its record alone on the checkpoint's model."""
    from g2is_core import cli
    from g2is_core.data.spec import DataSpec

    ws, w = warm
    d = DataSpec.parse("builtin:pool?limit=10").load()
    cfg = FeatureConfig(kind="adam", max_length=96, head_signatures=True)
    kw = dict(data_hash=d.data_hash, data_source=d.description, dtype="fp32", shard_rows=4)
    out = tmp_path / "cut"

    def stop_after_first_shard(_f, _m):
        if list((out / "shards").glob("shard-*.npy")):
            raise _Stop
    with pytest.raises(_Stop):
        extract_store(load_model("tiny"), d.records, w, 1, cfg, ProjectorConfig(dim=32), out_dir=out,
                      progress=stop_after_first_shard, **kw)
    shards = sorted(p.name for p in (out / "shards").iterdir() if not p.name.startswith(".claim"))  # claims: locks
    assert shards == ["heads-000000.npy", "shard-000000.json", "shard-000000.npy"]  # .json: the shard's checksum
    np.save(out / "shards" / "heads-000001.npy", np.full((4, 2, 4), 7.0, np.float32))  # torn: no feature shard

    monkeypatch.setenv("G2IS_WORKSPACE", str(ws.root))
    argv = ["grads", "--model", "tiny", "--data", "builtin:pool", "--limit", "10", "--warmup", str(w.dir),
            "--checkpoint", "1", "--dim", "32", "--dtype", "fp32", "--max-length", "96", "--shard-rows", "4",
            "--head-signatures", "--out", str(out)]
    assert cli.main(argv) == 0
    resumed = GradientStore.open(out)
    full = extract_store(load_model("tiny"), d.records, w, 1, cfg, ProjectorConfig(dim=32), out_dir=tmp_path / "full",
                         **kw)
    sig = resumed.head_signatures()
    assert sig.shape == (10, 2, 4) and resumed.meta["head_signatures"]["shape"] == [10, 2, 4]
    assert resumed.meta["head_signatures"]["route"] == "gate" and resumed.meta["head_signatures"]["n_kv_heads"] == 2
    assert resumed.config["features"]["head_signatures"] is True
    assert np.array_equal(sig, full.head_signatures()) and not (sig == 7.0).any()
    assert np.array_equal(np.asarray(resumed.features), np.asarray(full.features))
    # each row: the record's own activation pattern on the model the features come from (checkpoint 1 loaded)
    lm = load_model("tiny")
    model = prepare_model(lm, w.config.lora)
    load_checkpoint_into(model, w.checkpoint(1), lora_layout(model))
    enc = encode_rows(lm.tokenizer, d.records, cfg)
    for i in (0, 5, 9):
        alone = activation_pattern(model, [enc[i]], pad_id=lm.tokenizer.pad_token_id).per_sample[0]
        assert np.allclose(sig[i], alone, rtol=1e-5, atol=1e-8)
    # a store without signatures says how to get them
    plain = write_store(tmp_path / "plain", {"kind": "adam"}, ["a"], 2, lambda r: np.ones((len(r), 2), np.float32),
                        inputs={"data_hash": "h"})
    assert not plain.has_head_signatures
    with pytest.raises(ValueError, match="--head-signatures"):
        plain.head_signatures()


def test_ray_backend_refuses_signatures_with_a_sentence(warm):
    from g2is_core.features.backends import extract_checkpoints

    _, w = warm
    with pytest.raises(ValueError, match="local backend only"):
        extract_checkpoints("tiny", [], w, [1], FeatureConfig(head_signatures=True), data_hash="h", backend="ray")


# ----------------------------------------------------------------------------- the heads methods
def _recs(n, prefix="p"):
    return [simple(f"{prefix}{i}", f"q {i}", f"a {i}", source="s", task="t") for i in range(n)]


def _sets(pool_sig, target_sig, x=None, y=None, weights=None):
    pool_sig = pool_sig if isinstance(pool_sig, list) else [pool_sig]
    target_sig = target_sig if isinstance(target_sig, list) else [target_sig]
    n, m = len(pool_sig[0]), len(target_sig[0])
    rng = np.random.default_rng(0)
    x = x if x is not None else [rng.normal(size=(n, 6)).astype(np.float32) for _ in pool_sig]
    y = y if y is not None else [rng.normal(size=(m, 6)).astype(np.float32) for _ in target_sig]
    train = S.FeatureSet.from_arrays(x, ids=[f"p{i}" for i in range(n)], weights=weights, signatures=pool_sig)
    target = S.FeatureSet.from_arrays(y, ids=[f"t{i}" for i in range(m)], weights=weights, signatures=target_sig)
    return train, target


P = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 1.0, 1.0]], np.float32)           # target pattern [L=2, H=4]


def test_heads_scores_match_hand_computation():
    other = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 4.0]], np.float32)
    offset = P + np.array([[10.0], [-0.5]], np.float32)                            # P plus a per-layer constant
    pool = np.stack([P, 10 * other, offset, np.zeros_like(P)])
    tgt = np.stack([P - 0.5, P + 0.5])                                             # mean = P
    train, target = _sets(pool, tgt)
    flat = pool.reshape(4, -1).astype(np.float64)
    p = P.reshape(-1).astype(np.float64)
    cos = flat @ p / np.maximum(np.linalg.norm(flat, axis=1) * np.linalg.norm(p), 1e-300)
    assert np.allclose(head_scores(train, target, "unit"), cos)
    assert np.allclose(head_scores(train, target, "raw"), flat @ p)
    lz = head_scores(train, target, "layer-z")
    assert np.isclose(lz[0], 1.0) and np.isclose(lz[2], 1.0) and lz[3] == 0.0      # offsets per layer vanish
    assert head_scores(train, target, "unit")[2] < 0.99                            # ... but not under unit
    # raw prefers the big-loss record, unit the one of the target's shape
    pool_recs, tg = _recs(4), _recs(2, "t")
    fs = {"train_features": train, "target_features": target}
    assert S.select("heads", pool_recs, tg, count=1, normalise="raw", **fs).ids == ["p1"]
    assert S.select("heads", pool_recs, tg, count=1, normalise="unit", **fs).ids == ["p0"]


def test_top_k_compares_only_the_targets_strongest_heads():
    assert list(top_heads(P, 2)) == [3, 4]                                          # L0H3 and L1H0 (value 4, ties by order)
    assert list(top_heads(P, 0)) == list(range(8))
    match_top = np.zeros_like(P)
    match_top[0, 3] = 1.0                                       # active on the target's strongest head only
    elsewhere = P.copy()
    elsewhere[0, 3] = elsewhere[1, 0] = 0.0                     # the target's shape, its two strongest heads off
    train, target = _sets(np.stack([match_top, elsewhere]), P[None])
    s_all, s_top = head_scores(train, target, "unit"), head_scores(train, target, "unit", top_k=2)
    assert np.allclose(s_all, [4 / 7, np.sqrt(17) / 7])        # |P| = 7; elsewhere keeps 17 of its 49
    assert np.allclose(s_top, [4 / np.hypot(4, 4), 0.0])        # only L0H3 and L1H0 are compared
    kw = dict(train_features=train, target_features=target)
    assert S.select("heads", _recs(2), _recs(1, "t"), count=1, **kw).ids == ["p1"]
    sel = S.select("heads", _recs(2), _recs(1, "t"), count=1, top_k=2, **kw)
    assert sel.ids == ["p0"] and sel.extra["heads"]["top_heads_last_checkpoint"] == ["L0H3", "L1H0"]
    with pytest.raises(ValueError, match="top_k=9"):
        S.select("heads", _recs(2), _recs(1, "t"), count=1, top_k=9, train_features=train, target_features=target)


def test_checkpoints_are_weighted_as_in_less():
    rng = np.random.default_rng(1)
    a, b = np.abs(rng.normal(size=(5, 2, 4))), np.abs(rng.normal(size=(5, 2, 4)))
    ta, tb = np.abs(rng.normal(size=(3, 2, 4))), np.abs(rng.normal(size=(3, 2, 4)))
    both = _sets([a, b], [ta, tb], weights=[3, 1])
    one_a, one_b = _sets(a, ta), _sets(b, tb)
    assert np.allclose(head_scores(*both), 0.75 * head_scores(*one_a) + 0.25 * head_scores(*one_b))


def test_hybrid_weighting_is_the_documented_formula():
    rng = np.random.default_rng(2)
    pool, tgt = np.abs(rng.normal(size=(30, 2, 4))), np.abs(rng.normal(size=(3, 2, 4)))
    train, target = _sets(pool, tgt)
    pool_recs, tg = _recs(30), _recs(3, "t")
    h = head_scores(train, target, "unit")
    g = less_scores(train, target, ["t"] * 3)
    fs = {"train_features": train, "target_features": target}
    for w in (0.0, 0.3, 1.0):
        sel = S.select("heads-hybrid", pool_recs, tg, count=5, weight=w, **fs)
        assert np.allclose(sel.pool_scores, w * standardise(h) + (1 - w) * standardise(g))
    assert S.select("heads-hybrid", pool_recs, tg, count=5, weight=1.0, **fs).ids == \
        S.select("heads", pool_recs, tg, count=5, **fs).ids
    assert S.select("heads-hybrid", pool_recs, tg, count=5, weight=0.0, **fs).ids == \
        S.select("less", pool_recs, tg, count=5, **fs).ids
    with pytest.raises(ValueError, match="weight=1.5"):
        S.select("heads-hybrid", pool_recs, tg, count=5, weight=1.5, **fs)


def test_heads_without_signatures_says_how_to_get_them():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    train = S.FeatureSet.from_arrays(x, ids=[f"p{i}" for i in range(4)])
    target = S.FeatureSet.from_arrays(x[:1], ids=["t0"])
    with pytest.raises(ValueError, match="g2is grads --head-signatures"):
        S.select("heads", _recs(4), _recs(1, "t"), count=1, train_features=train, target_features=target)
    assert S.METHODS["heads"].needs == ("features", "head_signatures")


@pytest.mark.real_model
def test_signatures_on_the_real_model_equal_activation_pattern_alone(default_model):
    """Acceptance on the default model (SmolLM2-135M, 30 x 9 heads, GQA 9/3) for a few examples: the in-pass
    signature of each equals activation_pattern of that example alone; the features do not move."""
    import copy

    lm = copy.copy(default_model)
    lm.model = copy.deepcopy(default_model.model)        # the session's model stays without LoRA
    model = prepare_model(lm, LoraSettings(r=8, alpha=32, dropout=0.1))
    g = torch.Generator().manual_seed(0)
    randomise_lora(model, g, 0.02)
    recs = list(tasks.make_pool(0).records[:4])
    cfg = FeatureConfig(kind="sgd", max_length=128)
    feats, sig, proj = _extract(lm, model, recs, cfg)
    assert sig.shape == (4, 30, 9) and sig.min() >= 0 and sig.max() > 0
    assert np.array_equal(feats, extract(model, lm.tokenizer, recs, cfg, proj))
    for i, e in enumerate(encode_rows(lm.tokenizer, recs, cfg)):
        alone = activation_pattern(model, [e], pad_id=lm.tokenizer.pad_token_id).per_sample[0]
        # batch mates and padding round differently in fp32 (activation_pattern batched vs alone does the same):
        # measured up to 1.7e-6 of the largest entry
        assert np.abs(sig[i] - alone).max() <= 1e-5 * alone.max(), i


def test_a_spec_with_heads_extracts_signatures_and_selects_from_real_stores(tmp_path, workspace):
    """The runner reads ``needs`` from the registry: a spec with a heads method gets every store with signatures,
    and ``heads`` runs on them end to end (the tiny model's stores, both checkpoints)."""
    import yaml

    from g2is_core.loop.experiment import load_pool, load_target
    from g2is_core.loop.runner import gradient_stores, needs_head_signatures
    from g2is_core.loop.spec import load_spec

    spec_d = {"name": "tiny-heads", "model": "tiny", "pool": {"builtin": {"seed": 0, "per_task": 3, "distractors": 6}},
              "targets": [{"name": "add_reverse", "eval_limit": 2, "n_select": 3}], "methods": ["heads-hybrid", "less"],
              "ratios": [0.2], "seeds": [0],
              "selection": {"features": {"dim": 16, "max_length": 64, "warmup": {
                  "fraction": 0.3, "epochs": 2, "batch_size": 4, "grad_accum": 1, "max_length": 64}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec_d))
    spec = load_spec(tmp_path / "s.yaml")
    assert needs_head_signatures(spec)
    assert not needs_head_signatures(dataclasses.replace(spec, methods=["less"]))
    pool, targets = load_pool(spec.pool), load_target(spec.targets[0].select, spec.targets[0].n_select, seed=0)
    stores = gradient_stores(spec, pool, targets, workspace)
    assert all(s.has_head_signatures for s in stores["train_stores"] + stores["target_stores"])
    assert stores["train_stores"][0].head_signatures().shape == (len(pool), 2, 4)
    sel = S.select("heads", pool, targets, ratio=0.2, workspace=workspace, **stores)
    assert len(sel) == int(0.2 * len(pool)) and np.isfinite(sel.pool_scores).all()
    assert sel.inputs["train_store_keys"] == [s.dir.name for s in stores["train_stores"]]   # provenance recorded
