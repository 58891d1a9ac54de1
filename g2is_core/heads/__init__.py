"""Attention-head activation patterns (the head-pattern paper): patterns, studies, analyses, the mix.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models` (the studies fine-tune with its SFT loop) and the
base modules.
"""
