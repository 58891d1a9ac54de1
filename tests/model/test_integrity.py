"""No silent wrong numbers (issue 18, items 1 and 5): finite checks where features are born and used,
damaged or concurrent stores, stores that do not fit together, artefacts checked against their recorded
sha256, and a model directory that lacks weights.

Each case asserts the error type (or the CLI's exit 2 with one line) and that the sentence names the
file, store or field; the damaged-shard case also asserts that the rerun gives the uninterrupted rows.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from g2is_core import cli
from g2is_core.data import tasks
from g2is_core.data.encoding import IGNORE, Encoded
from g2is_core.data.loaders import data_hash
from g2is_core.data.records import DataError
from g2is_core.features.extract import FeatureConfig, check_windows, extract_store
from g2is_core.features.projection import ProjectorConfig
from g2is_core.features.store import LOCK, GradientStore, StoreWriter, store_lock, write_store
from g2is_core.features.warmup import WarmupConfig, check_finite_checkpoints, load_warmup, warmup
from g2is_core.linalg import NonFiniteError
from g2is_core.models.loading import ModelError, load_model, tiny_llama
from g2is_core.models.lora import LoraSettings
from g2is_core.selection.features import FeatureSet
from g2is_core.workspace import ArtefactError, LockBusy, Workspace, exclusive_lock, write_sidecar

TINY_LORA = LoraSettings(r=4, alpha=16, dropout=0.1)

from test_store import _cfg  # noqa: E402  (the store config test_store's writers take)


def run_cli(capsys, argv) -> tuple[int, str]:
    """(exit code, the one ``g2is ...`` message line) of ``g2is ARGV`` run in this process."""
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.startswith("g2is ")]
    return rc, (lines[-1] if lines else err)


@pytest.fixture(autouse=True)
def _transformers_logs_to_this_tests_stderr():
    """transformers' log handler keeps the stderr of the test that first logged (a closed capture later);
    point it at this test's, so its warnings are captured instead of ending in a logging traceback."""
    import sys

    from transformers.utils import logging as hf_logging

    for h in hf_logging._get_library_root_logger().handlers:
        h.stream = sys.stderr
    yield


def _rows(r: range) -> np.ndarray:
    rng = np.random.default_rng(r.start)
    return rng.standard_normal((len(r), 8)).astype(np.float32)


IDS = [f"r{i}" for i in range(10)]


def _store(d: Path, cfg=None, rows=_rows, wait: bool = True) -> GradientStore:
    return write_store(d, cfg or _cfg(), IDS, 8, rows, inputs={"data_hash": "h"}, dtype="fp32", shard_rows=4, wait=wait)


def _hand_made_store(d: Path, features: np.ndarray, cfg=None) -> Path:
    """A finished store written around the writer (as an older version could leave it): its sidecar's
    checksums match, so only the row check can catch what it holds."""
    d.mkdir(parents=True)
    np.save(d / "features.npy", features)
    write_sidecar(d, "grads", cfg or _cfg(), inputs={"data_hash": "h", "n_rows": len(features)},
                  extra={"ids": [f"r{i}" for i in range(len(features))]})
    return d


# ============================================================================ damaged shards
def test_truncated_shard_is_named_and_computed_again(tmp_path, capsys):
    d = tmp_path / "s"
    w = StoreWriter(d, _cfg(), IDS, 8, "fp32", shard_rows=4)
    for i in (0, 1):                                   # a run that died after committing two shards
        w.write_shard(i, _rows(w.rows(i)))
    p0 = w.shard_path(0)
    p0.write_bytes(p0.read_bytes()[:-17])              # ... and a disk that lost the end of one
    calls = []
    store = _store(d, rows=lambda r: calls.append(r) or _rows(r))
    assert calls == [range(0, 4), range(8, 10)]        # the damaged shard again, the intact one kept
    assert np.array_equal(store.features, np.concatenate([_rows(range(0, 4)), _rows(range(4, 8)), _rows(range(8, 10))]))
    err = capsys.readouterr().err
    assert f"gradient store {d}" in err and "shard-000000.npy" in err and "bytes instead of" in err


