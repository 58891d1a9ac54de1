"""Ray backend: gradient extraction sharded across workers, and the Ray plumbing other folders reuse
(:func:`init`, :func:`plan_tasks`, :func:`worker_model`; the activation-pattern task is
:mod:`g2is_core.heads.ray`).

The unit of work is the store's own shard (rows ``[s * S, (s + 1) * S)``, :class:`~g2is_core.features.store.StoreWriter`).
A Ray task gets a contiguous run of pending shards and the records of those rows; it loads the
model once per worker process (cached), loads the warmup checkpoint, and for each shard computes
``extract(records[rows])`` -- exactly the call the local backend makes for that shard -- and
commits it with the store's atomic shard write. The driver then finalises the store as the local
backend does. Hence:

- **Equality.** Every shard is the same deterministic function of its rows in both backends
  (batches are formed inside a shard), so the merged store equals a single-process run bit for
  bit in fp32, given the same torch thread count (``threads``, default 1) and hardware.
- **Failure.** Tasks run with ``max_retries``: a worker that dies (killed, OOM, node lost) has its
  task re-run on any free worker. A shard file exists whole or not at all (atomic rename), the
  re-run skips shards already committed, and a shard written twice (a zombie attempt and its
  retry) is the same bytes under the same name: nothing is lost or duplicated.
- **Storage.** Workers write shards into the store directory and read the warmup checkpoint and
  the model from the workspace, so on a multi-node cluster the workspace must be on a filesystem
  every node mounts (NFS, Lustre, ...). On one machine nothing is needed.

Ray is an optional extra (``pip install -e ".[ray]"``) imported only here and only when the Ray
backend is asked for. Records travel to workers with Ray's own serialisation (transport only:
nothing pickled is ever stored).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..progress import Progress, no_progress

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run."""

    address: str | None = None   # None: start a local Ray cluster; "auto": the running one; "host:port" / "ray://..."
    workers: int = 0             # concurrent tasks (0: the cluster's GPUs if any, else its CPUs)
    local_cpus: int = 2          # CPUs of the local cluster started when no address is given
    gpus_per_task: float | None = None   # None: 1 when the cluster has GPUs, else 0
    threads: int = 1             # torch threads per task (G2IS_THREADS in the workers; equality needs the same)
    tasks_per_worker: int = 2    # row ranges per worker (balances uneven shards)
    max_retries: int = 3         # re-runs of a task whose worker died


def ray_module():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray backend needs Ray: install it with `pip install -e \".[ray]\"` (or `pip install "
                          "ray`), or use --backend local") from exc
    return ray


def init(cfg: RayConfig = RayConfig()):
    """Connect to (or start) Ray; returns the ``ray`` module. An already initialised Ray is reused.

    The workers get ``G2IS_THREADS``, ``OMP_NUM_THREADS`` and ``G2IS_WORKSPACE`` from this
    process (the workspace must be the same path on every node).
    """
    ray = ray_module()
    if ray.is_initialized():
        return ray
    from ..workspace import Workspace

    env = {"G2IS_THREADS": str(cfg.threads), "OMP_NUM_THREADS": str(cfg.threads), "OMP_WAIT_POLICY": "PASSIVE",
           "TOKENIZERS_PARALLELISM": "false", "G2IS_WORKSPACE": str(Workspace().root)}
    common = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "configure_logging": False}
    if cfg.address in (None, "", "local"):
        ray.init(num_cpus=cfg.local_cpus, num_gpus=0 if cfg.gpus_per_task == 0 else None, include_dashboard=False,
                 **common)
    else:
        ray.init(address=cfg.address, **common)
    return ray


