"""Fault injection: kill -9 in the middle of each long step, disk full mid-write, and concurrent writers.

Each kill test runs the real ``g2is`` command in a child process on the tiny model / built-in data
and SIGKILLs it part-way, then runs the same command again and compares the result with an
uninterrupted run. Two ways to choose the moment:

- ``poll``: wait until a partial artefact appears on disk, then ``kill -9`` (a real, racy kill);
- ``G2IS_TEST_KILL=before:N`` / ``after:N``: the child SIGKILLs itself just before / just after
  its N-th ``os.replace`` (every artefact file lands by an atomic rename), so the kill falls at
  an exact point between two files of one artefact, the worst place for a reader.

Extraction (``g2is grads``) is covered by tests/model/test_store.py::test_kill_9_resume_gives_the_uninterrupted_rows.
"""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from g2is_core import cli
from g2is_core import workspace as ws_mod
from g2is_core.workspace import PROJECT_ROOT, Workspace, verify_artefact

# The child: g2is's main with os.replace wrapped to SIGKILL itself at the chosen rename.
CHILD = r"""
import os, signal, sys
spec = os.environ.get("G2IS_TEST_KILL")
if spec:
    when, n = spec.split(":"); n = int(n); seen = [0]; real = os.replace
    def replace(a, b, *args, **kw):
        seen[0] += 1
        if when == "before" and seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real(a, b, *args, **kw)
        if when == "after" and seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
from g2is_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def child(argv: list, workspace: Path, kill: str | None = None, poll=None, timeout: float = 240) -> int:
    """Run ``g2is ARGV`` in a child; with ``poll`` (a callable), SIGKILL it once poll() is true.

    Returns the child's exit code (-9 when killed)."""
    env = {**os.environ, "G2IS_THREADS": "1", "OMP_NUM_THREADS": "1", "G2IS_WORKSPACE": str(workspace)}
    env.pop("G2IS_TEST_KILL", None)
    if kill:
        env["G2IS_TEST_KILL"] = kill
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, argv)], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if poll is not None:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline and not poll():
                time.sleep(0.02)
            assert proc.poll() is None, f"the command ended before the kill point:\n{proc.stderr.read()[-2000:]}"
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def count_replaces(monkeypatch) -> list[int]:
    """Count os.replace calls in this process (how many files an uninterrupted run lands)."""
    seen = [0]
    real = os.replace

    def replace(a, b, *args, **kw):
        seen[0] += 1
        return real(a, b, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def run_here(argv: list, workspace: Path, monkeypatch) -> None:
    monkeypatch.setenv("G2IS_WORKSPACE", str(workspace))
    monkeypatch.setenv("G2IS_THREADS", "1")
    assert cli.main([str(a) for a in argv]) == 0


def no_temp_files_listed(root: Path) -> None:
    """Finished artefacts only: every folder with a sidecar matches its checksums."""
    for side in root.rglob("sidecar.json"):
        verify_artefact(side.parent)


# ============================================================================ walk
@pytest.fixture(scope="module")
def feature_files(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("walkfeats")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    x = np.concatenate([c + 0.3 * rng.normal(size=(40, 16)) for c in centres]).astype(np.float32)
    y = (centres[0] + 0.3 * rng.normal(size=(5, 16))).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return d / "x.npy", d / "y.npy"


def _walk_argv(feature_files, out: Path, ratio: str = "0.1") -> list:
    x, y = feature_files
    return ["walk", "--train-features", x, "--target-features", y, "--ratio", ratio, "--k", "8", "--out", out]


def test_walk_killed_between_files_then_rerun(feature_files, tmp_path, monkeypatch):
    seen = count_replaces(monkeypatch)
    run_here(_walk_argv(feature_files, tmp_path / "full"), tmp_path / "ws", monkeypatch)
    n = seen[0]
    assert n >= 3                                                   # ids, trajectory, ..., sidecar last
    monkeypatch.undo()
    out = tmp_path / "killed"
    for kill in (f"before:{n}",):        # just before the sidecar (after:1 is in the rewrite test below)
        assert child(_walk_argv(feature_files, out), tmp_path / "ws", kill=kill) == -signal.SIGKILL
        assert not (out / "sidecar.json").exists()                  # unfinished, and says so
        with pytest.raises(FileNotFoundError, match="not a finished artefact"):
            verify_artefact(out)
    # a kill before a rename leaves at most a hidden temp file, never a torn file under a final name
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.iterdir()
               if p.name not in ("selected_ids.json", "trajectory.parquet", "core_components.npy"))
    run_here(_walk_argv(feature_files, out), tmp_path / "ws", monkeypatch)
    verify_artefact(out)
    full_ids = json.loads((tmp_path / "full" / "selected_ids.json").read_text())
    assert json.loads((out / "selected_ids.json").read_text()) == full_ids
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(out / "trajectory.parquet"),
                                  pd.read_parquet(tmp_path / "full" / "trajectory.parquet"))


