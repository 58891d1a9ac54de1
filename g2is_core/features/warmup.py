"""The LESS warmup (section 2.1): LoRA SFT on a random fraction of the pool, one checkpoint per epoch.

Method: ``shared/spec/g2is_method.md`` section 2 (LESS, Xia et al. 2024). Design choices: ``docs/gradients.md``.

Each checkpoint i keeps the adapter weights and the Adam moments (m_i, v_i) by parameter name; the
train features at checkpoint i use them (:func:`g2is_core.features.projection.adam_direction`). The
checkpoint weight w_i is the mean learning rate of epoch i under the loop's own schedule, normalised
over the epochs (LESS weights the per-checkpoint cosines by it).

Layout (``<workspace>/warmup/<key>/``): ``epoch-<i>/{adapter,optimizer}.safetensors`` (written by
:func:`g2is_core.models.training.train`) and a sidecar with the settings, the subset and the
checkpoints with their weights.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import runtime
from ..data.encoding import TEMPLATES
from ..data.records import Record
from ..linalg import NonFiniteError
from ..models.training import TrainConfig, epoch_lr_weights, lr_at, steps_per_epoch, total_steps, train
from ..models.lora import LESS_LORA, SMALL_LORA, LoraSettings, attach_lora
from ..progress import Progress, no_progress
from ..settings import FRACTION, POSITIVE_INT, check_choice, check_rules
from ..workspace import Workspace, exclusive_lock, hash_config, read_sidecar, verify_artefact, write_sidecar

if TYPE_CHECKING:  # annotations only: loading pulls in the download machinery
    from ..models.loading import LoadedModel


@dataclass(frozen=True)
class WarmupConfig:
    """LESS warmup (section 2.1): LoRA SFT on a random ``fraction`` of the pool, one checkpoint per epoch.

    Defaults are the scaled-down ones for the ~135M default model (docs/gradients.md): LoRA r=8,
    alpha=32 (LESS's alpha/r = 4), everything else as LESS. :data:`LESS_WARMUP` has the paper's.
    """

    fraction: float = 0.05       # LESS: 5% of the pool
    epochs: int = 4              # LESS: 4 epochs, a checkpoint after each
    lr: float = 2e-5             # LESS: peak 2e-5, linear decay
    warmup_ratio: float = 0.03   # LESS: 3% linear warmup
    batch_size: int = 8
    grad_accum: int = 4          # effective batch 32 (LESS reference scripts)
    max_length: int = 512
    template: str = "chat"
    seed: int = 0                # subset draw, data order, LoRA init
    bf16: bool = False           # autocast to bf16; a true without native bf16 runs fp32 (runtime.resolve_precision)
    lora: LoraSettings = SMALL_LORA

    def __post_init__(self) -> None:
        check_rules(self, {"fraction": FRACTION, "max_length": POSITIVE_INT})
        check_choice(self.template, "template", TEMPLATES)
        self.train_config()  # lr, epochs, batch_size, grad_accum, warmup_ratio: TrainConfig's rules, same names

    def train_config(self) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, grad_accum=self.grad_accum,
                           warmup_ratio=self.warmup_ratio, seed=self.seed, bf16=self.bf16, save_epochs=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LESS_WARMUP = WarmupConfig(lora=LESS_LORA, batch_size=1, grad_accum=32)


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    step: int
    weight: float                # LESS checkpoint weight: mean LR of the epoch, normalised over epochs
    path: Path                   # directory holding adapter.safetensors and optimizer.safetensors


@dataclass
class Warmup:
    """A finished warmup: its directory, settings and checkpoints (with computed weights)."""

    dir: Path
    config: WarmupConfig
    model_key: str
    checkpoints: list[Checkpoint]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.dir.name

    def checkpoint(self, epoch: int) -> Checkpoint:
        for c in self.checkpoints:
            if c.epoch == epoch:
                return c
        raise ValueError(f"warmup {self.key} has no checkpoint for epoch {epoch}; it has epochs "
                         f"{', '.join(str(c.epoch) for c in self.checkpoints)}")


def warmup_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Indices of the random warmup fraction (at least one), in pool order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"warmup fraction {fraction} must be in (0, 1]")
    k = max(1, round(fraction * n))
    return sorted(random.Random(f"warmup:{seed}").sample(range(n), k))


def checkpoint_weights(n_examples: int, cfg: WarmupConfig) -> list[float]:
    """w_i: the mean learning rate of epoch i under the loop's own schedule, normalised to sum 1."""
    return epoch_lr_weights(n_examples, cfg.train_config())


def warmup(loaded: LoadedModel, records: Sequence[Record], cfg: WarmupConfig = WarmupConfig(), *,
           data_hash: str, workspace: Workspace | None = None, out_dir: str | Path | None = None,
           progress: Progress = no_progress) -> Warmup:
    """Run (or resume, or reuse) the LESS warmup on a random ``cfg.fraction`` of ``records``.

    Writes ``<workspace>/warmup/<key>/epoch-<i>/{adapter,optimizer}.safetensors`` via
    :func:`g2is_core.models.training.train` (Adam moments keyed by parameter name) and a sidecar with the
    checkpoint weights computed from the schedule. Leaves LoRA attached to ``loaded.model`` when it trained here.
    """
    ws = workspace or Workspace()
    # Keyed by the precision that RUNS (a bf16 request that falls back keys the fp32 warmup); the request is
    # recorded in the sidecar.
    precision = runtime.resolve_precision(cfg.bf16, next(loaded.model.parameters()).device.type, what="the warmup")
    cfg = replace(cfg, bf16=precision.bf16)
    ident = {"model": loaded.key, "data_hash": data_hash, "n_pool": len(records), "warmup": cfg.to_dict()}
    d = Path(out_dir) if out_dir else ws.dir("warmup", hash_config(ident))
    if ws.is_complete(d):
        progress(1.0, f"warmup {d.name} already done")
        return load_warmup(d)
    # Several `bench features` / `bench run` processes start together: one trains, the others wait for it and read
    # its checkpoints (without the lock each trained the same warmup into the same folder)
    with exclusive_lock(d.with_name(d.name + ".lock"),
                        on_wait=lambda: progress(0.0, f"warmup {d.name}: another process is training it; waiting")):
        if ws.is_complete(d):
            progress(1.0, f"warmup {d.name} done by another process")
            return load_warmup(d)
        return _train_warmup(loaded, records, cfg, precision, data_hash, d, progress)


def _train_warmup(loaded, records, cfg, precision, data_hash, d: Path, progress) -> Warmup:
    """The warmup's training and sidecar (:func:`warmup`, under its lock)."""
    from ..data.encoding import encode_all

    idx = warmup_subset(len(records), cfg.fraction, cfg.seed)
    subset = [records[i] for i in idx]
    enc, rep = encode_all(loaded.tokenizer, subset, max_length=cfg.max_length, template=cfg.template)
    peft_model = attach_lora(loaded.model, cfg.lora)
    loaded.model = peft_model
    tcfg = cfg.train_config()
    try:
        res = train(peft_model, enc, tcfg, pad_id=loaded.tokenizer.pad_token_id, out_dir=d, progress=progress)
    except NonFiniteError as exc:
        raise NonFiniteError(f"warmup {d}: {exc}") from exc
    check_finite_checkpoints(d, cfg.epochs)
    check_final_loss(peft_model, enc, tcfg, loaded.tokenizer.pad_token_id, d)
    weights = checkpoint_weights(len(enc), cfg)
    spe = steps_per_epoch(len(enc), tcfg)
    total = total_steps(len(enc), tcfg)
    ckpts = [{"epoch": e + 1, "step": min((e + 1) * spe, total), "weight": w,
              "mean_lr": sum(lr_at(s, total, tcfg) for s in range(e * spe, min((e + 1) * spe, total)))
              / max(1, min((e + 1) * spe, total) - e * spe)}
             for e, w in enumerate(weights)]
    write_sidecar(d, "warmup", {"warmup": cfg.to_dict(), "train": tcfg.to_dict()},
                  inputs={"model": loaded.identity, "model_key": loaded.key, "data_hash": data_hash,
                          "n_pool": len(records), "n_rows": len(subset),
                          "subset_ids": [r.id for r in subset]},
                  extra={"checkpoints": ckpts, "truncation": rep.summary(), "precision": precision.to_dict(),
                         "final_loss": res.losses[-1]["loss"] if res.losses else None})
    return load_warmup(d)


def check_finite_checkpoints(directory: Path, epochs: int) -> None:
    """Every epoch's adapter and Adam moments hold finite numbers (a last step can overflow the weights with
    a finite loss: nothing after it would notice). Raises :class:`~g2is_core.linalg.NonFiniteError` naming
    the file and the epoch; the warmup is then not marked finished."""
    import torch
    from safetensors.torch import load_file

    for e in range(1, epochs + 1):
        for name in ("adapter.safetensors", "optimizer.safetensors"):
            f = directory / f"epoch-{e}" / name
            bad = [k for k, t in load_file(str(f)).items() if not bool(torch.isfinite(t).all())]
            if bad:
                raise NonFiniteError(f"warmup {directory}: {f.relative_to(directory)} (epoch {e}) holds NaN or inf "
                                     f"in {len(bad)} tensor(s) (first: {bad[0]}); the warmup diverged. Lower the "
                                     "learning rate (--lr) and run it again (with --out: into a new directory)")


def check_final_loss(model, enc, tcfg, pad_id: int, directory: Path) -> None:
    """The loss of the final weights on the first batch of the warmup's data is finite.

    Why: the loop checks each step's loss BEFORE its update, so the weights of the last step are never
    used by it; a last step can leave finite but absurd weights (``--lr 1e30`` on a one-step warmup gives
    adapters of 1e30 and NaN features later). One forward pass without gradients."""
    import math

    import torch

    from ..data.encoding import collate
    from ..models import lm_ops

    dev = next(model.parameters()).device.type
    model.eval()
    with torch.no_grad():
        loss = float(lm_ops.token_mean_loss(model, collate(list(enc[: tcfg.batch_size]), pad_id, dev)))
    if not math.isfinite(loss):
        raise NonFiniteError(f"warmup {directory}: the weights after its last step give a loss of {loss} on its own "
                             "data (the last step diverged); lower the learning rate (--lr) and run it again (with "
                             "--out: into a new directory)")


def load_warmup(directory: str | Path) -> Warmup:
    d = Path(directory)
    meta = read_sidecar(d)
    if meta.get("kind") == "warmup":
        verify_artefact(d, cache=True)  # each checkpoint folder is checked where it is used (extraction)
    if meta.get("kind") != "warmup":
        raise ValueError(f"{d} is not a warmup (its sidecar says {meta.get('kind')!r}); give a `g2is warmup` output")
    wc = dict(meta["config"]["warmup"])
    wc["lora"] = LoraSettings(**{**wc["lora"], "targets": tuple(wc["lora"]["targets"])})
    cfg = WarmupConfig(**wc)
    ckpts = [Checkpoint(c["epoch"], c["step"], c["weight"], d / f"epoch-{c['epoch']}") for c in meta["checkpoints"]]
    return Warmup(d, cfg, meta["inputs"]["model_key"], ckpts, meta)


def find_warmup(spec: str | Path, workspace: Workspace | None = None) -> Warmup:
    """A warmup by directory or by key (``<workspace>/warmup/<key>``)."""
    p = Path(spec).expanduser()
    if not p.is_dir():
        p = (workspace or Workspace()).root / "warmup" / str(spec)
    if not (p / "sidecar.json").exists():
        raise FileNotFoundError(f"no finished warmup at {spec}; run `g2is warmup` first (or give its directory)")
    return load_warmup(p)
