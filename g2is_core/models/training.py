"""One supervised fine-tuning loop for every use in the project: the LESS warmup, head-study SFT
runs, and training on a selection. The project's own loop (not the transformers Trainer) because
we need the Adam moments keyed by parameter NAME at each checkpoint (LESS features), callbacks at
chosen steps (activation patterns during SFT), and an exact resume after kill -9.

Schedule: AdamW, linear warmup over ``warmup_ratio`` of the steps then linear decay to 0
(LESS: 3% warmup, peak 2e-5). Data order: a fresh permutation per epoch from (seed, epoch), so a
resumed run sees the same batches as an uninterrupted one.

Checkpoint layout (``<out>/``)::

    state.json                 progress: step, epoch, loss curve, config (written last, atomically)
    resume.safetensors         trainable params + Adam moments + RNG state at the last save
    epoch-<i>/adapter.safetensors, epoch-<i>/optimizer.safetensors, epoch-<i>/sidecar.json
"""
from __future__ import annotations

import json

import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import runtime
from ..data.encoding import Encoded, collate
from ..models import lm_ops
from ..linalg import NonFiniteError
from ..models.lora import lora_parameters
from ..progress import Progress, no_progress
from ..settings import (HALF_OPEN_UNIT, NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT,
                        SettingError, check_rules)
from ..workspace import atomic_path, read_json, write_json, write_sidecar


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings. Either ``epochs`` or ``max_steps`` bounds the run (max_steps wins if > 0)."""

    lr: float = 2e-5             # peak learning rate (LESS: 2e-5)
    epochs: int = 1
    max_steps: int = 0           # > 0: stop after this many optimizer steps (epochs then only shape the order)
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03   # LESS: 3% linear warmup
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool | str = False     # autocast matmuls to bf16 (AMX on CPU, tensor cores on GPU): true/false/auto,
                                 # decided by runtime.resolve_precision (a true without native bf16 runs fp32)
    save_every: int = 50         # resume checkpoint every N optimizer steps
    save_epochs: bool = False    # keep a named checkpoint (weights + Adam moments) at each epoch end

    def __post_init__(self) -> None:
        # a zero batch or epoch count used to end as a ZeroDivisionError mid-run (g2is_core/settings.py)
        check_rules(self, {"lr": POSITIVE_FLOAT, "epochs": POSITIVE_INT, "max_steps": NON_NEGATIVE_INT,
                           "batch_size": POSITIVE_INT, "grad_accum": POSITIVE_INT, "warmup_ratio": HALF_OPEN_UNIT,
                           "weight_decay": NON_NEGATIVE_FLOAT, "eps": POSITIVE_FLOAT,
                           "max_grad_norm": NON_NEGATIVE_FLOAT, "save_every": POSITIVE_INT})
        if len(self.betas) != 2:
            raise SettingError("betas", f"{self.betas!r} is not two numbers (beta1, beta2)")
        for b in self.betas:
            HALF_OPEN_UNIT.check(b, "betas")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def steps_per_epoch(n_examples: int, cfg: TrainConfig) -> int:
    return max(1, math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum)))


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    return cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch(n_examples, cfg) * cfg.epochs


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate used for optimizer step ``step`` (0-based): linear warmup then linear decay to 0."""
    warm = max(1, math.ceil(cfg.warmup_ratio * total)) if cfg.warmup_ratio > 0 else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def epoch_lr_weights(n_examples: int, cfg: TrainConfig) -> list[float]:
    """LESS checkpoint weights: mean learning rate during each epoch, normalised to sum 1.

    Computed from the same :func:`lr_at` the loop uses, so weights are never typed in.
    """
    spe = steps_per_epoch(n_examples, cfg)
    total = total_steps(n_examples, cfg)
    means = []
    for e in range(cfg.epochs):
        steps = range(e * spe, min((e + 1) * spe, total))
        means.append(sum(lr_at(s, total, cfg) for s in steps) / max(1, len(steps)))
    s = sum(means)
    return [m / s for m in means] if s > 0 else [1.0 / len(means)] * len(means)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


# ----------------------------------------------------------------------------- state I/O
def _state_tensors(model, opt) -> dict[str, Any]:
    """Trainable params and Adam moments keyed by parameter name (never by index)."""
    out: dict[str, Any] = {}
    for name, p in lora_parameters(model):
        out[f"param::{name}"] = p.detach().float().cpu().contiguous()
        st = opt.state.get(p, {})
        if "exp_avg" in st:
            out[f"exp_avg::{name}"] = st["exp_avg"].detach().float().cpu().contiguous()
            out[f"exp_avg_sq::{name}"] = st["exp_avg_sq"].detach().float().cpu().contiguous()
    return out


