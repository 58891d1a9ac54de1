"""The LESS random projection and the Adam direction: what turns a per-example gradient into a feature.

Method: ``shared/spec/g2is_method.md`` section 2 (LESS, Xia et al. 2024). Design choices: ``docs/gradients.md``.

For a per-example LoRA gradient g [P] at warmup checkpoint i:

    train  : Gamma = m'/sqrt(v'+eps), m' = b1*m_i + (1-b1)*g, v' = b2*v_i + (1-b2)*g^2 (no bias
             correction, as the reference code)                                       [P]
    target : Gamma = g
    x      = R^T Gamma / ||R^T Gamma||,   R in {+-1/sqrt(d)}^{P x d}                  [d]

Projection identity. R is defined by (seed, dim, block) alone: column block k of R^T (rows
[k*block, (k+1)*block) of R, i.e. the parameters at flattened positions in that range) is
``randint(0, 2, (width, dim), generator=Generator().manual_seed(h(seed, k)))*2-1`` divided by
sqrt(dim). Both extractors (:mod:`g2is_core.features.extract`) call :meth:`Projector.block`, so they
use the SAME matrix and their features agree up to float rounding (tested: cosine > 0.999 per
example in fp32, in practice 1 - 1e-6).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_DIM = 2048       # projection dim for the small model (papers: 8192 for 7B); see docs/gradients.md
PROJ_BLOCK = 4096        # parameters per generated block of R (part of the projector's identity)


@dataclass(frozen=True)
class ProjectorConfig:
    """The random projection's identity: features are comparable only under equal configs."""

    family: str = "rademacher"   # dense +-1/sqrt(dim) entries, generated blockwise from (seed, block index)
    dim: int = DEFAULT_DIM       # d: output dimension
    seed: int = 0                # the projection seed (LESS: fixed across train and target features)
    block: int = PROJ_BLOCK      # parameters per generated block; changing it changes the matrix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block_seed(seed: int, k: int) -> int:
    """h(seed, k) of the module doc: the torch generator seed of block k of R."""
    return int.from_bytes(hashlib.sha256(f"g2is-proj:{seed}:{k}".encode()).digest()[:8], "little") >> 1


class Projector:
    """x = R^T g for g in R^P, R in {+-1/sqrt(d)}^{P x d}, generated block by block (never whole)."""

    def __init__(self, cfg: ProjectorConfig, n_params: int):
        if cfg.family != "rademacher":
            raise ValueError(f"projector family {cfg.family!r} is not known; use 'rademacher'")
        if cfg.dim < 1 or cfg.block < 1:
            raise ValueError("projection dim and block must be positive")
        self.cfg, self.n_params = cfg, n_params
        self.n_blocks = math.ceil(n_params / cfg.block)
        self._cache: dict[int, Any] = {}
        # Keep generated blocks when the whole R is small (tiny test models); otherwise regenerate.
        self._cache_ok = n_params * cfg.dim * 4 <= 64 << 20

    def columns(self, k: int) -> slice:
        return slice(k * self.cfg.block, min((k + 1) * self.cfg.block, self.n_params))

    def block(self, k: int, dtype=None):
        """Rows ``columns(k)`` of R: [width, d], entries +-1/sqrt(d)."""
        import torch

        if k in self._cache:
            return self._cache[k]
        cols = self.columns(k)
        g = torch.Generator().manual_seed(_block_seed(self.cfg.seed, k))
        r = torch.randint(0, 2, (cols.stop - cols.start, self.cfg.dim), generator=g, dtype=torch.int8)
        out = r.to(dtype or torch.float32).mul_(2).sub_(1).mul_(1.0 / math.sqrt(self.cfg.dim))
        if self._cache_ok:
            self._cache[k] = out
        return out

    def dense(self):
        """The whole R [P, d] (tests and tiny models only)."""
        import torch

        return torch.cat([self.block(k) for k in range(self.n_blocks)])

    def project(self, g):
        """g [..., P] -> [..., d], one block at a time."""
        import torch

        out = torch.zeros(*g.shape[:-1], self.cfg.dim, dtype=torch.float32)
        for k in range(self.n_blocks):
            out += g[..., self.columns(k)].float() @ self.block(k)
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()


def adam_direction(g, m, v, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """LESS train-feature direction (no bias correction): (b1 m + (1-b1) g) / sqrt(b2 v + (1-b2) g^2 + eps)."""
    return (beta1 * m + (1 - beta1) * g) / (beta2 * v + (1 - beta2) * g * g + eps).sqrt()

