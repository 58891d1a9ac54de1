"""List the pool records of an experiment spec whose cut token windows are the same tokens as an earlier record's.

Feature extraction refuses such pairs (their gradient rows would be equal: the cut removed what tells them apart,
docs/reliability.md); training would see them as one example twice. This prints, per group, the record kept (the
first in pool order) and those to drop, then the YAML ``exclude:`` list to put under the spec's ``pool:``
(:func:`g2is_core.loop.experiment.load_pool` drops them after the draw, so every other record stays).

    python bench/window_duplicates.py bench/specs/study.yaml [--max-length 128]

The window length defaults to the spec's feature max_length (else its training max_length).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from g2is_core.data.encoding import IGNORE, encode_record
    from g2is_core.loop.experiment import load_pool
    from g2is_core.loop.spec import load_spec
    from g2is_core.models.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--max-length", type=int, default=None)
    args = ap.parse_args(argv)
    spec = load_spec(args.spec)
    fs = spec.selection.features
    n = args.max_length or fs.max_length or spec.train.max_length
    pool = spec.pool if isinstance(spec.pool, str) else {k: v for k, v in spec.pool.items() if k != "exclude"}
    records = load_pool(pool)
    tok = load_model(spec.model).tokenizer
    groups: dict[bytes, list[str]] = collections.defaultdict(list)
    for r in records:
        e = encode_record(tok, r, max_length=n)
        if not any(lab != IGNORE for lab in e.labels[1:]):
            continue  # no signal at all: extraction names these itself
        key = hashlib.blake2b(np.asarray(e.input_ids + e.labels, dtype=np.int64).tobytes(), digest_size=16).digest()
        groups[key].append(r.id)
    same = [g for g in groups.values() if len(g) > 1]
    drop = [i for g in same for i in g[1:]]
    print(f"# {spec.name}: {len(records)} records drawn, {len(same)} groups of equal {n}-token windows, "
          f"{len(drop)} records to drop", file=sys.stderr)
    for g in same:
        print(f"#   keep {g[0]}; drop {', '.join(g[1:])}", file=sys.stderr)
    print("exclude:")
    for i in drop:
        print(f"  - {i!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
