"""GradientStore: atomic shards, exact resume after kill -9, refusal to compare incompatible stores."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from g2is_core.features.extract import FeatureConfig, extract_store
from g2is_core.features.projection import ProjectorConfig
from g2is_core.features.warmup import WarmupConfig, warmup
from g2is_core.models.loading import load_model
from g2is_core.models.lora import LoraSettings
from g2is_core.data import tasks
from g2is_core.data.loaders import data_hash
from g2is_core.features.store import GradientStore, StoreWriter, check_compatible, list_stores, write_store
from g2is_core.workspace import PROJECT_ROOT, Workspace

TINY_LORA = LoraSettings(r=4, alpha=16, dropout=0.1)


def _cfg(**kw):
    base = {"model_key": "m", "lora": {"r": 4}, "projector": {"family": "rademacher", "seed": 0, "dim": 8},
            "checkpoint": {"warmup": "w", "epoch": 1, "step": 3, "weight": 0.5}, "kind": "adam"}
    base.update(kw)
    return base


def _rows(r: range) -> np.ndarray:
    return np.arange(r.start * 8, r.stop * 8, dtype=np.float32).reshape(len(r), 8)


def test_write_resume_and_open(tmp_path):
    ids = [f"r{i}" for i in range(10)]
    w = StoreWriter(tmp_path / "s", _cfg(), ids, 8, "fp32", shard_rows=4)
    w.write_shard(1, _rows(w.rows(1)))           # as if a run died after committing shard 1 only
    (w.shard_dir / ".shard-000000.npy.tmp").write_bytes(b"half a file")  # a torn temp write
    calls = []
    store = write_store(tmp_path / "s", _cfg(), ids, 8, lambda r: calls.append(r) or _rows(r),
                        inputs={"data_hash": "h"}, dtype="fp32", shard_rows=4)
    assert calls == [range(0, 4), range(8, 10)]  # committed shard skipped
    assert np.array_equal(store.features, _rows(range(10)))
    assert store.ids == ids and store.meta["inputs"]["n_rows"] == 10 and store.meta["inputs"]["data_hash"] == "h"
    assert isinstance(store.features, np.memmap)
    assert not (tmp_path / "s" / "shards").exists()
    # a different plan in the same directory is refused
    with pytest.raises(ValueError, match="different extraction"):
        StoreWriter(tmp_path / "t", _cfg(), ids, 8, "fp32", 4) and StoreWriter(tmp_path / "t", _cfg(), ids[:5], 8, "fp32", 4)


def test_incompatible_stores_are_refused(tmp_path):
    ids = ["a", "b"]
    mk = lambda name, cfg: write_store(tmp_path / name, cfg, ids, 8, _rows, inputs={"data_hash": name})  # noqa: E731
    a = mk("a", _cfg())
    target = mk("t", _cfg(kind="sgd"))
    check_compatible(a, target)                      # train vs target features: the LESS use, allowed
    other = mk("b", _cfg(projector={"family": "rademacher", "seed": 1, "dim": 16}, model_key="m2"))
    with pytest.raises(ValueError) as ei:
        check_compatible(a, other)
    msg = str(ei.value)
    assert "projector.seed: 0 vs 1" in msg and "projector.dim: 8 vs 16" in msg and "model_key" in msg
    with pytest.raises(ValueError, match="checkpoint.epoch"):
        GradientStore.open(mk("c", _cfg(checkpoint={"warmup": "w", "epoch": 2, "step": 6})).dir, like=a)
    # a sparse projector (same seed and dim) is another matrix: refused, and the message names the kinds
    sparse = mk("sp", _cfg(projector={"family": "rademacher", "seed": 0, "dim": 8, "kind": "sparse", "s": 4}))
    with pytest.raises(ValueError, match="projector.kind: dense vs sparse"):
        check_compatible(a, sparse)
    check_compatible(sparse, mk("sp2", _cfg(kind="sgd", projector=dict(sparse.config["projector"]))))


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    lm = load_model("tiny")
    recs = list(tasks.make_pool(0).records[:40])
    cfg = WarmupConfig(fraction=0.25, epochs=2, lr=1e-3, batch_size=5, grad_accum=1, max_length=128, lora=TINY_LORA)
    return ws, warmup(lm, recs, cfg, data_hash=data_hash(recs), workspace=ws)


def test_kill_9_resume_gives_the_uninterrupted_rows(warm, tmp_path, monkeypatch):
    ws, w = warm
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "g2is_core.cli", "--workspace", str(ws.root), "--threads", "1", "grads",
            "--model", "tiny", "--data", "builtin:pool", "--limit", "240", "--warmup", str(w.dir),
            "--checkpoint", "1", "--dim", "64", "--dtype", "fp32", "--max-length", "128", "--shard-rows", "8",
            "--out", str(out)]
    env = {**os.environ, "G2IS_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(12_000):  # poll (at most ~2 minutes) until two shards are committed
            if proc.poll() is not None or len(list((out / "shards").glob("shard-*.npy"))) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the extraction finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    committed = sorted(p.name for p in (out / "shards").glob("shard-*.npy"))
    assert committed and not (out / "sidecar.json").exists()
    n_committed = len(committed)
    assert n_committed < 240 // 8
    # the rerun: the same command, in this process (saves a second interpreter start)
    from g2is_core import cli

    monkeypatch.setenv("G2IS_WORKSPACE", str(ws.root))
    monkeypatch.setenv("G2IS_THREADS", "1")
    assert cli.main(argv[3:]) == 0
    resumed = GradientStore.open(out)

    # the same extraction uninterrupted, in this process (same code path, same thread count)
    from g2is_core.data.spec import DataSpec

    d = DataSpec.parse("builtin:pool?limit=240").load()
    recs, dh, desc = d.records, d.data_hash, d.description
    lm = load_model("tiny")
    full = extract_store(lm, recs, w, 1, FeatureConfig(kind="adam", max_length=128), ProjectorConfig(dim=64),
                         data_hash=dh, data_source=desc, dtype="fp32", shard_rows=8, out_dir=tmp_path / "full")
    assert resumed.ids == full.ids and len(set(resumed.ids)) == len(resumed) == 240
    assert np.array_equal(np.asarray(resumed.features), np.asarray(full.features))  # bitwise
    check_compatible(resumed, full)
    assert [p for p, _ in list_stores(ws, data_hash=dh)] == []  # --out stores live outside the workspace
