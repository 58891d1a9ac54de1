"""LESS gradient features: the projection, the warmup, per-example extraction, the store, the Ray backend.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models` and the base modules.
"""
