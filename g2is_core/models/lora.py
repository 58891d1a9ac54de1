"""LoRA: the adapter settings, their named presets (every LoRA default of the project is written here
once), attaching adapters with peft, and the trainable parameters in a fixed order.

For a target Linear W (q, k, v, o projections), LoRA adds y = W x + (alpha / r) * B (A x) with
A [r, in] (random init) and B [out, r] (zero init), so a fresh adapter leaves the model unchanged;
only A and B train (Hu et al. 2022).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..settings import HALF_OPEN_UNIT, POSITIVE_FLOAT, POSITIVE_INT, SettingError, check_rules


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings. The defaults are the LESS paper's (:data:`LESS_LORA`)."""

    r: int = 128                 # rank of A [r, in] and B [out, r] (LESS: 128)
    alpha: int = 512             # scaling alpha / r (LESS: 512, i.e. alpha / r = 4)
    dropout: float = 0.1         # dropout on the LoRA input during training (LESS: 0.1)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # module names that get adapters
    seed: int = 0                # the init of A (torch RNG, forked: the caller's RNG is untouched)

    def __post_init__(self) -> None:
        check_rules(self, {"r": POSITIVE_INT, "alpha": POSITIVE_FLOAT, "dropout": HALF_OPEN_UNIT})
        if isinstance(self.targets, str) or not self.targets:
            raise SettingError("targets", f"{self.targets!r}: give a list of module names, e.g. [q_proj, v_proj]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- presets
LESS_LORA = LoraSettings()  # the paper's (Xia et al. 2024): r 128, alpha 512, dropout 0.1 on q,k,v,o
# Scaled down for the ~135M default model, LESS's alpha/r = 4 kept: the LESS warmup's default
# (``WarmupConfig``; docs/gradients.md: the projection stays ~6% of the model's FLOPs).
SMALL_LORA = replace(LESS_LORA, r=8, alpha=32)
# Supervised fine-tuning on a selection (the loop's experiment default): SMALL_LORA without dropout,
# so a run is a deterministic function of its seed and data.
SFT_LORA = replace(SMALL_LORA, dropout=0.0)
# The head study's LoRA runs (heads/study.py ``StudyConfig``): rank 16, alpha 32, no dropout.
HEAD_STUDY_LORA = replace(SFT_LORA, r=16)


def attach_lora(model, settings: LoraSettings = LESS_LORA):
    """Wrap ``model`` with fresh LoRA adapters (seeded init; base weights frozen). Returns the PeftModel."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=list(settings.targets), bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return get_peft_model(model, cfg)


def lora_parameters(model) -> list[tuple[str, Any]]:
    """The trainable parameters in a fixed order (``named_parameters``): (name, tensor).

    After :func:`attach_lora` these are the LoRA A/B weights; for full fine-tuning, every unfrozen
    weight. The training loop, its checkpoints (keyed by these names) and the gradient features all
    read this one list.
    """
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def randomise_lora(model, generator, scale: float) -> None:
    """Fill every trainable (LoRA A and B) weight with ``scale`` x standard normal draws from ``generator``.

    For tests and benchmarks of the gradient path: a fresh adapter has B = 0, so dL/dA = 0 and half the
    features would be trivially zero. The generator is the caller's, so it can go on to draw Adam moments.
    """
    import torch

    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
