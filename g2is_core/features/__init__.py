"""LESS gradient features: the projection (:mod:`.projection`), the warmup (:mod:`.warmup`), per-example
extraction (:mod:`.extract`), the store (:mod:`.store`), the Ray backend (:mod:`.ray_backend`).

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.loop.training` (the warmup's SFT
loop) and the base modules; the Ray backend's activation-pattern task also calls :mod:`g2is_core.heads.patterns`.
"""
