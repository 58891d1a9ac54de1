"""GradientStore: per-example gradient features on disk, written in atomic shards, resumable.

Layout of one store (``<workspace>/grads/<key>/``)::

    plan.json                 what is being extracted: config hash, row count, shard size, ids hash
    shards/shard-000000.npy   rows [0, S), committed by atomic rename (present = committed)
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
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..workspace import SIDECAR, Workspace, atomic_path, hash_config, hash_strings, read_json, read_sidecar, \
    write_json, write_npy, write_sidecar

KIND = "grads"
HEADS_FILE = "head_signatures.npy"
DTYPES = {"fp16": np.float16, "fp32": np.float32}
# Fields of the sidecar config that must agree before two stores' features may be compared.
COMPARABLE = ("model_key", "lora", "projector", "checkpoint")


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


def check_compatible(a: GradientStore | dict[str, Any], b: GradientStore | dict[str, Any]) -> None:
    """Raise ValueError naming every differing field when features of ``a`` and ``b`` are not comparable.

    Comparable = same model, LoRA configuration, projector (family, seed, dim, block; kind and s, a
    store without a kind being dense) and
    checkpoint (warmup and epoch). The feature kind (adam for the pool, sgd for targets) and the
    data may differ: that is the LESS use.
    """
    ca = a.config if isinstance(a, GradientStore) else a["config"]
    cb = b.config if isinstance(b, GradientStore) else b["config"]
    diffs = []
    for f in COMPARABLE:
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
    if diffs:
        na = a.dir.name if isinstance(a, GradientStore) else "first"
        nb = b.dir.name if isinstance(b, GradientStore) else "second"
        raise ValueError(f"gradient stores {na} and {nb} are not comparable (" + "; ".join(diffs) + "). Extract "
                         "both with the same model, LoRA warmup checkpoint and projector (seed and dim).")


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
        w.shard_dir = d / "shards"
        w.shard_dir.mkdir(exist_ok=True)
        return w

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_rows)

    def rows(self, shard: int) -> range:
        return range(shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.n_rows))

    def shard_path(self, shard: int) -> Path:
        return self.shard_dir / f"shard-{shard:06d}.npy"

    def committed(self) -> list[int]:
        return [i for i in range(self.n_shards) if self.shard_path(i).exists()]

    def pending(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.shard_path(i).exists()]

    def write_shard(self, shard: int, rows: np.ndarray) -> None:
        want = (len(self.rows(shard)), self.dim)
        if rows.shape != want:
            raise ValueError(f"shard {shard}: got rows of shape {rows.shape}, expected {want}")
        write_npy(self.shard_path(shard), rows.astype(DTYPES[self.dtype]))

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
        """Copy the shards into ``features.npy`` (streaming), write the sidecar last, drop the shards."""
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
                mm[r.start: r.stop] = np.load(self.shard_path(i), allow_pickle=False)
            mm.flush()
            del mm
        heads = self._finalize_heads()
        if heads:  # the caller's description (route, KV heads) with the written file's shape
            extra = {**(extra or {}), "head_signatures": {**(extra or {}).get("head_signatures", {}), **heads}}
        write_sidecar(self.dir, KIND, self.config, inputs={**inputs, "n_rows": len(self.ids)},
                      extra={"ids": self.ids, **(extra or {})})
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        return GradientStore.open(self.dir)


def write_store(directory: str | Path, config: dict[str, Any], ids: list[str], dim: int,
                compute: Callable[[range], np.ndarray], *, inputs: dict[str, Any], dtype: str = "fp16",
                shard_rows: int = 128, extra: dict[str, Any] | None = None,
                on_shard: Callable[[int, int, int], None] | None = None,
                heads_shape: tuple[int, int] | None = None) -> GradientStore:
    """Create or resume a store: ``compute(rows)`` -> [len(rows), dim] for each pending shard, then finalise.

    ``on_shard(rows_done, n_rows, shard)`` is called after each commit (progress). A finished store
    with the same directory is returned as is. With ``heads_shape`` (L, H) the store also holds head
    signatures: ``compute(rows)`` returns (features [rows, dim], signatures [rows, L, H]).
    """
    d = Path(directory)
    if (d / SIDECAR).exists():
        return GradientStore.open(d)
    w = StoreWriter(d, config, ids, dim, dtype, shard_rows, heads_shape=heads_shape)
    done = sum(len(w.rows(i)) for i in w.committed())
    for shard in w.pending():
        r = w.rows(shard)
        rows = compute(r)
        if heads_shape is not None:
            rows, sigs = rows
            w.write_heads_shard(shard, sigs)  # first: the feature shard below commits both
        w.write_shard(shard, np.asarray(rows))
        done += len(r)
        if on_shard:
            on_shard(done, len(ids), shard)
    return w.finalize(inputs, extra)


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

