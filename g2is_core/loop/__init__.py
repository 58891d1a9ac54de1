"""The closed loop from data to score: training, evaluation, experiment specs, the run registry, tables.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.features`,
:mod:`g2is_core.selection` and the base modules.
"""
