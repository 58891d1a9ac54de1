"""G2IS Studio core: gradient-based instruction data selection and attention-head analysis.

Importing the package sets the process's thread policy defaults (see :mod:`g2is_core.runtime`)
before torch starts, so every entry point (CLI, app, tests) gets the same behaviour.
"""
__version__ = "0.1.0"

from . import runtime as _runtime  # noqa: F401,E402  (sets OMP_WAIT_POLICY etc. before torch loads)
