"""GradientStore: per-example gradient features on disk, written in atomic shards, resumable.

Layout of one store (``<workspace>/grads/<key>/``)::

    plan.json                 what is being extracted: config hash, row count, shard size, ids hash
    .lock                     held (flock) while a writer plans or finalises the store; gone once it is finished
    shards/.claim-000000      held (flock) by the writer computing shard 0
    shards/shard-000000.npy   rows [0, S), written by atomic rename
    shards/shard-000000.json  its size and sha256, written after it: present = the shard is committed
    features.npy              [N, d] fp16|fp32, written after the last shard (np.load(mmap_mode="r"))
    sidecar.json              written LAST: model identity, LoRA, checkpoint (+ weight), projector,
                              feature kind, data hash, n_rows, record ids in row order, dtype, code
                              version. Its presence marks the store complete.

With head signatures (``g2is grads --head-signatures``; docs/bridge.md) two more files::

    shards/heads-000000.npy   [S, L, H] fp32 signatures of rows [0, S), written BEFORE the feature
                              shard, whose rename commits both (a feature shard present = both present)
    head_signatures.npy       [N, L, H] fp32, written after the last shard; the sidecar's
                              ``head_signatures`` field says what it holds (shape, route, KV heads)

Resume: a shard file either exists whole or not at all (atomic rename), so a run killed at any
instant (kill -9) leaves only whole shards; the next run skips them and computes the rest. Each
shard is a deterministic function of its rows (fixed batches inside it), so the resumed store
equals an uninterrupted one bit for bit (same threads and hardware). Finalising copies shard by
shard into a memmap, so memory does not grow with N.

Damage and concurrency. A committed shard whose bytes no longer match its recorded size and sha256
(a truncated file, a disk error) is named, removed and computed again by the same run (checked when a
run resumes and again while finalising). A shard with NaN/inf rows is never committed: the error names
the store and the records. Processes writing one store share it: each takes ``.lock`` only briefly (to
make or check the plan, and to finalise), and claims one shard at a time (``shards/.claim-NNNNNN``, an
flock), so every shard is computed once; a process that finds the rest claimed waits for them (and computes
one whose holder died), and the first to find every shard committed finalises while the others reuse the
finished store. No shard is ever written into a finished store. A finished store is checked against the
sha256 its sidecar records when opened (once per change on disk: :func:`g2is_core.workspace.verify_artefact` with ``cache``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..linalg import NonFiniteError
from ..workspace import SIDECAR, ArtefactError, LockBusy, Workspace, atomic_path, exclusive_lock, hash_config, hash_file, \
    hash_strings, mark_verified, read_json, read_sidecar, verify_artefact, write_json, write_npy, write_sidecar

KIND = "grads"
HEADS_FILE = "head_signatures.npy"
DTYPES = {"fp16": np.float16, "fp32": np.float32}
# Fields of the sidecar config that must agree before two stores' features may be compared.
COMPARABLE = ("model_key", "lora", "projector", "checkpoint")
# ... and, for the stores of ONE side (the pool's checkpoints, or the target's), what may differ: only the
# checkpoint's epoch, step and weight. The feature kind (adam/sgd) and its settings must agree too.
SAME_SIDE = ("model_key", "lora", "projector", "checkpoint", "kind", "features")
# Feature settings that change only the batching (or float rounding), not the function: may differ.
_BATCHING = ("batch_tokens", "max_batch", "bf16", "proj_rows", "grad_buffer_mb")
LOCK = ".lock"


@dataclass
class GradientStore:
    """A finished store: ``features`` [N, d] (read-only memmap), ``ids`` [N] in row order, ``meta`` (sidecar)."""

    dir: Path
    meta: dict[str, Any]
    features: np.ndarray

    @classmethod
    def open(cls, directory: str | Path, like: "GradientStore | None" = None) -> "GradientStore":
        d = Path(directory)
        if not (d / SIDECAR).exists():
            if (d / "plan.json").exists():
                raise FileNotFoundError(f"{d}: the extraction has not finished (no sidecar.json); run the same "
                                        "`g2is grads` command again to resume it")
            raise FileNotFoundError(f"{d}: not a gradient store (no sidecar.json)")
        meta = read_sidecar(d)
        if meta.get("kind") != KIND:
            raise ValueError(f"{d}: a {meta.get('kind')!r} artefact, not a gradient store")
        verify_artefact(d, cache=True)  # a truncated or replaced features.npy is named here, not used
        feats = np.load(d / "features.npy", mmap_mode="r")
        if feats.shape[0] != meta["inputs"]["n_rows"]:
            raise ValueError(f"{d}: features.npy has {feats.shape[0]} rows but the sidecar says "
                             f"{meta['inputs']['n_rows']}; delete the store and extract again")
        store = cls(d, meta, feats)
        if like is not None:
            check_compatible(like, store)
        return store

    @classmethod
    def find(cls, spec: str | Path, workspace: Workspace | None = None) -> "GradientStore":
        """A store named by its directory or by its key under ``<workspace>/grads`` (what the Data page
        and ``g2is grads`` print)."""
        p = Path(spec).expanduser()
        if not p.is_dir():
            p = (workspace or Workspace()).root / KIND / str(spec)
        if not p.is_dir():
            raise FileNotFoundError(f"no gradient store at {spec}; give a store directory or its key under "
                                    "<workspace>/grads (see the Data page or `g2is grads`)")
        return cls.open(p)

    @property
    def ids(self) -> list[str]:
        return list(self.meta["ids"])

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def weight(self) -> float | None:
        """The LESS weight of this store's checkpoint (mean LR of its epoch, normalised)."""
        return (self.config.get("checkpoint") or {}).get("weight")

    @property
    def has_head_signatures(self) -> bool:
        return bool(self.meta.get("head_signatures"))

    def head_signatures(self) -> np.ndarray:
        """[N, L, H] float32 (read-only memmap, row order of :attr:`ids`): each record's head signature,
        |dLoss/dgate[l, h]| on the checkpoint's model (module doc; docs/bridge.md)."""
        if not self.has_head_signatures:
            raise ValueError(f"gradient store {self.dir.name} has no head signatures; extract it again with "
                             "`g2is grads --head-signatures` (or the Runs form's 'Head signatures' box)")
        sig = np.load(self.dir / HEADS_FILE, mmap_mode="r")
        want = tuple(self.meta["head_signatures"]["shape"])
        if sig.shape != want or sig.shape[0] != len(self):
            raise ValueError(f"{self.dir}: {HEADS_FILE} has shape {sig.shape} but the sidecar says {want} for "
                             f"{len(self)} rows; delete the store and extract again")
        return sig

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __repr__(self) -> str:
        c = self.config
        return (f"GradientStore({self.dir.name}: {len(self)} x {self.dim} {c.get('dtype')}, kind={c.get('kind')}, "
                f"checkpoint epoch {(c.get('checkpoint') or {}).get('epoch')})")


