"""Process-wide runtime policy: threads and device.

Why: on a 2-core machine torch's default of one OpenMP thread per core spin-waits; any other busy
process then makes torch 10-25x slower. We default to ONE thread with a passive wait policy and
let the user raise it (``G2IS_THREADS`` or ``--threads``) on a machine they have to themselves.
"""
from __future__ import annotations

import os

# Must be set before the OpenMP runtime starts (i.e. before torch is first imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never reachable; fail fast
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

DEFAULT_THREADS = 1
_applied: int | None = None


def configured_threads() -> int:
    """Threads to use: ``G2IS_THREADS`` if set (0 = all cores), else :data:`DEFAULT_THREADS`."""
    raw = os.environ.get("G2IS_THREADS", "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError as exc:
        raise ValueError(f"G2IS_THREADS={raw!r} is not a whole number; set it to 1, 2, ... or 0 for all cores") from exc
    return n if n > 0 else (os.cpu_count() or 1)


def apply_thread_policy(threads: int | None = None) -> int:
    """Set torch's intra-op threads and numpy's BLAS threads (idempotent). Returns the number in force.

    BLAS matters too: OpenBLAS spin-waits like OpenMP, and a multi-threaded numpy matmul on a busy
    2-core machine was measured 10-50x slower than a single-threaded one (the walk's profile).
    """
    global _applied
    import torch

    n = configured_threads() if threads is None else max(1, int(threads))
    if _applied != n:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # can only be set once, before any parallel work
            pass
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=n, user_api="blas")
        except ImportError:  # threadpoolctl comes with scikit-learn; without it, the env defaults below apply
            pass
        _applied = n
    return n


# BLAS libraries read these once, when numpy first loads them (if that happens after this import).
try:
    _blas_threads = str(configured_threads())
except ValueError:  # reported with its fix when torch threads are applied
    _blas_threads = str(DEFAULT_THREADS)
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _blas_threads)


def pick_device(device: str | None = None) -> str:
    """"cuda" when present (unless told otherwise), else "cpu"."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available; use --device cpu")
    return device


def bf16_is_fast(device: str | None = None) -> bool:
    """True where bf16 matmuls run natively: a CUDA device with bf16, or a CPU with AVX512-BF16 or AMX.

    Elsewhere autocasting to bf16 is emulated and slower than fp32, so ``bf16: auto`` in a spec means fp32 there.
    """
    import torch

    dev = pick_device(device)
    if dev.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return any(bool(getattr(torch.cpu, f, lambda: False)()) for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def resolve_bf16(value, device: str | None = None) -> bool:
    """A spec's bf16 switch: true / false, or "auto" (= :func:`bf16_is_fast`)."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return bf16_is_fast(device)
        if v in ("true", "yes", "1", "bf16"):
            return True
        if v in ("false", "no", "0", "fp32", ""):
            return False
        raise ValueError(f"bf16 must be true, false or auto, not {value!r}")
    return bool(value)


def torch_dtype(name: str):
    import torch

    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not one of fp32, bf16, fp16") from None
