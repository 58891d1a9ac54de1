"""The closed loop from data to score: training, evaluation, experiment specs, the run registry, tables.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.features`,
:mod:`g2is_core.selection`, :mod:`g2is_core.heads.patterns` (the runner measures each cell's activation pattern
for the closed loop of bridge.py) and the base modules.
"""
