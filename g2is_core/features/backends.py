"""Which backend extracts: :func:`extract_checkpoints` runs :func:`~g2is_core.features.extract.extract_store`
in this process or :func:`~g2is_core.features.ray_backend.extract_store_ray` over Ray workers, once per
warmup checkpoint (the unit behind ``g2is grads``). Its own module because the Ray backend builds on
:mod:`.extract`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data.records import Record
from ..progress import Progress, no_progress
from .extract import FeatureConfig, extract_store
from .projection import ProjectorConfig
from .warmup import Warmup


def extract_checkpoints(model: str, records: Sequence[Record], warmup: Warmup, epochs: Sequence[int] | None,
                        cfg: FeatureConfig = FeatureConfig(), proj: ProjectorConfig = ProjectorConfig(), *,
                        data_hash: str, data_source: str = "", out_dir: str | Path | None = None,
                        device: str | None = None, backend: str = "local", ray_config: Any = None,
                        progress: Progress = no_progress, **store_kw: Any) -> list:
    """One store per warmup checkpoint (``epochs``; None = all), the unit behind ``g2is grads``.

    LESS takes features at every warmup checkpoint and sums the checkpoints' similarities weighted by
    their learning rates, so a pool or a target is extracted once per checkpoint. ``backend="ray"``
    shards each store over Ray workers (each loads ``model`` itself; the same rows, bit for bit);
    ``out_dir`` holds ``epoch-<e>`` folders when there are several checkpoints. ``store_kw`` goes to
    :func:`extract_store` (method, dtype, shard_rows, workspace).
    """
    from ..models.loading import load_model

    known = [c.epoch for c in warmup.checkpoints]
    epochs = known if epochs is None else list(epochs)
    missing = [e for e in epochs if e not in known]
    if missing:
        raise ValueError(f"warmup {warmup.key} has no checkpoint for epoch(s) {missing}; it has {known}")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend {backend!r}: use local or ray")
    if backend == "ray" and cfg.head_signatures:
        raise ValueError("head signatures are taken by the local backend only; drop --backend ray or "
                         "--head-signatures")
    if backend == "ray":
        from .ray_backend import RayConfig, extract_store_ray
    else:
        loaded = load_model(model, device=device, progress=progress)
    stores = []
    for e in epochs:
        out = None if not out_dir else Path(out_dir) / f"epoch-{e}" if len(epochs) > 1 else Path(out_dir)
        kw = dict(data_hash=data_hash, data_source=data_source, out_dir=out, progress=progress, **store_kw)
        if backend == "ray":
            stores.append(extract_store_ray(model, records, warmup, e, cfg, proj, device=device,
                                            ray_config=ray_config or RayConfig(), **kw))
        else:
            stores.append(extract_store(loaded, records, warmup, e, cfg, proj, **kw))
    return stores
