"""Process-wide runtime policy: threads, device and precision (the one bf16 decision: :func:`resolve_precision`).

Why: on a 2-core machine torch's default of one OpenMP thread per core spin-waits; any other busy
process then makes torch 10-25x slower. We default to ONE thread with a passive wait policy and
let the user raise it (``G2IS_THREADS`` or ``--threads``) on a machine they have to themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), for messages and bench lines."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """Where a timing was measured: the device, the CPU model, the torch threads and the 1-minute load average now
    (a cell stores it at its start and end, so a rate read later says what machine and load it came from)."""
    import torch

    dev = pick_device()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):   # no load average on this OS (Windows): say so rather than fail the cell
        load = None
    return {"device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu", "cpu": cpu_model(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "load": load}


FORCE_BF16_ENV = "G2IS_FORCE_BF16"
_warned: set[str] = set()  # fallback lines already printed by this process (one per device)


@dataclass(frozen=True)
class Precision:
    """What a bf16 switch asked for and what runs; ``to_dict`` is what sidecars and the registry record."""

    requested: bool | str        # the switch as given, normalised: True, False or "auto"
    bf16: bool                   # what runs: bf16 autocast (True) or fp32 (False)
    native: bool | None = None   # the hardware probe's answer (None: not asked, the switch was false)
    forced: bool = False         # bf16 kept on hardware without native bf16 because G2IS_FORCE_BF16=1

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.name, "requested": self.requested, "native_bf16": self.native,
                "forced": self.forced}


def _switch(value) -> bool | str:
    """A bf16 switch normalised to True, False or "auto" (ValueError with the accepted words otherwise)."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return "auto"
        if v in ("true", "yes", "1", "bf16"):
            return True
        if v in ("false", "no", "0", "fp32", ""):
            return False
        raise ValueError(f"bf16 must be true, false or auto, not {value!r}")
    return bool(value)


def resolve_precision(value, device: str | None = None, *, what: str = "") -> Precision:
    """THE place every bf16 switch is decided (features, warmup, training, evaluation, head studies, specs).

    false -> fp32. auto -> bf16 where :func:`bf16_is_fast`, else fp32 (silently: that is what auto means).
    true  -> bf16 where native; where it is not, fp32 with ONE line on stderr saying why (per process and
    device), unless ``G2IS_FORCE_BF16=1`` insists. Why fall back instead of refusing: an emulated bf16
    matmul was measured ~200x slower than fp32 on an AVX2-only EPYC (0.12 vs 27-71 GFLOP/s), which made a
    spec's ``bf16: true`` run 15x slower with no word to the user; fp32 gives the same features and
    weights up to bf16 rounding, so running it is the request's intent at its intended speed.
    ``what`` names the switch in the warning (e.g. "training").
    """
    req = _switch(value)
    if req is False:
        return Precision(False, False)
    native = bf16_is_fast(device)
    if req == "auto" or native:
        return Precision(req, native, native)
    if os.environ.get(FORCE_BF16_ENV, "").strip() not in ("", "0"):
        return Precision(True, True, False, forced=True)
    dev = pick_device(device)
    where = f"this CPU ({cpu_model()})" if dev == "cpu" else f"this device ({dev})"
    if where not in _warned:
        _warned.add(where)
        import sys

        print(f"g2is: warning: bf16 requested{f' for {what}' if what else ''} but {where} has no native bf16 matmul "
              f"(AVX512-BF16/AMX or a bf16 GPU; an emulated one runs ~200x slower than fp32); using fp32. "
              f"Set {FORCE_BF16_ENV}=1 to insist.", file=sys.stderr, flush=True)
    return Precision(True, False, False)


def resolve_bf16(value, device: str | None = None, *, what: str = "") -> bool:
    """A bf16 switch (true / false / "auto") -> whether to autocast to bf16 (:func:`resolve_precision`)."""
    return resolve_precision(value, device, what=what).bf16


def torch_dtype(name: str):
    import torch

    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not one of fp32, bf16, fp16") from None
