"""LESS gradient features: the projection (:mod:`.projection`), the warmup (:mod:`.warmup`), per-example
extraction (:mod:`.extract`), the store (:mod:`.store`), the Ray backend (:mod:`.ray_backend`), and
which of the two extracts each checkpoint (:mod:`.backends`).

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models` (the warmup trains with its SFT loop) and the base
modules.
"""