def test_shard_damaged_before_finalising_is_removed_and_named(tmp_path):
    d = tmp_path / "s"
    w = StoreWriter(d, _cfg(), IDS, 8, "fp32", shard_rows=4)
    for i in range(w.n_shards):
        w.write_shard(i, _rows(w.rows(i)))
    raw = bytearray(w.shard_path(2).read_bytes())
    raw[-1] ^= 0xFF                                    # same size, other bytes
    w.shard_path(2).write_bytes(bytes(raw))
    with pytest.raises(ArtefactError, match=r"shard-000002\.npy is damaged .*sha256.*run the same command again"):
        w.finalize({"data_hash": "h"})
    assert w.pending() == [2] and not (d / "sidecar.json").exists()
    assert np.array_equal(_store(d).features[8:], _rows(range(8, 10)))


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    lm = load_model("tiny")
    recs = list(tasks.make_pool(0).records[:40])
    cfg = WarmupConfig(fraction=0.25, epochs=1, lr=1e-3, batch_size=5, grad_accum=1, max_length=128, lora=TINY_LORA)
    return ws, lm, recs, warmup(lm, recs, cfg, data_hash=data_hash(recs), workspace=ws)


def test_truncated_shard_of_a_real_extraction_gives_the_uninterrupted_rows(warm, tmp_path, capsys):
    ws, lm, recs, w = warm
    recs = recs[:24]
    kw = dict(data_hash=data_hash(recs), dtype="fp32", shard_rows=8)
    full = extract_store(lm, recs, w, 1, FeatureConfig(max_length=128), ProjectorConfig(dim=32),
                         out_dir=tmp_path / "full", **kw)
    # the state of a run killed before finalising, with shard 1 truncated on disk: plan + shards 0..2
    d = tmp_path / "damaged"
    writer = StoreWriter(d, full.config, full.ids, 32, "fp32", 8)
    for i in range(writer.n_shards):
        writer.write_shard(i, np.asarray(full.features[writer.rows(i).start:writer.rows(i).stop]))
    writer.shard_path(1).write_bytes(writer.shard_path(1).read_bytes()[:100])
    again = extract_store(lm, recs, w, 1, FeatureConfig(max_length=128), ProjectorConfig(dim=32), out_dir=d, **kw)
    assert "shard-000001.npy" in capsys.readouterr().err
    assert np.array_equal(np.asarray(again.features), np.asarray(full.features))  # recomputed, bit for bit
    assert sorted(p.name for p in d.iterdir()) == [".verified.json", "features.npy", "plan.json", "sidecar.json"]


# ============================================================================ two writers
def test_two_writers_share_the_shards_each_computed_once_and_leave_no_stray_files(tmp_path):
    d = tmp_path / "s"
    go, first_calls, second_calls, out = threading.Event(), [], [], {}

    def slow(r):                                       # the first writer stalls in its first shard
        first_calls.append(r)
        go.wait(30)
        return _rows(r)

    t1 = threading.Thread(target=lambda: out.setdefault("a", _store(d, rows=slow)))
    t1.start()
    for _ in range(500):                               # until the first writer holds shard 0
        if first_calls:
            break
        time.sleep(0.01)
    t2 = threading.Thread(target=lambda: out.setdefault("b", _store(d, rows=lambda r: second_calls.append(r) or _rows(r))))
    t2.start()
    for _ in range(500):                               # the second takes the two other shards meanwhile
        if len(second_calls) == 2:
            break
        time.sleep(0.01)
    time.sleep(0.2)
    assert t2.is_alive() and second_calls == [range(4, 8), range(8, 10)]   # ... and then waits for shard 0
    go.set()
    t1.join(30)
    t2.join(30)
    assert first_calls == [range(0, 4)] and second_calls == [range(4, 8), range(8, 10)]   # each shard once
    alone = _store(tmp_path / "alone")
    assert np.array_equal(out["a"].features, alone.features) and np.array_equal(out["b"].features, alone.features)
    assert sorted(p.name for p in d.iterdir()) == [".verified.json", "features.npy", "plan.json", "sidecar.json"]