def save_checkpoint(path: Path, model, opt, extra: dict[str, Any] | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = _state_tensors(model, opt)
    tensors["rng::torch"] = torch.get_rng_state()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (extra or {}).items()})


def _resume_state(out: Path) -> dict[str, Any] | None:
    """The progress saved with ``out/resume.safetensors`` (its metadata; older runs: state.json)."""
    from safetensors import safe_open

    with safe_open(str(out / "resume.safetensors"), framework="pt") as f:
        meta = f.metadata() or {}
    if "state" in meta:
        return json.loads(meta["state"])
    return read_json(out / "state.json") if (out / "state.json").exists() else None


def _adamw(params, cfg: TrainConfig):
    """AdamW, fused where torch has a fused kernel for the device (CPU and CUDA since torch 2.4).

    Why: the per-tensor loop took 0.69 s per step on 135M parameters against 0.14 s fused (1 thread, EPYC;
    docs/heads.md), a fifth of a full fine-tuning step of the head study. Same update up to float rounding
    (~2e-7 on unit-scale weights after 20 steps).
    """
    import torch

    kw = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    try:
        return torch.optim.AdamW(params, **kw, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device / dtype without the kernel
        return torch.optim.AdamW(params, **kw)


def _load_params(path: Path, model) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy the trainable parameters saved in ``path`` into ``model``; returns (the file's tensors, the params)."""
    import torch
    from safetensors.torch import load_file

    t = load_file(str(path))
    params = dict(lora_parameters(model))
    missing = [n for n in params if f"param::{n}" not in t]
    if missing:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[0]}); delete it to restart")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(t[f"param::{name}"].to(p.dtype))
    return t, params


def load_trained(out_dir: str | Path, model) -> dict[str, Any]:
    """The weights of a finished :func:`train` run (``out_dir``) copied into ``model``, which has the same trainable
    parameters (LoRA attached with the run's settings, or unfrozen); returns the run's saved state. Refuses a run
    that stopped before its last step: its weights are not the trained model."""
    out = Path(out_dir)
    st = _resume_state(out) if (out / "resume.safetensors").exists() else None
    if st is None:
        raise ValueError(f"{out}: no training run saved here (resume.safetensors); train it first")
    if int(st["step"]) != int(st["total"]):
        raise ValueError(f"{out}: the run stopped at step {st['step']} of {st['total']}; finish it (run the "
                         "training again: it resumes) before measuring it")
    _load_params(out / "resume.safetensors", model)
    model.eval()
    return st


def load_checkpoint(path: Path, model, opt, step: int) -> None:
    import torch

    t, params = _load_params(path, model)
    with torch.no_grad():
        for name, p in params.items():
            if f"exp_avg::{name}" in t:
                fused = bool(opt.param_groups[0].get("fused"))  # the fused kernel keeps its step beside the param
                opt.state[p] = {"step": torch.tensor(float(step), device=p.device if fused else "cpu"),
                                "exp_avg": t[f"exp_avg::{name}"].to(p.device, p.dtype),
                                "exp_avg_sq": t[f"exp_avg_sq::{name}"].to(p.device, p.dtype)}
    torch.set_rng_state(t["rng::torch"])


