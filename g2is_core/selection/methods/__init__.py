"""The selection methods, one module per method. This list IS the registry: importing a method's
module registers it (``@register`` in :mod:`g2is_core.selection.registry`), in this order (the order
of ``g2is select --method`` choices and of every listing). A new method is one new file here plus
one line below (docs/selection.md, "Adding a method").
"""
from . import random  # noqa: F401
from . import less  # noqa: F401
from . import g2is  # noqa: F401
from . import g2is_ablation  # noqa: F401  (g2is-score, g2is-noconflict, g2is-noconsistency)
from . import embedding  # noqa: F401
from . import bm25  # noqa: F401
from . import repr  # noqa: F401
from . import heads  # noqa: F401