def test_a_writer_whose_peer_died_computes_the_peers_shard(tmp_path):
    """A shard claimed by a process that then dies (its flock dropped, nothing committed) is computed by the
    one left, after the shards nobody held."""
    d, calls = tmp_path / "s", []
    w = StoreWriter(d, _cfg(), IDS, 8, "fp32", 4)
    with exclusive_lock(w.claim_path(0)):                # a peer holds shard 0 ...
        t = threading.Thread(target=lambda: calls.append(_store(d, rows=lambda r: calls.append(r) or _rows(r))))
        t.start()
        for _ in range(500):
            if len(calls) == 2:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        assert calls == [range(4, 8), range(8, 10)] and t.is_alive()
    t.join(30)                                          # ... and dies: its shard is computed here
    assert calls[2] == range(0, 4) and np.array_equal(calls[3].features, _store(tmp_path / "alone").features)
    assert w.n_shards == 3


def test_a_writer_that_will_not_wait_is_told_the_store_is_busy_and_computes_nothing(tmp_path):
    d, calls = tmp_path / "s", []
    with store_lock(d):                                # another writer holds it
        with pytest.raises(LockBusy):
            _store(d, rows=lambda r: calls.append(r) or _rows(r), wait=False)
    assert not calls and not (d / "plan.json").exists()
    assert np.array_equal(_store(d).features, _store(tmp_path / "t").features)   # free again: written as usual


