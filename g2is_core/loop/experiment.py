"""The data of an experiment spec: its candidate pool (:func:`load_pool`) and target examples (:func:`load_target`).

The spec itself is read by :mod:`.spec`; its cells are run by :mod:`.runner`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..data.records import DataError, Record


# ----------------------------------------------------------------------------- data
def load_pool(pool: dict[str, Any]) -> list[Record]:
    """The candidate pool of a spec: the built-in mixed pool, or a seeded sample of files."""
    if "builtin" in pool:
        from ..data.tasks import make_pool

        return list(make_pool(**(pool["builtin"] or {})).records)
    if "files" in pool:
        from ..data.loaders import load_records

        rng = random.Random(pool.get("seed", 0))
        out: list[Record] = []
        for f in pool["files"]:
            recs = load_records(_resolve(f), lenient=True).records
            k = pool.get("per_file")
            if k and len(recs) > k:
                recs = rng.sample(recs, k)
            out += recs
        return out
    raise DataError("pool must be {builtin: {...}} or {files: [...]}", field="pool")


def load_target(select: str, n: int, seed: int = 0) -> list[Record]:
    """Target examples used for selection, sampled (seeded) to at most ``n``:

    - ``builtin:<composite>``: the built-in composite's dev split;
    - ``bbh-cot:<task>``: the 3 chain-of-thought exemplars of a BBH task (LESS's BBH target set);
    - a data file or folder (``shared:`` prefix = the shared data root), optionally with a row range
      ``path[a:b]`` so that target rows stay apart from rows an evaluation uses.
    """
    if select.startswith("builtin:"):
        from ..data.tasks import make_targets

        name = select.split(":", 1)[1]
        targets = make_targets(seed=seed, n_per_target=n)
        if name not in targets:
            raise DataError(f"no built-in target {name!r}; choose from {sorted(targets)}", field="targets")
        return targets[name]
    if select.startswith("bbh-cot:"):
        from ..data.loaders import bbh_cot_exemplars

        root = _resolve("shared:bbh/cot-prompts")
        return bbh_cot_exemplars(root / f"{select.split(':', 1)[1]}.txt")[:n]
    from ..data.loaders import load_records

    path, lo, hi = select, None, None
    if select.endswith("]") and "[" in select:
        path, rng = select[:-1].rsplit("[", 1)
        a, _, b = rng.partition(":")
        lo, hi = (int(a) if a else None), (int(b) if b else None)
    recs = load_records(_resolve(path), lenient=True).records[lo:hi]
    if len(recs) > n:
        recs = random.Random(seed).sample(recs, n)
    return recs


def _resolve(path: str) -> Path:
    """Paths in specs are relative to the shared data root when they start with 'shared:'."""
    from ..workspace import PROJECT_ROOT, shared_data_root

    if path.startswith("shared:"):
        root = shared_data_root()
        if root is None:
            raise DataError(f"{path}: needs the shared data folder (../shared/data), which is absent here")
        return root / path.split(":", 1)[1]
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p
