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

Sparse option (``kind="sparse"``, not the default). A sparse JL transform: the d outputs are cut
into s segments (segment t = outputs [floor(t*d/s), floor((t+1)*d/s))); parameter i maps to ONE
output in each segment with sign +-1/sqrt(s), so each row of R has s non-zeros. For block k the
generator seeded h(seed, k) draws, in this order, ``randint(0, 2**31-1, (width, s))`` (the offset
within each segment, taken modulo the segment's length) and ``randint(0, 2, (width, s))`` (the
signs). Like the dense R it is defined by (seed, dim, block, s) alone, so it is deterministic and
resumable; a different matrix from the dense one, so its stores are comparable only with sparse
stores (the kind and s enter the projector's identity, :meth:`ProjectorConfig.to_dict`).
Why segments: no two of a parameter's s entries collide, and then E<Rx, Ry> = <x, y> with a
variance no larger than the dense R's for every s; s only controls the tails for gradients whose
mass sits on a few coordinates (Kane & Nelson 2014). Measured distortion: ``docs/gradients.md``.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from ..settings import POSITIVE_INT, check_choice, check_rules

DEFAULT_DIM = 2048       # projection dim for the small model (papers: 8192 for 7B); see docs/gradients.md
PROJ_BLOCK = 4096        # parameters per generated block of R (part of the projector's identity)
SIGN_CACHE_MB = 1024     # memory for R's signs kept within a run (1 bit per entry; docs/gradients.md)
PROJ_KINDS = ("dense", "sparse")
# Non-zeros per parameter of the sparse R. 4, not 1 (CountSketch) or 8: the variance of <Rx, Ry> is
# the dense R's at any s (module doc), s only guards against gradients concentrated on few coordinates;
# the cost grows with s (a CSR product of width*s non-zeros per block) and is already ~1% of the dense
# GEMM at s=4, so a larger s buys tails nobody measured a need for. Distortion: docs/gradients.md.
SPARSE_S = 4


@dataclass(frozen=True)
class ProjectorConfig:
    """The random projection's identity: features are comparable only under equal configs."""

    family: str = "rademacher"   # dense +-1/sqrt(dim) entries, generated blockwise from (seed, block index)
    dim: int = DEFAULT_DIM       # d: output dimension
    seed: int = 0                # the projection seed (LESS: fixed across train and target features)
    block: int = PROJ_BLOCK      # parameters per generated block; changing it changes the matrix
    kind: str = "dense"          # dense: the LESS R (the stores' default); sparse: s non-zeros per row (module doc)
    s: int = SPARSE_S            # sparse only: non-zeros per parameter (row of R); ignored by "dense"

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", PROJ_KINDS)
        check_rules(self, {"dim": POSITIVE_INT, "block": POSITIVE_INT, "s": POSITIVE_INT})

    def to_dict(self) -> dict[str, Any]:
        """The identity stores record and compare; ``kind`` and ``s`` only when not dense, so the keys of
        every store written before the sparse option (and of every dense store since) are unchanged."""
        d = asdict(self)
        if self.kind == "dense":
            del d["kind"], d["s"]
        return d


def _block_seed(seed: int, k: int) -> int:
    """h(seed, k) of the module doc: the torch generator seed of block k of R."""
    return int.from_bytes(hashlib.sha256(f"g2is-proj:{seed}:{k}".encode()).digest()[:8], "little") >> 1


class Projector:
    """x = R^T g for g in R^P, R in {+-1/sqrt(d)}^{P x d}, generated block by block (never whole).

    Sign cache. Drawing a block (``randint`` + int8 -> fp32 + scale into a fresh 32 MB tensor) cost
    ~7x the block's own GEMM with a 64-row group, and the fast path redrew every block for every
    group (~17% of extraction time). The projector therefore keeps, per block, the DRAWN BITS packed
    8 to a byte ([width, ceil(d/8)] uint8: P*d/8 bytes in all, 225 MB for r=8 at d=2048, 900 MB at
    d=8192) and expands them with a 256-entry lookup table into a reused fp32 scratch buffer. The
    table's two values are made by the very ops that make a drawn block, so an expanded block is
    bit for bit the drawn one (tested). Why not fp32 blocks: P*d*4 bytes is 7.5 GB at d=2048 and
    30 GB at d=8192; int8 signs would be 1.9 / 7.5 GB. Blocks past ``cache_mb`` (the LESS size,
    r=128 at d=8192, is 14.7 GB of bits) are drawn each time, as before, into the scratch buffer.
    """

    def __init__(self, cfg: ProjectorConfig, n_params: int, cache_mb: float = SIGN_CACHE_MB):
        if cfg.family != "rademacher":
            raise ValueError(f"projector family {cfg.family!r} is not known; use 'rademacher'")
        if cfg.dim < 1 or cfg.block < 1:
            raise ValueError("projection dim and block must be positive")
        if cfg.kind not in PROJ_KINDS:
            raise ValueError(f"projector kind {cfg.kind!r} is not known; use one of {', '.join(PROJ_KINDS)}")
        if cfg.kind == "sparse" and not 1 <= cfg.s <= cfg.dim:
            raise ValueError(f"sparse projector: s={cfg.s} must be between 1 and the dim {cfg.dim}")
        self.cfg, self.n_params = cfg, n_params
        self.n_blocks = math.ceil(n_params / cfg.block)
        self.cache_mb = cache_mb
        self._bytes = math.ceil(cfg.dim / 8)          # packed bytes per row of R
        self._signs: dict[int, Any] = {}              # k -> [width, _bytes] uint8, bit j of byte c = entry 8c+j
        self._budget = int(cache_mb * (1 << 20))  # 0: draw every block every time
        self._table = None                            # [256, 8] fp32: byte value -> its 8 entries
        self._scratch = None                          # [block * _bytes * 8] fp32, reused by block_view
        self._csr: dict[int, Any] = {}                # sparse kind: k -> block k of R^T [d, width], CSR

    def columns(self, k: int) -> slice:
        return slice(k * self.cfg.block, min((k + 1) * self.cfg.block, self.n_params))

    def _draw(self, k: int):
        """The drawn bits of block k: [width, d] int8 in {0, 1} (the definition of R, module doc)."""
        import torch

        cols = self.columns(k)
        g = torch.Generator().manual_seed(_block_seed(self.cfg.seed, k))
        return torch.randint(0, 2, (cols.stop - cols.start, self.cfg.dim), generator=g, dtype=torch.int8)

    def _scale(self, bits, dtype):
        """{0,1} -> +-1/sqrt(d), in place on ``bits`` converted to ``dtype`` (the ops define the values)."""
        return bits.to(dtype).mul_(2).sub_(1).mul_(1.0 / math.sqrt(self.cfg.dim))

    def sparse_entries(self, k: int):
        """Sparse kind: (out [width, s] int64 output index, val [width, s] fp32 +-1/sqrt(s)) of block k (module doc)."""
        import torch

        cols, d, s = self.columns(k), self.cfg.dim, self.cfg.s
        g = torch.Generator().manual_seed(_block_seed(self.cfg.seed, k))
        off = torch.randint(0, 2**31 - 1, (cols.stop - cols.start, s), generator=g, dtype=torch.int64)
        sign = torch.randint(0, 2, (cols.stop - cols.start, s), generator=g, dtype=torch.int8)
        start = torch.arange(s + 1, dtype=torch.int64) * d // s       # segment t = [start[t], start[t+1])
        out = start[:-1] + off % (start[1:] - start[:-1])
        return out, sign.to(torch.float32).mul_(2).sub_(1).mul_(1.0 / math.sqrt(s))

    def _sparse_t(self, k: int):
        """Block k of R^T as a CSR [d, width] tensor (kept: width*s*12 bytes, ~0.2 MB a block at s=4)."""
        import torch

        t = self._csr.get(k)
        if t is None:
            out, val = self.sparse_entries(k)
            width = out.shape[0]
            col = torch.arange(width).unsqueeze(1).expand_as(out)
            with warnings.catch_warnings():  # "sparse CSR support is in beta": a product is all we use
                warnings.simplefilter("ignore", UserWarning)
                t = torch.sparse_coo_tensor(torch.stack([out.reshape(-1), col.reshape(-1)]), val.reshape(-1),
                                            (self.cfg.dim, width)).coalesce().to_sparse_csr()
            if self._budget >= (len(self._csr) + 1) * width * self.cfg.s * 12:
                self._csr[k] = t
        return t

    def add_block(self, x, k: int, gk):
        """x [rows, d] += gk [rows, width] @ (rows ``columns(k)`` of R), in place; either kind. Returns x.

        Sparse: a CSR product (R_k^T @ gk^T), not index_add_: measured 0.2-0.9 ms against 4-10 ms for
        index_add_ over the same non-zeros (64 rows, a 4096-wide block, d=2048, 1 thread).
        """
        if self.cfg.kind == "dense":  # exactly the ops of before the option: dense features stay bit for bit
            x += gk @ self.block_view(k)
            return x
        st = self._sparse_t(k)
        if gk.dim() == 1:
            return x.add_((st @ gk.float().unsqueeze(1)).squeeze(1))
        return x.add_((st @ gk.float().t()).t())

    def block(self, k: int, dtype=None):
        """Rows ``columns(k)`` of R: [width, d], entries +-1/sqrt(d) (sparse: s entries +-1/sqrt(s) a row)."""
        import torch

        if self.cfg.kind == "sparse":  # dense from the same entries (tests, tiny models)
            out, val = self.sparse_entries(k)
            r = torch.zeros(out.shape[0], self.cfg.dim, dtype=dtype or torch.float32)
            return r.scatter_add_(1, out, val.to(r.dtype))
        if dtype not in (None, torch.float32):
            return self._scale(self._draw(k), dtype)
        return self.block_view(k).clone()

    def block_view(self, k: int):
        """As :meth:`block` (fp32) but a view on the projector's scratch buffer: valid until the next call.

        The extractors use this one: it spares a fresh 32-128 MB allocation (and its page faults) per block.
        """
        import torch

        if self.cfg.kind != "dense":
            raise ValueError("block_view is the dense R's; use add_block (either kind) or block")
        width, d, nb = self.columns(k).stop - self.columns(k).start, self.cfg.dim, self._bytes
        if self._scratch is None:
            self._scratch = torch.empty(min(self.cfg.block, self.n_params) * nb * 8)
            vals = self._scale(torch.tensor([0, 1], dtype=torch.int8), torch.float32)
            bit = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
            self._table = torch.where(bit.bool(), vals[1], vals[0]).contiguous()
        buf = self._scratch[: width * nb * 8].view(width, nb * 8)
        packed = self._signs.get(k)
        if packed is None:
            bits = self._draw(k)
            if self._budget >= (len(self._signs) + 1) * self.cfg.block * nb:
                packed = self._pack(bits)
                self._signs[k] = packed
            else:  # over the budget: draw and scale in place, every time (the uncached behaviour)
                out = buf[:, :d]
                out.copy_(bits)
                return out.mul_(2).sub_(1).mul_(1.0 / math.sqrt(d))
        torch.index_select(self._table, 0, packed.view(-1).int(), out=buf.view(width * nb, 8))
        return buf[:, :d]

    def _pack(self, bits):
        """[width, d] {0,1} int8 -> [width, ceil(d/8)] uint8, bit j of byte c = entry 8c + j."""
        import torch

        width, d = bits.shape
        if d % 8:
            bits = torch.nn.functional.pad(bits, (0, 8 - d % 8))
        shifts = torch.arange(8, dtype=torch.int16)
        return (bits.view(width, -1, 8).to(torch.int16) << shifts).sum(-1, dtype=torch.int16).to(torch.uint8)

    @property
    def cached_mb(self) -> float:
        """Memory held by the sign cache now (MB)."""
        return sum(t.numel() for t in self._signs.values()) / (1 << 20)

    def dense(self):
        """The whole R [P, d] (tests and tiny models only)."""
        import torch

        return torch.cat([self.block(k) for k in range(self.n_blocks)])

    def project(self, g):
        """g [..., P] -> [..., d], one block at a time."""
        import torch

        out = torch.zeros(*g.shape[:-1], self.cfg.dim, dtype=torch.float32)
        for k in range(self.n_blocks):
            self.add_block(out, k, g[..., self.columns(k)].float())
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()


def adam_direction(g, m, v, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """LESS train-feature direction (no bias correction): (b1 m + (1-b1) g) / sqrt(b2 v + (1-b2) g^2 + eps)."""
    return (beta1 * m + (1 - beta1) * g) / (beta2 * v + (1 - beta2) * g * g + eps).sqrt()

