"""Gradient features on the tiny random Llama: the fast path equals the reference, the Adam direction
equals a hand computation from the stored moments, checkpoint weights equal the schedule's mean LR."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from g2is_core.features.extract import FeatureConfig, extract, extract_store, lora_layout, prepare_model, with_overrides
from g2is_core.features.projection import Projector, ProjectorConfig
from g2is_core.features.warmup import WarmupConfig, warmup
from g2is_core.models.loading import load_model, tiny_llama
from g2is_core.models.lora import LoraSettings, attach_lora, lora_parameters, randomise_lora
from g2is_core.data import tasks
from g2is_core.data.loaders import data_hash
from g2is_core.data.encoding import encode_record
from g2is_core.workspace import Workspace, read_json

TINY_LORA = LoraSettings(r=4, alpha=16, dropout=0.1)


def _records(n: int, seed: int = 0):
    return list(tasks.make_pool(seed).records[:n])


@pytest.fixture(scope="module")
def perturbed():
    """Tiny model with LoRA whose A and B are both non-zero (a fresh LoRA has B = 0, so dL/dA = 0)."""
    lm = load_model("tiny")
    model = prepare_model(lm, TINY_LORA)
    g = torch.Generator().manual_seed(1)
    randomise_lora(model, g, 0.05)
    return lm, model


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    lm = load_model("tiny")
    recs = _records(48)
    cfg = WarmupConfig(fraction=0.5, epochs=3, lr=1e-3, batch_size=4, grad_accum=1, max_length=128,
                       lora=TINY_LORA)
    w = warmup(lm, recs, cfg, data_hash=data_hash(recs), workspace=ws)
    return ws, lm, recs, w


@pytest.mark.parametrize("projector", ["dense", "sparse"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_fast_path_equals_reference_fp32(perturbed, kind, projector, monkeypatch):
    # bf16 below is the real bf16 path even on a CPU without native bf16 (there a plain request runs fp32)
    monkeypatch.setenv("G2IS_FORCE_BF16", "1")
    lm, model = perturbed
    recs = _records(20)
    layout = lora_layout(model)
    proj = Projector(ProjectorConfig(dim=96, seed=3, block=1000, kind=projector), layout.total)  # blocks straddle tensors
    moments = None
    if kind == "adam":
        g = torch.Generator().manual_seed(2)
        moments = (torch.randn(layout.total, generator=g) * 1e-3, torch.rand(layout.total, generator=g) * 1e-5)
    # small batches and groups: several buckets with padding, several projection groups
    cfg = FeatureConfig(kind=kind, max_length=96, max_batch=6, proj_rows=7)
    ref = extract(model, lm.tokenizer, recs, cfg, proj, moments=moments, method="reference")
    fast = extract(model, lm.tokenizer, recs, cfg, proj, moments=moments, method="fast")
    cos = (ref * fast).sum(1)
    assert cos.min() > 0.999, cos.min()
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    if projector == "sparse":
        dense = extract(model, lm.tokenizer, recs, cfg, Projector(ProjectorConfig(dim=96, seed=3, block=1000),
                                                                 layout.total), moments=moments)
        assert not np.allclose(dense, fast, atol=1e-3)                    # a different matrix indeed
    # bf16 autocast stays close (stated tolerance in docs/gradients.md: cosine > 0.99)
    fast16 = extract(model, lm.tokenizer, recs, with_overrides(cfg, bf16=True), proj, moments=moments)
    assert (ref * fast16).sum(1).min() > 0.99


def test_padding_and_batch_mates_do_not_leak(perturbed):
    lm, model = perturbed
    recs = _records(9)
    layout = lora_layout(model)
    proj = Projector(ProjectorConfig(dim=32), layout.total)
    cfg = FeatureConfig(kind="sgd", max_length=96)
    together = extract(model, lm.tokenizer, recs, cfg, proj)
    alone = np.concatenate([extract(model, lm.tokenizer, [r], cfg, proj) for r in recs])
    assert np.abs(together - alone).max() < 1e-4


def test_adam_feature_equals_hand_computation(warm):
    ws, lm, recs, w = warm
    ckpt = w.checkpoint(2)
    pool = recs[:10]
    cfgp = ProjectorConfig(dim=64, seed=5, block=512)
    store = extract_store(lm, pool, w, 2, FeatureConfig(kind="adam", max_length=128), cfgp,
                          data_hash=data_hash(pool), dtype="fp32", shard_rows=4, workspace=ws)
    # by hand: a fresh tiny model, adapter weights and moments read by NAME from the checkpoint files
    from safetensors.torch import load_file

    fresh = attach_lora(tiny_llama()[0], TINY_LORA).eval()
    weights = load_file(str(ckpt.path / "adapter.safetensors"))
    mom = load_file(str(ckpt.path / "optimizer.safetensors"))
    params = lora_parameters(fresh)
    with torch.no_grad():
        for n, p in params:
            p.copy_(weights[n])
    R = torch.cat([Projector(cfgp, sum(p.numel() for _, p in params)).block(k)
                   for k in range(math.ceil(sum(p.numel() for _, p in params) / 512))])
    assert torch.count_nonzero(mom[f"exp_avg::{params[0][0]}"]) > 0
    for i, rec in enumerate(pool):
        e = encode_record(lm.tokenizer, rec, max_length=128)
        ids = torch.tensor([e.input_ids])
        loss = fresh(input_ids=ids, labels=torch.tensor([e.labels])).loss
        grads = torch.autograd.grad(loss, [p for _, p in params])
        gam = []
        for (n, _), g in zip(params, grads):
            m = 0.9 * mom[f"exp_avg::{n}"] + 0.1 * g
            v = 0.999 * mom[f"exp_avg_sq::{n}"] + 0.001 * g * g
            gam.append((m / torch.sqrt(v + 1e-8)).reshape(-1))
        x = torch.cat(gam) @ R
        x = (x / x.norm()).numpy()
        assert float(x @ store.features[i]) > 0.999
    assert store.ids == [r.id for r in pool]
    assert store.weight == pytest.approx(ckpt.weight)


def test_checkpoint_weights_are_mean_lr_per_epoch(warm):
    _, _, _, w = warm
    state = read_json(w.dir / "state.json")
    steps = state["losses"]  # the LR the loop actually used at each step
    n_epochs = len(w.checkpoints)
    per_epoch = [[s["lr"] for s in steps if (c.step - (w.checkpoints[0].step)) < s["step"] <= c.step]
                 for c in w.checkpoints]
    means = [sum(v) / len(v) for v in per_epoch]
    expect = [m / sum(means) for m in means]
    assert [c.weight for c in w.checkpoints] == pytest.approx(expect, rel=1e-9)
    assert len(expect) == n_epochs and sum(c.weight for c in w.checkpoints) == pytest.approx(1.0)
    assert all((c.path / "optimizer.safetensors").exists() for c in w.checkpoints)


def test_projection_is_seeded_and_preserves_inner_products():
    P, d = 5000, 512
    a = Projector(ProjectorConfig(dim=d, seed=7, block=1024), P)
    assert torch.equal(a.dense(), Projector(ProjectorConfig(dim=d, seed=7, block=1024), P).dense())
    assert not torch.equal(a.dense(), Projector(ProjectorConfig(dim=d, seed=8, block=1024), P).dense())
    vals = torch.unique(a.dense())
    assert len(vals) == 2 and vals[0] == -vals[1] and float(vals[1]) == pytest.approx(1 / math.sqrt(d))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, P, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    y = a.project(x)
    err = (y @ y.T - x @ x.T).abs().max()
    assert err < 6 / math.sqrt(d)  # JL: inner-product error ~ sqrt(2/d) per pair
    assert torch.allclose(y, x @ a.dense(), atol=1e-5)


def test_train_features_need_moments(perturbed):
    lm, model = perturbed
    proj = Projector(ProjectorConfig(dim=8), lora_layout(model).total)
    with pytest.raises(ValueError, match="Adam moments"):
        extract(model, lm.tokenizer, _records(2), FeatureConfig(kind="adam"), proj)


def _drawn_block(proj: Projector, k: int) -> torch.Tensor:
    """Block k of R exactly as the projector drew it before the sign cache (the stores' recorded definition)."""
    cols = proj.columns(k)
    g = torch.Generator().manual_seed(__import__("g2is_core.features.projection", fromlist=["x"])._block_seed(
        proj.cfg.seed, k))
    r = torch.randint(0, 2, (cols.stop - cols.start, proj.cfg.dim), generator=g, dtype=torch.int8)
    return r.to(torch.float32).mul_(2).sub_(1).mul_(1.0 / math.sqrt(proj.cfg.dim))


@pytest.mark.parametrize("dim", [36, 64])  # 36: rows of R do not fill whole bytes
def test_sign_cache_is_bitwise_the_drawn_projector(perturbed, dim):
    lm, model = perturbed
    layout = lora_layout(model)
    cfgp = ProjectorConfig(dim=dim, seed=5, block=700)  # a short last block too
    cached, uncached = Projector(cfgp, layout.total), Projector(cfgp, layout.total, cache_mb=0)
    half = Projector(cfgp, layout.total, cache_mb=3 * 700 * math.ceil(dim / 8) / (1 << 20))  # 3 blocks kept
    for _ in range(2):  # the second pass reads the cache
        for k in range(cached.n_blocks):
            want = _drawn_block(cached, k).view(torch.int32)
            for p in (cached, uncached, half):
                assert torch.equal(p.block_view(k).contiguous().view(torch.int32), want)
                assert torch.equal(p.block(k).view(torch.int32), want)
    assert len(cached._signs) == cached.n_blocks and not uncached._signs and len(half._signs) == 3
    assert cached.cached_mb * (1 << 20) == layout.total * math.ceil(dim / 8)
    g = torch.Generator().manual_seed(2)
    moments = (torch.randn(layout.total, generator=g) * 1e-3, torch.rand(layout.total, generator=g) * 1e-5)
    recs = _records(12)
    cfg = FeatureConfig(kind="adam", max_length=64, proj_rows=5)  # several groups: the cache is reused
    a = extract(model, lm.tokenizer, recs, cfg, Projector(cfgp, layout.total), moments=moments)
    b = extract(model, lm.tokenizer, recs, cfg, Projector(cfgp, layout.total, cache_mb=0), moments=moments)
    assert np.array_equal(a.view(np.int32), b.view(np.int32))


# ============================================================================ precision (issue 15)
def _linear_output_dtypes(model):
    """Record the output dtype of every LoRA-adapted Linear's base layer (bf16 under bf16 autocast)."""
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for name, m in model.named_modules() if name.endswith("q_proj.base_layer")]
    return seen, hooks