def shutdown() -> None:
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def resources(ray, cfg: RayConfig) -> tuple[int, float]:
    """(concurrent tasks, GPUs per task) from the config and the cluster."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    gpt = cfg.gpus_per_task if cfg.gpus_per_task is not None else (1.0 if gpus else 0.0)
    width = cfg.workers or (int(gpus / gpt) if gpt else int(res.get("CPU", 1)))
    return max(1, width), gpt


def plan_tasks(pending: Sequence[int], n_tasks: int) -> list[list[int]]:
    """Cut the pending shard indices (ascending) into at most ``n_tasks`` contiguous runs of near-equal length."""
    pending = list(pending)
    n = max(1, min(n_tasks, len(pending)))
    cuts = np.linspace(0, len(pending), n + 1).round().astype(int)
    return [pending[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


# ----------------------------------------------------------------------------- worker side
_MODEL: dict[str, Any] = {}   # one cached model per worker process: {"key": ..., "loaded": LoadedModel}


def worker_model(spec: str, model_dtype: str, device: str | None, purpose: str):
    """The worker's model, loaded once. ``purpose`` keeps a LoRA-wrapped extraction model apart from
    the plain model the activation pattern measures."""
    from ..models.loading import load_model

    key = f"{spec}|{model_dtype}|{device}|{purpose}"
    if _MODEL.get("key") != key:
        _MODEL.clear()
        _MODEL.update(key=key, loaded=load_model(spec, dtype=model_dtype, device=device))
    return _MODEL["loaded"]


def _model_info(spec: str, model_dtype: str, device: str | None, lora) -> dict[str, Any]:
    """(runs in a worker) The model's identity, key and LoRA layout, so the driver never loads the weights."""
    from .. import runtime
    from .extract import lora_layout, prepare_model

    runtime.apply_thread_policy()
    lm = worker_model(spec, model_dtype, device, "grads")
    layout = lora_layout(prepare_model(lm, lora))
    return {"identity": lm.identity, "key": lm.key, "layout": layout.to_dict()}


def _extract_task(spec: str, model_dtype: str, device: str | None, warmup_dir: str, epoch: int, cfg, proj,
                  method: str, store_dir: str, shards: list[int], records: list, row0: int,
                  crash_marker: str | None = None) -> dict[str, list[int]]:
    """(runs in a worker) Compute and commit ``shards`` (records = rows ``row0 ..``); skip committed ones.

    ``crash_marker`` (tests): on the first attempt (marker absent) the worker creates the marker and
    dies with ``os._exit`` after computing its second shard and before committing it.
    """
    from .. import runtime
    from .extract import extract, load_checkpoint_into, lora_layout, prepare_model
    from .projection import Projector
    from .store import StoreWriter
    from .warmup import load_warmup

    runtime.apply_thread_policy()
    lm = worker_model(spec, model_dtype, device, "grads")
    w = load_warmup(warmup_dir)
    model = prepare_model(lm, w.config.lora)
    layout = lora_layout(model)
    moments = load_checkpoint_into(model, w.checkpoint(epoch), layout)
    if cfg.kind == "sgd":
        moments = None
    projector = Projector(proj, layout.total)
    writer = StoreWriter.attach(store_dir)
    computed, skipped = [], []
    for j, s in enumerate(shards):
        if writer.is_committed(s):  # committed by an earlier attempt of this task
            skipped.append(s)
            continue
        r = writer.rows(s)
        feats = extract(model, lm.tokenizer, records[r.start - row0: r.stop - row0], cfg, projector,
                        moments=moments, method=method)
        if crash_marker and j >= 1 and not os.path.exists(crash_marker):
            Path(crash_marker).write_text(f"killed before committing shard {s}\n")
            os._exit(1)
        writer.write_shard(s, feats)
        computed.append(s)
    return {"computed": computed, "skipped": skipped}