def _describe(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _differences(ca: dict[str, Any], cb: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """"field: a vs b" for every field of ``fields`` that differs (dict fields by sub-key)."""
    diffs = []
    for f in fields:
        va, vb = ca.get(f), cb.get(f)
        if f == "checkpoint":  # the weight and path are descriptive; the identity is warmup + epoch
            va = {k: (va or {}).get(k) for k in ("warmup", "epoch", "step")}
            vb = {k: (vb or {}).get(k) for k in ("warmup", "epoch", "step")}
        if f == "projector" and isinstance(va, dict) and isinstance(vb, dict):  # no kind recorded = dense
            va, vb = {"kind": "dense", **va}, {"kind": "dense", **vb}
        if va != vb:
            if isinstance(va, dict) and isinstance(vb, dict):
                keys = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
                diffs += [f"{f}.{k}: {_describe(va.get(k))} vs {_describe(vb.get(k))}" for k in keys]
            else:
                diffs.append(f"{f}: {_describe(va)} vs {_describe(vb)}")
    return diffs


def _name(s: GradientStore | dict[str, Any], default: str) -> str:
    return s.dir.name if isinstance(s, GradientStore) else default


def check_compatible(a: GradientStore | dict[str, Any], b: GradientStore | dict[str, Any]) -> None:
    """Raise :class:`ArtefactError` (a ValueError) naming every differing field when features of ``a`` and
    ``b`` are not comparable.

    Comparable = same model, LoRA configuration, projector (family, seed, dim, block; kind and s, a
    store without a kind being dense) and
    checkpoint (warmup and epoch). The feature kind (adam for the pool, sgd for targets) and the
    data may differ: that is the LESS use.
    """
    ca = a.config if isinstance(a, GradientStore) else a["config"]
    cb = b.config if isinstance(b, GradientStore) else b["config"]
    diffs = _differences(ca, cb, COMPARABLE)
    if diffs:
        raise ArtefactError(f"gradient stores {_name(a, 'first')} and {_name(b, 'second')} are not comparable ("
                            + "; ".join(diffs) + "). Extract both with the same model, LoRA warmup checkpoint and "
                            "projector (seed and dim).")


def check_same_side(stores: list[GradientStore | dict[str, Any]], side: str = "pool") -> None:
    """Raise :class:`ArtefactError` when the stores given for one side (one per warmup checkpoint) were not
    made by one extraction setting: same model, LoRA, warmup, projector (seed, dim, kind), feature kind and
    feature settings; only the checkpoint's epoch may differ. Mixing them would add cosines of different
    spaces (``--train-store`` from two warmups, or two projection seeds) without any error."""
    if len(stores) < 2:
        return

    def cfg(s: GradientStore | dict[str, Any]) -> dict[str, Any]:
        c = dict(s.config if isinstance(s, GradientStore) else s["config"])
        if isinstance(c.get("features"), dict):
            c["features"] = {k: v for k, v in c["features"].items() if k not in _BATCHING}
        return c

    first = cfg(stores[0])
    for s in stores[1:]:
        diffs = [d for d in _differences(first, cfg(s), SAME_SIDE)
                 if not d.startswith(("checkpoint.epoch:", "checkpoint.step:"))]
        if diffs:
            raise ArtefactError(f"the {side} stores {_name(stores[0], 'first')} and {_name(s, 'second')} were not "
                                "made by one extraction (" + "; ".join(diffs) + "); give one store per checkpoint "
                                "of the same warmup, extracted with the same projector (seed and dim) and settings.")


class StoreWriter:
    """Writes a store shard by shard. ``pending()`` lists shards still to compute; ``finalize`` ends it."""

    def __init__(self, directory: str | Path, config: dict[str, Any], ids: list[str], dim: int,
                 dtype: str = "fp16", shard_rows: int = 128, heads_shape: tuple[int, int] | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"store dtype {dtype!r}: use fp16 or fp32")
        if shard_rows < 1:
            raise ValueError("shard_rows must be at least 1")
        if len(set(ids)) != len(ids):
            raise ValueError("record ids are not unique; a store needs one row per distinct id")
        self.dir = Path(directory)
        self.config, self.ids, self.dim, self.dtype, self.shard_rows = config, list(ids), dim, dtype, shard_rows
        self.heads_shape = None if heads_shape is None else tuple(int(x) for x in heads_shape)  # (L, H) or None
        self.n_rows = len(self.ids)
        self.shard_dir = self.dir / "shards"
        plan = {"config_hash": hash_config(config), "n_rows": len(ids), "ids_hash": hash_strings(ids),
                "dim": dim, "dtype": dtype, "shard_rows": shard_rows}
        if self.heads_shape is not None:  # only then: plans made before signatures existed stay equal
            plan["heads_shape"] = list(self.heads_shape)
        self.dir.mkdir(parents=True, exist_ok=True)
        pp = self.dir / "plan.json"
        if pp.exists():
            old = read_json(pp)
            if old != plan:
                raise ValueError(f"{self.dir} holds a different extraction ("
                                 + ", ".join(k for k in plan if old.get(k) != plan[k])
                                 + " differ); delete it or choose another output directory")
        else:
            write_json(pp, plan)
        self.shard_dir.mkdir(exist_ok=True)

    @classmethod
    def attach(cls, directory: str | Path) -> "StoreWriter":
        """A writer for an existing plan, made from ``plan.json`` alone: another process (a distributed
        worker, :mod:`g2is_core.features.ray_backend`) commits shards through it. It knows the row count but
        not the ids, so only the writer that made the plan can :meth:`finalize`."""
        d = Path(directory)
        plan = read_json(d / "plan.json")
        w = cls.__new__(cls)
        w.dir, w.config, w.ids = d, None, None
        w.dim, w.dtype, w.shard_rows, w.n_rows = int(plan["dim"]), plan["dtype"], int(plan["shard_rows"]), int(plan["n_rows"])
        w.heads_shape = tuple(plan["heads_shape"]) if plan.get("heads_shape") else None
        w.shard_dir = d / "shards"  # made by the first commit (never in a store finished meanwhile)
        return w

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def rows(self, shard: int) -> range:
        return range(shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.n_rows))

    def shard_path(self, shard: int) -> Path:
        return self.shard_dir / f"shard-{shard:06d}.npy"

    def _record_path(self, shard: int) -> Path:
        return self.shard_dir / f"shard-{shard:06d}.json"

    def claim_path(self, shard: int) -> Path:
        """The lock file a writer holds while it computes ``shard`` (:func:`write_store`)."""
        return self.shard_dir / f".claim-{shard:06d}"

    def is_committed(self, shard: int) -> bool:
        """The shard and its checksum record exist (the record is written after the shard, so a kill between
        the two leaves an uncommitted shard, computed again)."""
        return self._record_path(shard).exists() and self.shard_path(shard).exists()

    def committed(self) -> list[int]:
        return [i for i in range(self.n_shards) if self.is_committed(i)]

    def pending(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.is_committed(i)]

    def _damage(self, shard: int, data: bytes | None = None) -> str | None:
        """Why committed ``shard`` does not match its record (size, sha256), or None when it does."""
        try:
            want = read_json(self._record_path(shard))
            got = len(data) if data is not None else self.shard_path(shard).stat().st_size
            if got != want.get("bytes"):
                return f"{got} bytes instead of {want.get('bytes')}"
            sha = hashlib.sha256(data).hexdigest() if data is not None else hash_file(self.shard_path(shard))
            return None if sha == want.get("sha256") else "its sha256 differs from the one recorded at commit"
        except (OSError, ValueError) as exc:
            return f"unreadable ({exc})"

    def _drop(self, shard: int) -> None:
        for p in (self._record_path(shard), self.shard_path(shard)):
            p.unlink(missing_ok=True)

    def check_shards(self) -> list[str]:
        """Verify every committed shard against its recorded size and sha256; a damaged one (truncated,
        overwritten) is removed, so it is pending again. Returns "shard-NNNNNN.npy (why)" for each."""
        damaged = []
        for i in self.committed():
            why = self._damage(i)
            if why is not None:
                damaged.append(f"{self.shard_path(i).name} ({why})")
                self._drop(i)
        return damaged

    def write_shard(self, shard: int, rows: np.ndarray) -> None:
        """Commit ``rows`` [len(rows(shard)), dim] as ``shard``: refused (nothing written) when a row holds NaN
        or inf, or when the store is already finished (a late writer must not leave files in it)."""
        want = (len(self.rows(shard)), self.dim)
        if rows.shape != want:
            raise ValueError(f"shard {shard}: got rows of shape {rows.shape}, expected {want}")
        arr = np.ascontiguousarray(rows, dtype=DTYPES[self.dtype])
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if len(bad):
            r = self.rows(shard)
            who = ([self.ids[r.start + int(b)] for b in bad[:5]] if self.ids is not None
                   else [r.start + int(b) for b in bad[:5]])
            raise NonFiniteError(
                f"gradient store {self.dir}: {len(bad)} of the {len(r)} feature rows of shard {shard} are NaN or "
                f"inf ({'records' if self.ids is not None else 'rows'} {', '.join(map(str, who))}"
                f"{', ...' if len(bad) > 5 else ''}); the shard was not written. The warmup checkpoint or the "
                "model gives non-finite gradients: check the warmup's loss, run a new warmup with a lower --lr, "
                "or drop --bf16")
        if (self.dir / SIDECAR).exists():
            raise ArtefactError(f"gradient store {self.dir} was finished by another process while this one computed "
                                f"shard {shard}; nothing was written: use the finished store")
        write_npy(self.shard_path(shard), arr)
        write_json(self._record_path(shard), {"bytes": self.shard_path(shard).stat().st_size,
                                              "sha256": hash_file(self.shard_path(shard)),
                                              "rows": [self.rows(shard).start, self.rows(shard).stop]})

    def heads_shard_path(self, shard: int) -> Path:
        return self.shard_dir / f"heads-{shard:06d}.npy"

    def write_heads_shard(self, shard: int, sigs: np.ndarray) -> None:
        """The head signatures [rows, L, H] of one shard. Call BEFORE :meth:`write_shard`: the feature
        shard's atomic rename is the commit of both (a resume recomputes a shard whose features are absent)."""
        if self.heads_shape is None:
            raise ValueError(f"{self.dir}: this store was planned without head signatures")
        want = (len(self.rows(shard)), *self.heads_shape)
        sigs = np.asarray(sigs, dtype=np.float32)
        if sigs.shape != want:
            raise ValueError(f"shard {shard}: got head signatures of shape {sigs.shape}, expected {want}")
        if not np.isfinite(sigs).all():
            raise ValueError(f"shard {shard}: head signatures hold NaN or inf (a diverged loss?); check the model "
                             "and the data, or extract with fp32 (drop --bf16)")
        write_npy(self.heads_shard_path(shard), sigs)

    def _finalize_heads(self) -> dict[str, Any]:
        """Stream the heads shards into ``head_signatures.npy``; its sidecar fields (none without heads)."""
        if self.heads_shape is None:
            return {}
        shape = (len(self.ids), *self.heads_shape)
        missing = [i for i in range(self.n_shards) if not self.heads_shard_path(i).exists()]
        if missing:
            raise ValueError(f"{self.dir}: the head signatures of shards {missing[:5]} are missing; delete the store "
                             "and extract again")
        with atomic_path(self.dir / HEADS_FILE) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            for i in range(self.n_shards):
                r = self.rows(i)
                mm[r.start: r.stop] = np.load(self.heads_shard_path(i), allow_pickle=False)
            mm.flush()
            del mm
        return {"file": HEADS_FILE, "shape": list(shape), "dtype": "fp32"}

    def finalize(self, inputs: dict[str, Any], extra: dict[str, Any] | None = None) -> GradientStore:
        """Copy the shards into ``features.npy`` (streaming, each checked against its recorded sha256), write
        the sidecar last, drop the shards."""
        if self.ids is None:
            raise ValueError(f"{self.dir}: a writer attached to the plan cannot finalise; the one that made the plan does")
        missing = self.pending()
        if missing:
            raise ValueError(f"{self.dir}: shards {missing[:5]} are not written yet; cannot finalise")
        final = self.dir / "features.npy"
        with atomic_path(final) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPES[self.dtype], shape=(len(self.ids), self.dim))
            for i in range(self.n_shards):
                r = self.rows(i)
                data = self.shard_path(i).read_bytes()
                why = self._damage(i, data)
                if why is not None:
                    self._drop(i)
                    raise ArtefactError(f"gradient store {self.dir}: shard {self.shard_path(i).name} is damaged "
                                        f"({why}); it was removed: run the same command again to compute it anew")
                mm[r.start: r.stop] = np.load(io.BytesIO(data), allow_pickle=False)
            mm.flush()
            del mm
        heads = self._finalize_heads()
        if heads:  # the caller's description (route, KV heads) with the written file's shape
            extra = {**(extra or {}), "head_signatures": {**(extra or {}).get("head_signatures", {}), **heads}}
        write_sidecar(self.dir, KIND, self.config, inputs={**inputs, "n_rows": len(self.ids)},
                      extra={"ids": self.ids, **(extra or {})})
        mark_verified(self.dir)  # just hashed by write_sidecar: the first open need not hash it again
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        return GradientStore.open(self.dir)