@pytest.mark.parametrize("native", [False, True])
def test_explicit_bf16_request_without_native_bf16_runs_fp32_extraction(warm, monkeypatch, capsys, native):
    """The issue's acceptance test (extraction): probe mocked; no native bf16 -> one warning line, fp32 autocast
    state, the fp32 store (same key: a later fp32 request finds it) with the request recorded; native -> bf16 kept."""
    from g2is_core import runtime

    ws, lm, recs, w = warm
    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: native)
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.delenv(runtime.FORCE_BF16_ENV, raising=False)
    pool = recs[:6]
    cfgp = ProjectorConfig(dim=32, seed=5)
    seen, hooks = _linear_output_dtypes(lm.model)
    try:   # computed first (a store found complete would compute nothing)
        asked = extract_store(lm, pool, w, 1, FeatureConfig(kind="sgd", max_length=128, bf16=True), cfgp,
                              data_hash=data_hash(pool), dtype="fp32", workspace=ws)
    finally:
        for h in hooks:
            h.remove()
    err = capsys.readouterr().err
    fp32 = extract_store(lm, pool, w, 1, FeatureConfig(kind="sgd", max_length=128), cfgp,
                         data_hash=data_hash(pool), dtype="fp32", workspace=ws)
    side = read_json(asked.dir / "sidecar.json")
    if not native:
        assert seen and set(seen) == {torch.float32}                    # really fp32: no autocast in the pass
        assert len(err.strip().splitlines()) == 1 and "bf16 requested for feature extraction" in err
        assert asked.dir == fp32.dir                                    # keyed by what ran: the fp32 store
        assert side["config"]["features"]["bf16"] is False
        assert side["precision"] == {"precision": "fp32", "requested": True, "native_bf16": False, "forced": False}
        assert np.array_equal(asked.features, fp32.features) and capsys.readouterr().err == ""
    else:
        assert seen and set(seen) == {torch.bfloat16} and err == ""     # native: bf16 kept, no warning
        assert asked.dir != fp32.dir and side["config"]["features"]["bf16"] is True
        assert side["precision"]["precision"] == "bf16"
        assert (asked.features * fp32.features).sum(1).min() > 0.99


