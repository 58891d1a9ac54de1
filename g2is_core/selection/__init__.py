"""Training-data selection: the budget, the method registry, the methods, and stored selection runs.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.features`,
:mod:`g2is_core.graph` and the base modules.
"""
