"""Pretraining-data impact by machine unlearning (GRACE): unlearning and the corpus x capability study.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.loop` and the base modules.
"""
