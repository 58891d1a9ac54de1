"""``python -m g2is_core.cli``: the same entry point as the ``g2is`` script (background jobs run it)."""
import sys

from . import main

sys.exit(main())