def test_interrupted_rewrite_of_a_finished_walk_is_detected(feature_files, tmp_path, monkeypatch):
    """A kill while a finished folder is rewritten in place (same --out, other settings) leaves the
    old sidecar beside a new file; the sidecar's checksums expose the mix."""
    out = tmp_path / "w"
    run_here(_walk_argv(feature_files, out), tmp_path / "ws", monkeypatch)
    verify_artefact(out)
    assert child(_walk_argv(feature_files, out, ratio="0.3"), tmp_path / "ws", kill="after:1") == -signal.SIGKILL
    with pytest.raises(ValueError, match="differs from the checksum"):
        verify_artefact(out)
    run_here(_walk_argv(feature_files, out, ratio="0.3"), tmp_path / "ws", monkeypatch)
    assert len(json.loads((out / "selected_ids.json").read_text())) == 36
    verify_artefact(out)


# ============================================================================ graph build
@pytest.fixture(scope="module")
def pool_stores(tmp_path_factory):
    """A pool store and a target store of random features (no model): what `g2is grads` leaves."""
    from g2is_core.data.spec import DataSpec
    from g2is_core.features.store import write_store

    d = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(1)
    pool = [r.id for r in DataSpec.parse("builtin:pool").load().records]
    target = [r.id for r in DataSpec.parse("builtin:targets:add_reverse").load().records]
    cfg = {"model_key": "tiny", "lora": {"r": 4}, "projector": {"family": "rademacher", "seed": 0, "dim": 16},
           "checkpoint": {"warmup": "w", "epoch": 1, "step": 3, "weight": 1.0}}
    a = write_store(d / "pool", {**cfg, "kind": "adam"}, pool, 16,
                    lambda r: rng.normal(size=(len(r), 16)).astype(np.float32), inputs={"data_hash": "p"},
                    dtype="fp32", shard_rows=2048)
    b = write_store(d / "target", {**cfg, "kind": "sgd"}, target, 16,
                    lambda r: rng.normal(size=(len(r), 16)).astype(np.float32), inputs={"data_hash": "t"},
                    dtype="fp32", shard_rows=2048)
    return a.dir, b.dir


def _graph_argv(stores) -> list:
    return ["graph", "build", "--train-store", stores[0], "--target-store", stores[1], "--pool", "builtin:pool",
            "--k", "8", "--layout", "pca"]


@pytest.mark.slow
def test_graph_build_killed_before_its_sidecar_then_rerun(pool_stores, tmp_path, monkeypatch):
    from g2is_core.graph.knn import InstructionGraph

    seen = count_replaces(monkeypatch)
    run_here(_graph_argv(pool_stores), tmp_path / "full", monkeypatch)
    n = seen[0]
    monkeypatch.undo()
    ws = tmp_path / "killed"
    assert child(_graph_argv(pool_stores), ws, kill=f"before:{n}") == -signal.SIGKILL
    # the graph's sidecar is the last file: the graph is not listed, what did land is whole
    assert Workspace(ws).list("graphs") == []
    no_temp_files_listed(ws)
    assert child(_graph_argv(pool_stores), ws, kill=f"before:{n // 2}") == -signal.SIGKILL
    no_temp_files_listed(ws)
    run_here(_graph_argv(pool_stores), ws, monkeypatch)
    (g1, m1), = Workspace(tmp_path / "full").list("graphs")
    (g2, m2), = Workspace(ws).list("graphs")
    assert g1.name == g2.name
    a, b = InstructionGraph.load(g1), InstructionGraph.load(g2)
    assert np.array_equal(a.neighbors, b.neighbors) and np.array_equal(a.sims, b.sims)
    no_temp_files_listed(ws)
    assert len(Workspace(ws).list("layouts")) == 1


# ============================================================================ warmup (training with checkpoints)
WARMUP = ["warmup", "--model", "tiny", "--data", "builtin:pool", "--limit", "96", "--fraction", "0.5", "--epochs",
          "2", "--batch-size", "4", "--grad-accum", "1", "--max-length", "64", "--r", "4"]