def test_feature_processes_split_the_stores_a_busy_one_is_done_last(tmp_path, workspace):
    """``gradient_stores`` leaves a store another process is writing for last and extracts the others meanwhile
    (how several ``bench features``/``bench run`` processes share a spec's extraction); the result is the same."""
    import yaml

    from g2is_core.loop.experiment import load_pool, load_target
    from g2is_core.loop.runner import gradient_stores
    from g2is_core.loop.spec import load_spec

    spec_d = {"name": "split", "model": "tiny", "pool": {"builtin": {"seed": 0, "per_task": 2, "distractors": 4}},
              "targets": [{"name": "add_reverse", "eval_limit": 2, "n_select": 3}], "methods": ["less"],
              "ratios": [0.2], "seeds": [0],
              "selection": {"features": {"dim": 16, "max_length": 64, "warmup": {
                  "fraction": 0.3, "epochs": 2, "batch_size": 4, "grad_accum": 1, "max_length": 64}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec_d))
    spec = load_spec(tmp_path / "s.yaml")
    pool, targets = load_pool(spec.pool), load_target(spec.targets[0].select, 3, seed=0)
    ref = gradient_stores(spec, pool, targets, Workspace(tmp_path / "ref"))   # uninterrupted, one process
    first = workspace.root / "grads" / ref["train_stores"][0].dir.name        # content keyed: same name here
    others = [workspace.root / "grads" / s.dir.name for s in ref["train_stores"][1:] + ref["target_stores"]]
    held, released = threading.Event(), []

    def other_writer():                                 # holds the first pool store until the rest exist
        with store_lock(first):
            held.set()
            for _ in range(3000):
                if all((o / "sidecar.json").exists() for o in others):
                    break
                time.sleep(0.02)
            released.append(all((o / "sidecar.json").exists() for o in others))

    t = threading.Thread(target=other_writer)
    t.start()
    assert held.wait(30)
    got = gradient_stores(spec, pool, targets, workspace)
    t.join(60)
    assert released == [True]                           # every other store was done while the first was busy
    for a, b in zip(got["train_stores"] + got["target_stores"], ref["train_stores"] + ref["target_stores"]):
        assert a.dir.name == b.dir.name and np.array_equal(np.asarray(a.features), np.asarray(b.features))


def test_a_late_shard_is_never_written_into_a_finished_store(tmp_path):
    d = _store(tmp_path / "s").dir
    late = StoreWriter.attach(d)                       # a worker that outlived its driver
    with pytest.raises(ArtefactError, match="finished by another process"):
        late.write_shard(0, _rows(range(0, 4)))
    assert not any(p.name.startswith("shard") for p in d.rglob("*"))


def test_the_lock_is_released_when_its_holder_fails(tmp_path):
    d = tmp_path / "s"
    with pytest.raises(RuntimeError):
        with store_lock(d):
            raise RuntimeError("the writer crashed")
    with store_lock(d):                                # not stuck
        assert (d / LOCK).exists()


# ============================================================================ non-finite and empty rows
def test_nan_rows_are_never_committed(tmp_path):
    def nan_rows(r):
        x = _rows(r)
        if r.start == 4:
            x[1, 3] = np.nan
        return x

    with pytest.raises(NonFiniteError, match=rf"gradient store {tmp_path / 's'}: 1 of the 4 .* shard 1 .*records r5\b"):
        _store(tmp_path / "s", rows=nan_rows)
    assert not (tmp_path / "s" / "shards" / "shard-000001.npy").exists()


def _enc(i, ids, labels, cut=0):
    return Encoded(f"x{i}", tuple(ids), tuple(labels), cut, 0)


def test_windows_without_signal_are_refused():
    recs = list(tasks.make_pool(0).records[:3])
    # a response token only at position 0 predicts nothing (max_length 1): an empty window
    with pytest.raises(DataError, match=r"3 of 3 records have no response token .* window of 1 tokens .*'x0'.*--max-length"):
        check_windows([_enc(i, [7], [7], cut=5) for i in range(3)], recs, 1)
    # two different records cut down to the same tokens: identical rows
    enc = [_enc(0, [1, 2], [IGNORE, 2], cut=4), _enc(1, [3, 2], [IGNORE, 2]), _enc(2, [1, 2], [IGNORE, 2], cut=9)]
    with pytest.raises(DataError, match=r"records 'x0' and 'x2' differ but their windows of 2 tokens are the same"):
        check_windows(enc, recs, 2)
    check_windows(enc, [recs[0], recs[1], recs[0]], 2)  # the same record twice: a duplicate, not a cut
    with pytest.raises(DataError, match=r"records 'x1' and 'x2' differ"):  # a whole window = another's cut one
        check_windows([_enc(0, [5, 6], [IGNORE, 6]), _enc(1, [3, 2], [IGNORE, 2]), _enc(2, [3, 2], [IGNORE, 2], 4)],
                      recs, 2)
    check_windows([_enc(0, [5, 6], [IGNORE, 6]), _enc(1, [3, 2], [IGNORE, 2])], recs, 2)  # distinct windows pass


def test_grads_with_windows_that_lost_the_prompt_is_exit_2_naming_the_store(warm, tmp_path, capsys, monkeypatch):
    ws, _lm, _recs, w = warm
    monkeypatch.setenv("G2IS_WORKSPACE", str(ws.root))
    base = ["grads", "--model", "tiny", "--data", "builtin:pool", "--limit", "24", "--warmup", w.dir,
            "--checkpoint", "1", "--dim", "16", "--shard-rows", "8"]
    rc, line = run_cli(capsys, base + ["--max-length", "1", "--out", tmp_path / "a"])
    assert rc == 2 and f"gradient store {tmp_path / 'a'}" in line and "no response token" in line and "--max-length" in line
    rc, line = run_cli(capsys, base + ["--max-length", "2", "--out", tmp_path / "b"])
    assert rc == 2 and f"gradient store {tmp_path / 'b'}" in line and "are the same tokens" in line
    assert not list((tmp_path / "b").rglob("*.npy"))   # said before any shard is computed


# ============================================================================ the warmup
def test_warmup_that_diverges_is_exit_2_naming_the_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    rc, line = run_cli(capsys, ["warmup", "--model", "tiny", "--data", "builtin:pool", "--limit", "40",
                                "--fraction", "0.5", "--epochs", "2", "--batch-size", "5", "--grad-accum", "1",
                                "--max-length", "64", "--lr", "1e30", "--out", tmp_path / "w"])
    assert rc == 2, line
    assert re.search(r"warmup .*/w: training diverged at step \d+ of 8 \(epoch \d, learning rate", line), line
    assert "--lr" in line and not (tmp_path / "w" / "sidecar.json").exists()
    # one step only: its loss is finite, the weights it leaves (~1e30) are not usable
    rc, line = run_cli(capsys, ["warmup", "--model", "tiny", "--data", "builtin:pool", "--limit", "40", "--epochs", "1",
                                "--lr", "1e30", "--max-length", "64", "--out", tmp_path / "w1"])
    assert rc == 2 and re.search(r"/w1: the weights after its last step give a loss of (nan|inf)", line), line
    assert "--lr" in line
    assert not (tmp_path / "w1" / "sidecar.json").exists()


def test_a_checkpoint_with_nan_weights_is_refused(warm, tmp_path):
    from safetensors.torch import load_file, save_file

    _ws, _lm, _recs, w = warm
    d = tmp_path / "w"
    shutil.copytree(w.dir, d)
    f = d / "epoch-1" / "adapter.safetensors"
    t = load_file(str(f))
    k = sorted(t)[0]
    t[k][0, 0] = float("inf")
    save_file(t, str(f))
    with pytest.raises(NonFiniteError, match=r"epoch-1/adapter\.safetensors \(epoch 1\) holds NaN or inf .*--lr"):
        check_finite_checkpoints(d, 1)


# ============================================================================ stores that do not fit together
@pytest.mark.parametrize("field,other", [
    ("checkpoint.warmup", {"checkpoint": {"warmup": "w2", "epoch": 2, "step": 6, "weight": 0.5}}),
    ("projector.seed", {"projector": {"family": "rademacher", "seed": 1, "dim": 8},
                        "checkpoint": {"warmup": "w", "epoch": 2, "step": 6, "weight": 0.5}}),
    ("kind", {"kind": "sgd", "checkpoint": {"warmup": "w", "epoch": 2, "step": 6, "weight": 0.5}}),
])
def test_pool_stores_of_different_extractions_are_not_combined(tmp_path, capsys, monkeypatch, field, other):
    a = _store(tmp_path / "a")
    b = _store(tmp_path / "b", _cfg(**other))
    with pytest.raises(ArtefactError, match=rf"pool stores a and b were not made by one extraction \({re.escape(field)}:"):
        FeatureSet.from_stores([a, b])
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    rc, line = run_cli(capsys, ["graph", "build", "--train-store", a.dir, "--train-store", b.dir, "--k", "3",
                                "--layout", "none"])
    assert rc == 2 and f"{field}:" in line, line
    # two checkpoints of ONE extraction combine
    c = _store(tmp_path / "c", _cfg(checkpoint={"warmup": "w", "epoch": 2, "step": 6, "weight": 0.5}))
    assert FeatureSet.from_stores([a, c]).dim == 8


@pytest.mark.parametrize("bad,what", [(np.nan, "NaN or inf"), (0.0, "all zeros")])
def test_graph_build_refuses_nan_or_zero_features_naming_the_store(tmp_path, capsys, monkeypatch, bad, what):
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    x[3] = bad
    d = _hand_made_store(tmp_path / "nanstore", x)
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    rc, line = run_cli(capsys, ["graph", "build", "--train-store", d, "--k", "3", "--layout", "none"])
    assert rc == 2 and f"gradient store {d}: 1 of 10 feature rows are {what}" in line and "'r3'" in line, line
    assert not (tmp_path / "ws" / "graphs").exists() or not any((tmp_path / "ws" / "graphs").iterdir())


def test_graph_and_walk_refuse_non_finite_arrays():
    from g2is_core.graph.knn import build_knn
    from g2is_core.graph.walk import core_knowledge, walk

    x = np.eye(6, 4, dtype=np.float32) + 0.1
    y = x.copy()
    x[2, 1] = np.inf
    with pytest.raises(NonFiniteError, match=r"graph features: 1 of 6 rows hold NaN or inf \(first: \[2\]\)"):
        build_knn(x, 2)
    z = y.copy()
    z[4] = 0
    with pytest.raises(NonFiniteError, match=r"train features of the walk: 1 of 6 rows are all zeros"):
        walk(z, core_knowledge(y[:3]), np.zeros((6, 2), dtype=np.int64), 2)


# ============================================================================ artefacts against their sha256
def test_store_replaced_after_its_sidecar_is_refused(tmp_path, capsys, monkeypatch):
    s = _store(tmp_path / "s")
    x = np.load(s.dir / "features.npy")
    np.save(s.dir / "features.npy", x[::-1].copy())      # same shape and dtype, other rows
    with pytest.raises(ArtefactError, match=r"features\.npy differs from the checksum in its sidecar"):
        GradientStore.open(s.dir)
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    rc, line = run_cli(capsys, ["graph", "build", "--train-store", s.dir, "--k", "3", "--layout", "none"])
    assert rc == 2 and f"{s.dir}: features.npy differs" in line


def test_replaced_adapter_of_the_same_shape_is_refused(warm, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file, save_file

    ws, _lm, _recs, w = warm
    d = tmp_path / "w"
    shutil.copytree(w.dir, d)
    f = d / "epoch-1" / "adapter.safetensors"
    save_file({k: v * 2 for k, v in load_file(str(f)).items()}, str(f))  # finite, same names and shapes
    assert load_warmup(d).checkpoint(1).path == d / "epoch-1"
    monkeypatch.setenv("G2IS_WORKSPACE", str(ws.root))
    rc, line = run_cli(capsys, ["grads", "--model", "tiny", "--data", "builtin:pool", "--limit", "8", "--warmup", d,
                                "--checkpoint", "1", "--dim", "16", "--out", tmp_path / "g"])
    assert rc == 2 and f"{d / 'epoch-1'}: adapter.safetensors differs from the checksum" in line, line


def test_verification_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    from g2is_core import workspace as wsm

    s = _store(tmp_path / "s")
    hashed = []
    real = wsm.hash_file
    monkeypatch.setattr(wsm, "hash_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    GradientStore.open(s.dir)
    assert hashed == []                                # marked when written: not hashed again
    (s.dir / "plan.json").write_text((s.dir / "plan.json").read_text())  # same bytes, a new write
    GradientStore.open(s.dir)
    assert hashed == ["plan.json"]


# ============================================================================ a model directory missing weights
def test_model_directory_missing_a_layer_is_refused(tmp_path, capsys, workspace):
    from safetensors.torch import load_file, save_file

    m, tok = tiny_llama()
    d = tmp_path / "m"
    m.save_pretrained(d)
    tok.save_pretrained(d)
    load_model(d)                                      # whole: loads
    t = load_file(str(d / "model.safetensors"))
    save_file({k: v for k, v in t.items() if ".layers.1." not in k}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelError, match=rf"{re.escape(str(d))}: the weight files do not hold the whole model: 9 weight "
                                         r"tensor\(s\) are missing \(model\.layers\.1\."):
        load_model(d)
    rc, line = run_cli(capsys, ["model", "info", d])
    assert rc == 2 and "are missing (model.layers.1." in line and str(d) in line