# ----------------------------------------------------------------------------- the sparse projection (an option)
def test_default_projector_identity_is_unchanged():
    """Stores written before the sparse option keep their keys: the default identity dict (hence its hash) is
    exactly the one of before, and so is any dense config's; sparse ones carry kind and s."""
    from g2is_core.workspace import hash_config

    assert ProjectorConfig().to_dict() == {"family": "rademacher", "dim": 2048, "seed": 0, "block": 4096}
    assert hash_config(ProjectorConfig().to_dict()) == "2d3e955739479c47"            # computed before the option
    assert hash_config(ProjectorConfig(dim=8192, seed=3).to_dict()) == "1a7c1e023976c890"
    assert ProjectorConfig(dim=8192, seed=3, kind="dense", s=8).to_dict() == ProjectorConfig(dim=8192, seed=3).to_dict()
    sp = ProjectorConfig(kind="sparse").to_dict()
    assert sp["kind"] == "sparse" and sp["s"] == ProjectorConfig.s
    with pytest.raises(ValueError, match="kind"):
        Projector(ProjectorConfig(kind="fft"), 10)


@pytest.mark.parametrize("d,s", [(512, 4), (100, 3), (64, 1)])
def test_sparse_projection_equals_the_dense_matrix_of_its_entries(d, s):
    P = 2500
    cfgp = ProjectorConfig(dim=d, seed=7, block=1024, kind="sparse", s=s)   # a short last block too
    a = Projector(cfgp, P)
    R = a.dense()
    assert torch.equal(R, Projector(cfgp, P).dense())                      # seeded: the same matrix again
    assert not torch.equal(R, Projector(ProjectorConfig(dim=d, seed=8, block=1024, kind="sparse", s=s), P).dense())
    assert ((R != 0).sum(1) == s).all()                                    # s entries per parameter, no collision
    assert R[R != 0].abs().unique().tolist() == pytest.approx([1 / math.sqrt(s)])
    start = [t * d // s for t in range(s + 1)]
    for t in range(s):                                                     # one entry in each segment
        assert ((R[:, start[t]:start[t + 1]] != 0).sum(1) == 1).all()
    x = torch.randn(6, P, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.project(x), x @ R, atol=1e-5)
    one = torch.zeros(d)
    for k in range(a.n_blocks):                                            # the 1-row form the reference path uses
        a.add_block(one, k, x[0, a.columns(k)])
    assert torch.allclose(one, x[0] @ R, atol=1e-5)
    uncached = Projector(cfgp, P, cache_mb=0)
    assert torch.equal(uncached.project(x), a.project(x))


def test_sparse_projection_preserves_inner_products():
    """JL sanity on random unit vectors: the same loose bound as the dense test above."""
    P, d = 5000, 512
    a = Projector(ProjectorConfig(dim=d, seed=7, block=1024, kind="sparse"), P)
    x = torch.randn(20, P, generator=torch.Generator().manual_seed(0))
    x = x / x.norm(dim=1, keepdim=True)
    y = a.project(x)
    assert (y @ y.T - x @ x.T).abs().max() < 6 / math.sqrt(d)
    assert (y.norm(dim=1) - 1).abs().max() < 6 / math.sqrt(d)