@pytest.mark.slow
def test_warmup_killed_mid_training_restarts_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    out = tmp_path / "killed"
    rc = child([*WARMUP, "--out", out], tmp_path / "ws",
               poll=lambda: (out / "epoch-1" / "adapter.safetensors").exists())   # after epoch 1, before the end
    assert rc == -signal.SIGKILL and not (out / "sidecar.json").exists()
    with pytest.raises(FileNotFoundError):
        from g2is_core.features.warmup import find_warmup

        find_warmup(out)
    run_here([*WARMUP, "--out", out], tmp_path / "ws", monkeypatch)
    run_here([*WARMUP, "--out", tmp_path / "full"], tmp_path / "ws", monkeypatch)
    for e in (1, 2):
        a = load_file(str(out / f"epoch-{e}" / "adapter.safetensors"))
        b = load_file(str(tmp_path / "full" / f"epoch-{e}" / "adapter.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    verify_artefact(out)
    a, b = json.loads((out / "sidecar.json").read_text()), json.loads((tmp_path / "full" / "sidecar.json").read_text())
    assert a["checkpoints"] == b["checkpoints"] and a["final_loss"] == b["final_loss"]


# ============================================================================ benchmark run (selection, training, eval)
SPEC = """name: fault-bench
model: tiny
pool: {builtin: {seed: 0, per_task: 6, distractors: 12}}
targets: [{name: add_reverse, eval_limit: 4, n_select: 4}]
methods: [random]
ratios: [0.2]
seeds: [0]
train: {lr: 0.001, epochs: 1, batch_size: 4, max_length: 48, save_every: 2, lora: {r: 2, alpha: 4, dropout: 0.0}}
eval: {max_new_tokens: 4}
"""


def _bench_rows(ws: Path) -> dict:
    from g2is_core.loop.registry import Registry

    return {(r["method"], r["ratio"]): (r["status"], r["metrics"]) for r in Registry.open(Workspace(ws)).rows()}


def _losses(ws: Path) -> list:
    return sorted(json.dumps(json.loads(p.read_text())["losses"]) for p in ws.glob("training/*/state.json"))


@pytest.mark.slow
def test_bench_killed_mid_training_resumes_to_the_same_table(tmp_path, monkeypatch):
    spec = _write(tmp_path / "spec.yaml", SPEC)
    seen = count_replaces(monkeypatch)
    run_here(["bench", "run", spec], tmp_path / "full", monkeypatch)
    n = seen[0]
    monkeypatch.undo()
    ws = tmp_path / "killed"
    # first a kill at an exact point half-way through, then a racy one once training has saved a checkpoint
    assert child(["bench", "run", spec], ws, kill=f"after:{n // 2}") == -signal.SIGKILL
    partial = _bench_rows(ws)
    assert any(s != "done" for s, _ in partial.values()) or len(partial) < 3
    child(["bench", "run", spec], ws, poll=lambda: len(list(ws.glob("training/*/resume.safetensors"))) >= 2)
    run_here(["bench", "run", spec], ws, monkeypatch)
    done, full = _bench_rows(ws), _bench_rows(tmp_path / "full")
    assert done == full and all(s == "done" for s, _ in done.values()) and len(done) == 3
    assert _losses(ws) == _losses(tmp_path / "full")
    no_temp_files_listed(ws)


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# ============================================================================ disk full
def test_disk_full_mid_write_keeps_the_previous_artefact(feature_files, tmp_path, monkeypatch):
    """ENOSPC while the bytes of a new version are written: the previous finished walk is intact."""
    out = tmp_path / "w"
    run_here(_walk_argv(feature_files, out), tmp_path / "ws", monkeypatch)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = ws_mod.atomic_path

    import contextlib

    @contextlib.contextmanager
    def full_disk(final):
        with real(final) as tmp:
            yield tmp
            with open(tmp, "r+b") as f:     # the write ran out of space half-way
                f.truncate(max(0, f.seek(0, 2) // 2))
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(ws_mod, "atomic_path", full_disk)
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    rc = cli.main([str(a) for a in _walk_argv(feature_files, out, ratio="0.3")])
    assert rc == 2                                              # one line: "No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    verify_artefact(out)


# ============================================================================ concurrency
def _registry_worker(path: str, worker: int, keys: list[str], q) -> None:
    from g2is_core.loop.registry import Registry

    reg = Registry(Path(path))
    won = []
    for k in keys:
        if reg.claim(k, "conc", "t", "m", 0.1, 0, {"k": k}):
            reg.finish(k, metrics={"by": worker}, timings={})
            won.append(k)
    q.put((worker, won))


def test_concurrent_writers_keep_the_registry_consistent(tmp_path):
    """Four processes race over the same 40 rows: each row is done exactly once, by one owner."""
    from g2is_core.loop.registry import Registry

    reg = Registry.open(Workspace(tmp_path))
    keys = [f"k{i:02d}" for i in range(40)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_registry_worker, args=(str(reg.path), w, keys[w:] + keys[:w], q)) for w in range(4)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    won = [k for ks in results.values() for k in ks]
    assert sorted(won) == keys                                   # every row once, none twice
    rows = reg.rows("conc")
    assert len(rows) == 40 and all(r["status"] == "done" for r in rows)
    for r in rows:                                               # the recorded owner is the one that won it
        assert r["config"]["k"] in results[r["metrics"]["by"]]
    with sqlite3.connect(reg.path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_two_sessions_saving_the_same_selection_keep_their_own_runs(tmp_path):
    """Two app sessions (threads of one server, as Streamlit runs them) save the same selection at once
    under their own names: two runs, each whole; saving under the same name twice gives one whole run."""
    import threading

    from g2is_core.data import tasks
    from g2is_core.selection import SelectionRun, list_runs, select

    ws = Workspace(tmp_path)
    pool = list(tasks.make_pool(0).records)
    targets = list(tasks.make_targets(0)["add_reverse"])
    sel = select("random", pool, targets, ratio=0.05, workspace=ws)
    errors = []

    def save(name):
        try:
            SelectionRun.save(sel, pool, ws, name=name)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in ("alice", "bob", "carol", "carol")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    runs = list_runs(ws)
    assert sorted(m.get("name") for _, m in runs) == ["alice", "bob", "carol"]
    for p, _ in runs:
        verify_artefact(p)
        assert SelectionRun.load(p).ids == sel.ids
