"""Small array helpers shared by every folder (numpy, or torch when given a tensor; torch is never imported here).

A base module like :mod:`g2is_core.workspace`: it imports nothing of the package, so data, models,
features, graph and selection may all use it.

Unit rows. A row x becomes x / ||x||_2. An all-zero row has no direction, and callers disagree on
what that means, so each one states its rule with ``zero``:

- ``"keep"``: the row stays zero (the norm is clamped at 1e-12). Its cosine with anything is 0.
  Gradient features of an example without response tokens (g = 0), the 2-D layout's inputs, the
  selection's weighted cosines.
- ``"raise"``: a zero row (or one with NaN/inf) is an error that names the rows. The kNN graph and the
  walk: a point without a direction has no neighbours, so the input is wrong.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

ZERO_POLICIES = ("keep", "raise")


class NonFiniteError(ValueError):
    """Numbers that must be finite (a loss, weights, feature rows) are NaN or inf, or feature rows that
    must have a direction are all zeros. The message names where (file, store, step) and what to do."""


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor can exist only if torch is already imported
    return torch is not None and isinstance(x, torch.Tensor)


def unit_rows(x: Any, zero: str, what: str = "features") -> Any:
    """Rows of ``x`` [..., d] scaled to unit L2 norm; an all-zero row follows ``zero`` (module doc).

    numpy input: returns float32 [..., d]. ``"keep"`` divides by max(||x||, 1e-12) in float32;
    ``"raise"`` needs a 2-D [N, d] array, checks every row (finite, non-zero; the error names ``what``
    and the first bad rows) and divides by the norm computed in float64.
    torch input: returns a tensor of the input's dtype, x / max(||x||, 1e-12) along the last axis.
    """
    if zero not in ZERO_POLICIES:
        raise ValueError(f"zero-row policy {zero!r}: use one of {', '.join(ZERO_POLICIES)}")
    if _is_tensor(x):
        import torch

        norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        if zero == "raise":
            _check_rows(~torch.isfinite(x).reshape(-1, x.shape[-1]).all(-1).cpu().numpy(),
                        (norms.reshape(-1) == 0).cpu().numpy(), what)
        return x / norms.clamp_min(1e-12)
    if zero == "keep":
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [N, d]; got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    _check_rows(bad, np.zeros(len(x), bool), what)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    _check_rows(np.zeros(len(x), bool), norms == 0, what)
    return (x / norms[:, None]).astype(np.float32, copy=False)


def _check_rows(bad: np.ndarray, zero: np.ndarray, what: str) -> None:
    """Raise on non-finite (``bad``) or all-zero (``zero``) rows, naming the first few."""
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what}: {len(rows)} row(s) contain NaN or inf (first: {rows[:5].tolist()}); "
                         "recompute or drop those rows")
    if zero.any():
        rows = np.flatnonzero(zero)
        raise ValueError(f"{what}: {len(rows)} row(s) are all zeros (first: {rows[:5].tolist()}) and have no "
                         "direction; drop those rows")


def bad_rows(x: Any, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(indices of rows with NaN/inf, indices of all-zero rows) of ``x`` [N, d], read ``block`` rows at a
    time (a memmap of any size is never loaded whole)."""
    nonfinite, zero = [], []
    for a in range(0, x.shape[0], block):
        b = np.asarray(x[a:a + block])
        finite = np.isfinite(b).all(axis=1)
        nonfinite.append(np.flatnonzero(~finite) + a)
        zero.append(np.flatnonzero(finite & ~b.any(axis=1)) + a)
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))  # noqa: E731
    return cat(nonfinite), cat(zero)


def check_finite_rows(x: Any, what: str = "features") -> None:
    """Raise :class:`NonFiniteError` when a row of ``x`` [N, d] holds NaN/inf or is all zeros, naming ``what``
    and the first rows: the kNN graph and the walk refuse such rows (a NaN cosine sorts anywhere; a zero row
    has no direction, so no neighbours)."""
    nonfinite, zero = bad_rows(x)
    for rows, how in ((nonfinite, "hold NaN or inf"), (zero, "are all zeros (no direction)")):
        if len(rows):
            raise NonFiniteError(f"{what}: {len(rows)} of {x.shape[0]} rows {how} (first: {rows[:5].tolist()}); "
                                 "recompute the features (a diverged warmup or empty token windows give such rows)")
