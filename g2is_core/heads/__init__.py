"""Attention-head activation patterns (the head-pattern paper): patterns (:mod:`.patterns`), one task's
pattern measured and saved (:mod:`.measure`), over Ray workers (:mod:`.ray`), studies and the mix
(:mod:`.study`), analyses (:mod:`.analysis`).

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models` (the studies fine-tune with its SFT loop),
:mod:`g2is_core.features.ray_backend` (the Ray plumbing) and the base modules.
"""
