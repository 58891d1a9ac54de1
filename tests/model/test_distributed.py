"""Ray backend on a local 2-worker cluster and the tiny model: the merged store equals the local
backend's bit for bit (fp32), a worker killed mid-task is retried without losing or duplicating a
shard, and the activation pattern measured on Ray equals the local one."""
from __future__ import annotations

import numpy as np
import pytest

from g2is_core.features.extract import FeatureConfig, extract_store
from g2is_core.features.projection import ProjectorConfig
from g2is_core.features.warmup import WarmupConfig, warmup
from g2is_core.models.loading import load_model
from g2is_core.models.lora import LoraSettings
from g2is_core.data import tasks
from g2is_core.data.loaders import data_hash
from g2is_core.features.ray_backend import RayConfig, plan_tasks
from g2is_core.workspace import Workspace

TINY_LORA = LoraSettings(r=4, alpha=16, dropout=0.1)
N_ROWS, SHARD = 22, 4                 # 6 shards, the last one short
RAY = RayConfig(local_cpus=2, workers=2, tasks_per_worker=2, threads=1, max_retries=2)


def test_plan_tasks_contiguous_and_complete():
    assert plan_tasks(range(6), 4) == [[0, 1], [2], [3], [4, 5]]
    assert plan_tasks([3, 4, 9], 8) == [[3], [4], [9]]
    assert plan_tasks([], 3) == []
    got = plan_tasks(range(100), 7)
    assert sum(got, []) == list(range(100)) and len(got) == 7


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from g2is_core.features import ray_backend

    ray_backend.init(RAY)
    yield ray
    ray_backend.shutdown()


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    lm = load_model("tiny")
    recs = list(tasks.make_pool(0).records[:48])
    cfg = WarmupConfig(fraction=0.5, epochs=2, lr=1e-3, batch_size=4, grad_accum=1, max_length=96, lora=TINY_LORA)
    w = warmup(lm, recs, cfg, data_hash=data_hash(recs), workspace=ws)
    pool = recs[:N_ROWS]
    fcfg = FeatureConfig(kind="adam", max_length=96, max_batch=3)
    proj = ProjectorConfig(dim=64, seed=7, block=700)
    local = extract_store(lm, pool, w, 2, fcfg, proj, data_hash=data_hash(pool), dtype="fp32", shard_rows=SHARD,
                          workspace=ws, out_dir=ws.root / "local")
    return ws, w, pool, fcfg, proj, local


def _ray_store(warm, name: str, **kw):
    from g2is_core.features.ray_backend import extract_store_ray

    ws, w, pool, fcfg, proj, _ = warm
    return extract_store_ray("tiny", pool, w, 2, fcfg, proj, data_hash=data_hash(pool), dtype="fp32",
                             shard_rows=SHARD, workspace=ws, out_dir=ws.root / name, ray_config=RAY, **kw)


def test_ray_two_workers_equal_local_bitwise(ray_cluster, warm):
    local = warm[-1]
    st = _ray_store(warm, "ray")
    assert st.ids == local.ids
    assert st.features.dtype == np.float32 and st.features.shape == local.features.shape
    assert np.array_equal(np.asarray(st.features).view(np.uint32), np.asarray(local.features).view(np.uint32))
    assert st.config == local.config  # same identity, hence the same default store directory
    assert st.meta["distributed"]["tasks"] == 4 and st.meta["distributed"]["skipped_on_retry"] == []


def test_worker_killed_mid_task_is_retried_without_loss(ray_cluster, warm, tmp_path):
    local = warm[-1]
    marker = tmp_path / "crashed"
    st = _ray_store(warm, "ray-crash", crash_marker=str(marker))
    assert marker.exists(), "the fault was never injected"
    # the killed attempt had committed its first shard; the retry skipped it and did the rest
    assert len(st.meta["distributed"]["skipped_on_retry"]) == 1
    assert not (st.dir / "shards").exists() and len(st) == N_ROWS
    assert np.array_equal(np.asarray(st.features).view(np.uint32), np.asarray(local.features).view(np.uint32))


def test_activation_pattern_on_ray_equals_local(ray_cluster, tiny):
    from g2is_core.heads.ray import activation_pattern_ray
    from g2is_core.data.encoding import encode_all
    from g2is_core.heads.patterns import activation_pattern

    enc, _ = encode_all(tiny.tokenizer, list(tasks.make_pool(1).records[:14]), max_length=96)
    kw = dict(pad_id=tiny.tokenizer.pad_token_id, batch_size=3, max_tokens=512)
    ref = activation_pattern(tiny.model, enc, **kw)
    got = activation_pattern_ray("tiny", enc, ray_config=RAY, **kw)
    assert np.array_equal(got.per_sample, ref.per_sample)
    assert np.array_equal(got.values, ref.values) and got.n_kv_heads == ref.n_kv_heads


def test_cli_grads_backend_ray_equals_local(ray_cluster, warm, tmp_path):
    from g2is_core.cli import main
    from g2is_core.features.store import GradientStore

    _, w, *_ = warm
    base = ["grads", "--model", "tiny", "--data", "builtin:pool", "--limit", "9", "--warmup", str(w.dir),
            "--checkpoint", "1", "--dim", "32", "--dtype", "fp32", "--max-length", "96", "--shard-rows", "3"]
    assert main(base + ["--out", str(tmp_path / "local")]) == 0
    assert main(base + ["--out", str(tmp_path / "ray"), "--backend", "ray", "--ray-workers", "2"]) == 0
    a, b = GradientStore.open(tmp_path / "local"), GradientStore.open(tmp_path / "ray")
    assert a.ids == b.ids and np.array_equal(np.asarray(a.features), np.asarray(b.features))
