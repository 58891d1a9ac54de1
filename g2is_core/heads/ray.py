"""Activation patterns measured over Ray workers: the batches of :func:`~g2is_core.heads.patterns.activation_pattern`
spread over a cluster with the project's Ray plumbing (:mod:`g2is_core.features.ray_backend`: start-up,
task planning, one cached model per worker). Per-sample scores equal the single-process ones (same threads
and hardware); ``tests/model/test_distributed.py`` checks it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data.encoding import length_buckets
from ..features.ray_backend import RayConfig, init, plan_tasks, resources, worker_model
from ..progress import Progress, no_progress
from .patterns import ActivationPattern, activation_pattern


def _pattern_task(spec: str, model_dtype: str, device: str | None, buckets: list[list], pad_id: int, route: str,
                  batch_size: int, max_tokens: int, autocast: bool) -> dict[str, Any]:
    """(runs in a worker) Per-sample scores [len(bucket), L, H] of each bucket, measured as one batch.

    A bucket of ``length_buckets`` re-bucketed alone (in its own order) is that same single batch.
    """
    lm = worker_model(spec, model_dtype, device, "pattern")
    return {"n_kv": lm.n_kv_heads,
            "scores": [activation_pattern(lm.model, b, pad_id=pad_id, route=route, batch_size=batch_size,
                                          max_tokens=max_tokens, autocast=autocast).per_sample for b in buckets]}


def activation_pattern_ray(model_spec: str, examples: Sequence, *, pad_id: int, route: str = "gate",
                           batch_size: int = 8, max_tokens: int = 4096, autocast: bool = False,
                           model_dtype: str = "fp32", device: str | None = None,
                           ray_config: RayConfig = RayConfig(), progress: Progress = no_progress):
    """:func:`g2is_core.heads.patterns.activation_pattern` with its batches spread over Ray workers.

    The batches are the local function's own (``length_buckets`` over ALL examples, formed here),
    each measured whole by one worker, so per-sample scores equal the single-process ones
    (same threads and hardware) and the mean is taken here in the same order.
    """
    if not examples:
        raise ValueError("no samples to measure the activation pattern on")
    ray = init(ray_config)
    width, gpt = resources(ray, ray_config)
    batches = list(length_buckets(examples, max_tokens=max_tokens, max_batch=batch_size))
    groups = plan_tasks(list(range(len(batches))), width * max(1, ray_config.tasks_per_worker))
    remote = ray.remote(_pattern_task).options(num_gpus=gpt, num_cpus=1, max_retries=ray_config.max_retries)
    futs = {remote.remote(model_spec, model_dtype, device, [[examples[i] for i in batches[b]] for b in grp], pad_id,
                          route, batch_size, max_tokens, autocast): grp for grp in groups}
    per: np.ndarray | None = None
    left, done, n_kv = list(futs), 0, 0
    while left:
        ready, left = ray.wait(left, num_returns=1)
        for f in ready:
            out = ray.get(f)
            n_kv = out["n_kv"]
            for b, scores in zip(futs[f], out["scores"]):
                if per is None:
                    per = np.zeros((len(examples),) + scores.shape[1:], np.float32)
                per[batches[b]] = scores
                done += len(batches[b])
        progress(done / len(examples), f"activation pattern: {done}/{len(examples)} samples on {width} Ray workers")
    # The local function keeps float64 copies of float32 scores (an exact widening), so widening
    # the float32 per-sample scores back and averaging over the same axis gives the same values.
    return ActivationPattern(values=per.astype(np.float64).mean(0), per_sample=per, n_kv_heads=n_kv, route=route,
                             ids=tuple(e.id for e in examples),
                             info={"n_samples": len(examples), "autocast_bf16": autocast, "backend": "ray",
                                   "workers": width})
