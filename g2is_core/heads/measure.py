"""One task's activation pattern on one model, the unit behind ``g2is heads pattern``: load the model,
draw ``n`` records of a built-in task, measure (here or over Ray workers), and save the [layer, head]
pattern with a JSON sidecar that records what produced it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..progress import Progress, no_progress
from .patterns import ActivationPattern


def task_pattern(model: str, task: str, n: int, *, seed: int = 0, split: str = "train", route: str = "gate",
                 batch_size: int = 8, backend: str = "local", ray_config: Any = None,
                 progress: Progress = no_progress) -> tuple[ActivationPattern, dict[str, Any]]:
    """The activation pattern of ``n`` ``split`` records of built-in ``task`` on ``model`` (a model spec), and
    the model's identity. ``backend="ray"`` spreads the same batches over Ray workers (equal per-sample
    scores; ``ray_config`` is a :class:`~g2is_core.features.ray_backend.RayConfig`)."""
    from ..data.encoding import encode_all
    from ..data.tasks import make_task_records
    from ..models.loading import load_model

    lm = load_model(model, progress=lambda f, m: progress(0.2 * f, m))
    enc, _ = encode_all(lm.tokenizer, make_task_records(task, n, seed, split))
    step = lambda f, m: progress(0.2 + 0.8 * f, m)  # noqa: E731
    if backend == "ray":
        from ..features.ray_backend import RayConfig
        from .ray import activation_pattern_ray

        ap = activation_pattern_ray(model, enc, pad_id=lm.tokenizer.pad_token_id, route=route, batch_size=batch_size,
                                    progress=step, ray_config=ray_config or RayConfig())
    elif backend == "local":
        from .patterns import activation_pattern

        ap = activation_pattern(lm.model, enc, pad_id=lm.tokenizer.pad_token_id, route=route, batch_size=batch_size,
                                progress=step)
    else:
        raise ValueError(f"backend {backend!r}: use local or ray")
    return ap, lm.identity


def save_pattern(ap: ActivationPattern, out: str | Path, meta: dict[str, Any]) -> Path:
    """``out`` (.npy, [layer, head]) and ``out`` with suffix .json: ``meta`` plus the shape, KV heads and route."""
    from ..workspace import write_json, write_npy

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_npy(out, ap.values)
    write_json(out.with_suffix(".json"), {"kind": "activation-pattern", **meta, "route": ap.route,
                                          "shape": list(ap.values.shape), "n_kv_heads": ap.n_kv_heads})
    return out