def _say(message: str) -> None:
    """One line on stderr (as :func:`g2is_core.runtime.resolve_precision` does): what a long run should know."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def store_lock(directory: Path, wait: bool = True):
    """The one writer of a store at a time (:func:`g2is_core.workspace.exclusive_lock` on ``<store>/.lock``);
    a second one says that it waits, and waits (with ``wait=False`` it raises
    :class:`~g2is_core.workspace.LockBusy` instead)."""
    def waiting() -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = (directory / LOCK).read_text().strip()
            _say(f"gradient store {directory} is being written by another process (pid {pid}); waiting for it "
                 "to finish (its result is reused)")
            return
        _say(f"gradient store {directory} is being written by another process; waiting for it to finish")

    with exclusive_lock(directory / LOCK, on_wait=waiting, wait=wait):
        yield


def write_store(directory: str | Path, config: dict[str, Any], ids: list[str], dim: int,
                compute: Callable[[range], np.ndarray], *, inputs: dict[str, Any], dtype: str = "fp16",
                shard_rows: int = 128, extra: dict[str, Any] | None = None,
                on_shard: Callable[[int, int, int], None] | None = None,
                heads_shape: tuple[int, int] | None = None, wait: bool = True) -> GradientStore:
    """Create or resume a store: ``compute(rows)`` -> [len(rows), dim] for each pending shard, then finalise.

    ``on_shard(rows_done, n_rows, shard)`` is called after each commit (progress). A finished store
    with the same directory is returned as is. Several processes may write one store at once: they share its
    shards (module doc); with ``wait=False`` a store whose plan lock another process holds (one planning or
    finalising it, or a distributed driver) raises :class:`~g2is_core.workspace.LockBusy`; a committed shard
    found damaged on resume is named on stderr and computed again. An error of the data
    or the numbers (:class:`~g2is_core.data.records.DataError`, :class:`~g2is_core.linalg.NonFiniteError`)
    raised by ``compute`` reaches the caller with the store named. With ``heads_shape`` (L, H) the store also holds head
    signatures: ``compute(rows)`` returns (features [rows, dim], signatures [rows, L, H]).
    """
    from ..data.records import DataError

    d = Path(directory)
    if (d / SIDECAR).exists():
        return GradientStore.open(d)
    d.mkdir(parents=True, exist_ok=True)
    with store_lock(d, wait=wait):  # brief: the plan and the check of what earlier runs committed
        if (d / SIDECAR).exists():  # finished by the writer this one waited for
            return GradientStore.open(d)
        w = StoreWriter(d, config, ids, dim, dtype, shard_rows, heads_shape=heads_shape)
        damaged = w.check_shards()
        if damaged:
            _say(f"gradient store {d}: {len(damaged)} committed shard(s) were damaged and are computed again: "
                 + ", ".join(damaged[:5]) + (", ..." if len(damaged) > 5 else ""))

    def commit(shard: int) -> None:
        r = w.rows(shard)
        try:
            rows = compute(r)
            if heads_shape is not None:
                rows, sigs = rows
                w.write_heads_shard(shard, sigs)  # first: the feature shard below commits both
            rows = np.asarray(rows)
        except (DataError, NonFiniteError) as exc:
            if str(d) in str(exc):
                raise
            raise type(exc)(f"gradient store {d}: {exc}") from exc
        w.write_shard(shard, rows)
        if on_shard:
            on_shard(sum(len(w.rows(i)) for i in w.committed()), len(ids), shard)

    # Shards are claimed one by one (a lock per shard), so processes writing the same store share its shards:
    # first every shard nobody holds, then the held ones are waited for (and computed, if their holder died).
    try:
        for blocking in (False, True):
            for shard in w.pending():
                with contextlib.suppress(LockBusy), exclusive_lock(w.claim_path(shard), wait=blocking):
                    if (d / SIDECAR).exists():
                        return GradientStore.open(d)
                    if not w.is_committed(shard):
                        commit(shard)
    except ArtefactError:
        if (d / SIDECAR).exists():  # a peer finished the store while this one computed its last shard
            return GradientStore.open(d)
        raise
    with store_lock(d):
        if (d / SIDECAR).exists():  # a peer finalised it
            return GradientStore.open(d)
        store = w.finalize(inputs, extra)
        (d / LOCK).unlink(missing_ok=True)  # finished: the lock has nothing left to guard
    return store


def list_stores(workspace: Workspace | None = None, *, data_hash: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Finished stores (newest first) with their sidecars; only those for ``data_hash`` when given."""
    ws = workspace or Workspace()
    out = ws.list(KIND)
    if data_hash is not None:
        out = [(p, m) for p, m in out if m.get("inputs", {}).get("data_hash") == data_hash]
    return out


def store_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """One flat row describing a store (for tables on the Data and Runs pages)."""
    c, i = meta.get("config", {}), meta.get("inputs", {})
    ck = c.get("checkpoint") or {}
    pj = c.get("projector") or {}
    return {"kind": c.get("kind"), "rows": i.get("n_rows"), "dim": pj.get("dim"), "dtype": c.get("dtype"),
            "model": (c.get("model") or {}).get("name"), "warmup": ck.get("warmup"), "epoch": ck.get("epoch"),
            "weight": ck.get("weight"), "projector_seed": pj.get("seed"), "data_hash": i.get("data_hash"),
            "created": meta.get("produced_by", {}).get("created_utc")}

