"""Attention-head activation patterns (the head-pattern paper): patterns, studies, analyses, the mix.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.loop.training` and the base modules.
"""