def save_named_checkpoint(directory: Path, model, opt, info: dict[str, Any]) -> None:
    """An epoch checkpoint: adapter (trainable) weights and Adam moments by name, plus a sidecar."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    t = _state_tensors(model, opt)
    weights = {k.split("::", 1)[1]: v for k, v in t.items() if k.startswith("param::")}
    moments = {k: v for k, v in t.items() if not k.startswith("param::")}
    with atomic_path(directory / "adapter.safetensors") as tmp:
        save_file(weights, str(tmp))
    with atomic_path(directory / "optimizer.safetensors") as tmp:
        save_file(moments, str(tmp))
    write_sidecar(directory, "checkpoint", info)


# ----------------------------------------------------------------------------- the loop
StepCallback = Callable[[int, int, Any], None]  # (optimizer step done, samples seen, model)


@dataclass
class TrainResult:
    steps: int
    samples: int
    losses: list[dict[str, float]]
    out_dir: Path | None
    precision: dict[str, Any] = field(default_factory=dict)  # runtime.Precision.to_dict(): what ran, what was asked


def train(model, examples: Sequence[Encoded], cfg: TrainConfig, *, pad_id: int, out_dir: str | Path | None = None,
          callback: StepCallback | None = None, callback_steps: Sequence[int] = (), progress: Progress = no_progress,
          device: str | None = None) -> TrainResult:
    """Fine-tune the trainable parameters of ``model`` on ``examples``.

    ``callback(step, samples_seen, model)`` runs before training (step 0) and after each optimizer
    step listed in ``callback_steps``. With ``out_dir`` the run is resumable: started again with
    the same arguments it continues from its last save and ends with the same weights as an
    uninterrupted run (same data order, restored optimizer state and RNG).
    """
    import torch

    runtime.apply_thread_policy()
    if not examples:
        raise ValueError("no training examples; the selection or data file is empty")
    dev = device or next(model.parameters()).device.type
    # The one bf16 decision (runtime.resolve_precision): the config (state.json, resume check) holds what RUNS.
    precision = runtime.resolve_precision(cfg.bf16, dev, what="training")
    cfg = replace(cfg, bf16=precision.bf16)
    params = [p for _, p in lora_parameters(model)]
    if not params:
        raise ValueError("the model has no trainable parameters (attach LoRA or unfreeze it)")
    opt = _adamw(params, cfg)
    n = len(examples)
    spe = steps_per_epoch(n, cfg)
    total = total_steps(n, cfg)
    out = Path(out_dir) if out_dir else None
    step, losses = 0, []
    torch.manual_seed(cfg.seed)  # dropout and any sampling: same stream for the same seed
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "resume.safetensors").exists() and (st := _resume_state(out)) is not None:
            if st.get("config") != _jsonable(cfg.to_dict()) or st.get("n_examples") != n:
                raise ValueError(f"{out}: holds a run with other settings or data; use another output directory")
            step, losses = int(st["step"]), list(st["losses"])
            load_checkpoint(out / "resume.safetensors", model, opt, step)
            progress(step / total, f"resumed at step {step}/{total}")
    model.train()
    if step == 0 and callback:
        callback(0, 0, model)
    micro = cfg.batch_size
    while step < total:
        epoch, in_epoch = divmod(step, spe)
        order = epoch_order(n, cfg.seed, epoch)
        start = in_epoch * micro * cfg.grad_accum
        lr = lr_at(step, total, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        step_loss, n_micro, n_seen = 0.0, 0, 0
        for a in range(cfg.grad_accum):
            idx = order[start + a * micro: start + (a + 1) * micro]
            if not idx:
                break
            batch = collate([examples[i] for i in idx], pad_id, dev)
            with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = lm_ops.token_mean_loss(model, batch)  # = model(**batch).loss, logits at labels only
            (loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach())
            n_seen += len(idx)
            n_micro += 1
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        # A NaN/inf loss or gradient would make every weight NaN at opt.step() and the run would end "fine";
        # stop before the step (the last resume checkpoint stays finite).
        if not math.isfinite(step_loss) or (grad_norm is not None and not bool(torch.isfinite(grad_norm))):
            what = f"loss {step_loss / max(1, n_micro):.4g}" if not math.isfinite(step_loss) else "gradient norm inf/NaN"
            raise NonFiniteError(f"training diverged at step {step + 1} of {total} (epoch {epoch + 1}, learning rate "
                                 f"{lr:.3g}): {what}; nothing of this step was kept. Lower the learning rate (--lr) "
                                 "and run again")
        opt.step()
        step += 1
        samples = (losses[-1]["samples"] if losses else 0) + n_seen
        losses.append({"step": step, "samples": samples, "loss": step_loss / max(1, n_micro), "lr": lr})
        progress(step / total, f"step {step}/{total} loss {losses[-1]['loss']:.4f}")
        if callback and step in callback_steps:
            model.eval()
            callback(step, samples, model)
            model.train()
        if out is not None:
            if cfg.save_epochs and step % spe == 0:
                save_named_checkpoint(out / f"epoch-{step // spe}", model, opt,
                                      {"epoch": step // spe, "step": step, "train": cfg.to_dict()})
            if step % cfg.save_every == 0 or step == total:
                # The progress travels INSIDE the checkpoint: a kill between two renames can then
                # never pair step-S weights with a step-S' loss curve. state.json is a readable copy.
                state = {"step": step, "total": total, "n_examples": n, "config": cfg.to_dict(), "losses": losses,
                         "precision": precision.to_dict()}
                save_checkpoint(out / "resume.safetensors", model, opt, {"step": step, "state": json.dumps(_jsonable(state))})
                write_json(out / "state.json", state)
    model.eval()
    return TrainResult(step, losses[-1]["samples"] if losses else 0, losses, out, precision.to_dict())


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d))
