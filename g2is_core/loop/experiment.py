"""The data of an experiment spec: its candidate pool (:func:`load_pool`) and target examples (:func:`load_target`).

The spec itself is read by :mod:`.spec`; its cells are run by :mod:`.runner`.
"""
from __future__ import annotations

import random
from typing import Any

from ..data.records import DataError, Record


# ----------------------------------------------------------------------------- data
def builtin_pool_spec(pool: dict[str, Any]):
    """The :class:`~g2is_core.data.spec.DataSpec` of a spec's ``{builtin: {...}}`` pool (e.g. the demo's, which
    the Data page offers by this name)."""
    from ..data.spec import DataSpec

    opts = dict(pool["builtin"] or {})
    known = ("seed", "per_task", "distractors", "per_composite", "tasks")
    if set(opts) - set(known):
        raise DataError(f"pool builtin: unknown key(s) {sorted(set(opts) - set(known))}; known: {list(known)}",
                        field="pool")
    if opts.get("tasks") is not None:
        opts["tasks"] = tuple(opts["tasks"])
    return DataSpec(kind="pool", **opts)


def load_pool(pool: dict[str, Any] | str) -> list[Record]:
    """The candidate pool of a spec: a data spec text (README.md, "Naming data"; paths from the project
    root), ``{builtin: {seed, per_task, distractors, per_composite, tasks}}`` (= ``builtin:pool?...``),
    or ``{files: [spec, ...], per_file: N, seed: S}``: each file read leniently, then at most N
    of its records drawn with one seeded RNG shared by the files in order. A file may also be written
    ``{data: spec, n: M}``: at most M of its records instead of N (a pool balanced by source). ``exclude:
    [id, ...]`` (with ``files``) drops those records after the draw, so the others stay the same draw (e.g.
    records whose cut token windows are the same tokens: ``python bench/window_duplicates.py SPEC`` lists them);
    an id the draw did not give is an error, never a silent no-op."""
    from ..data.spec import DataSpec
    from ..workspace import PROJECT_ROOT

    if isinstance(pool, str):
        return DataSpec.parse(pool).load(base=PROJECT_ROOT).records
    if "builtin" in pool:
        return builtin_pool_spec(pool).load().records
    if "files" in pool:
        rng = random.Random(pool.get("seed", 0))
        out: list[Record] = []
        for f in pool["files"]:
            k = pool.get("per_file")
            if isinstance(f, dict):
                if set(f) - {"data", "n"} or "data" not in f:
                    raise DataError(f"pool files: an entry is a data spec or {{data: spec, n: count}}, not {f!r}",
                                    field="pool")
                f, k = f["data"], f.get("n", k)
            recs = DataSpec.parse(f).fill(lenient=True).load(base=PROJECT_ROOT).records
            if k and len(recs) > k:
                recs = rng.sample(recs, k)
            out += recs
        return _exclude(out, pool.get("exclude") or [])
    raise DataError("pool must be a data spec (e.g. builtin:pool; README.md, 'Naming data'), {builtin: {...}} or "
                    "{files: [...]}", field="pool")


def _exclude(records: list[Record], ids: list[str]) -> list[Record]:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(f"pool exclude: a list of record ids, not {ids!r}", field="pool.exclude")
    missing = sorted(set(ids) - {r.id for r in records})
    if missing:
        raise DataError(f"pool exclude: {len(missing)} id(s) are not in the drawn pool (first: {missing[:3]}); the "
                        "pool's files, counts or seed changed since the list was made: list them again "
                        "(python bench/window_duplicates.py SPEC)", field="pool.exclude")
    drop = set(ids)
    return [r for r in records if r.id not in drop]


def load_target(select: str, n: int, seed: int = 0) -> list[Record]:
    """Target examples used for selection, at most ``n``, from a data spec (README.md, "Naming data"):

    - ``builtin:targets:<composite>`` (short: ``builtin:<composite>``): n records of its dev split
      (``seed`` = the suite's seed unless the spec gives one); ``builtin:task:<task>`` likewise;
    - ``bbh-cot:<task>``: the first n of the 3 chain-of-thought exemplars of a BBH task (LESS's BBH target set);
    - anything else, e.g. a data file or folder (``shared:`` = the shared data root; relative paths from the
      project root), read leniently, optionally with a row range ``path[a:b]`` so that target rows stay apart
      from rows an evaluation uses, then sampled (seeded) down to n.
    """
    from ..data.spec import DataSpec
    from ..workspace import PROJECT_ROOT

    spec = DataSpec.parse(select)
    if spec.kind in ("targets", "task"):  # generated: n records, a prefix of any larger n
        return spec.fill(n=n, seed=seed).load().records
    recs = spec.fill(lenient=True).load(base=PROJECT_ROOT).records
    if spec.kind == "bbh-cot":
        return recs[:n]
    if len(recs) > n:
        recs = random.Random(seed).sample(recs, n)
    return recs