# ----------------------------------------------------------------------------- driver side
def extract_store_ray(model_spec: str, records: Sequence, warmup, epoch: int, cfg=None, proj=None, *,
                      data_hash: str, data_source: str = "", method: str = "fast", dtype: str = "fp16",
                      shard_rows: int = 128, workspace=None, out_dir: str | Path | None = None,
                      model_dtype: str = "fp32", device: str | None = None, ray_config: RayConfig = RayConfig(),
                      progress: Progress = no_progress, crash_marker: str | None = None):
    """:func:`g2is_core.features.extract.extract_store` on Ray workers; the same store, rows and directory.

    ``model_spec`` is what :func:`g2is_core.models.loading.load_model` takes ("default", "tiny", a path):
    each worker loads the model itself. Returns the finished :class:`~g2is_core.features.store.GradientStore`;
    its sidecar records ``distributed`` (backend, tasks, workers, shards re-done after a failure).
    """
    from ..models.loading import LoadedModel
    from .extract import FeatureConfig, store_config
    from .projection import ProjectorConfig
    from .store import LOCK, SIDECAR, GradientStore, StoreWriter, store_lock
    from ..workspace import Workspace, hash_config

    cfg = cfg or FeatureConfig()
    proj = proj or ProjectorConfig()
    ws = workspace or Workspace()
    ray = init(ray_config)
    width, gpt = resources(ray, ray_config)
    opts = {"num_gpus": gpt, "num_cpus": 1, "max_retries": ray_config.max_retries}
    info = ray.get(ray.remote(_model_info).options(**opts).remote(model_spec, model_dtype, device, warmup.config.lora))
    if warmup.model_key != info["key"]:
        raise ValueError(f"warmup {warmup.key} was trained on another model ({warmup.model_key}) than {model_spec!r} "
                         f"({info['key']}); give the warmup's model or run a new warmup")
    ckpt = warmup.checkpoint(epoch)
    shell = LoadedModel(None, None, info["identity"])
    config = store_config(shell, warmup, ckpt, cfg, proj, method, dtype)
    d = Path(out_dir) if out_dir else ws.dir("grads", hash_config({**config, "data_hash": data_hash,
                                                                    "shard_rows": shard_rows}))
    if (d / SIDECAR).exists():
        return GradientStore.open(d)
    d.mkdir(parents=True, exist_ok=True)
    with store_lock(d):  # one writer per store (the workers commit under the driver's lock)
        if (d / SIDECAR).exists():
            return GradientStore.open(d)
        ids = [r.id for r in records]
        writer = StoreWriter(d, config, ids, proj.dim, dtype, shard_rows)
        writer.check_shards()  # a damaged shard is pending again
        groups = plan_tasks(writer.pending(), width * max(1, ray_config.tasks_per_worker))
        remote = ray.remote(_extract_task).options(**opts)
        futures = {}
        for grp in groups:
            a, b = writer.rows(grp[0]).start, writer.rows(grp[-1]).stop
            fut = remote.remote(model_spec, model_dtype, device, str(warmup.dir), epoch, cfg, proj, method, str(d), grp,
                                list(records[a:b]), a, crash_marker)
            futures[fut] = grp
        t0, n = time.time(), len(ids)
        results, left = [], list(futures)
        while left:
            ready, left = ray.wait(left, num_returns=1, timeout=2.0)
            results += ray.get(ready)
            done = sum(len(writer.rows(s)) for s in writer.committed())
            progress(done / max(1, n), f"epoch {epoch}: {done}/{n} rows on {width} Ray workers, "
                                       f"{done / max(1e-9, time.time() - t0):.2f} samples/s")
        computed = sorted(s for r in results for s in r["computed"])
        if len(computed) != len(set(computed)):
            raise RuntimeError(f"{d}: a shard was computed twice by successful tasks; this is a bug")
        store = writer.finalize({"data_hash": data_hash, "data": data_source, "warmup": warmup.key,
                                 "n_params": info["layout"]["n_params"]},
                                extra={"layout": info["layout"],
                                       "distributed": {"backend": "ray", "workers": width, "tasks": len(groups),
                                                       "gpus_per_task": gpt,
                                                       "skipped_on_retry": sorted(s for r in results for s in r["skipped"])}})
        (d / LOCK).unlink(missing_ok=True)
    progress(1.0, f"epoch {epoch}: {n} rows in {store.dir.name} (Ray, {width} workers)")
    return store
