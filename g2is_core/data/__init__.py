"""Instruction data: records, file loaders, tokenisation, the built-in task suite.

What lives here: :mod:`.records` (the ``Record`` type and ``DataError``), :mod:`.loaders` (every file
format and the shared-data families, gzip, strict/lenient reading), :mod:`.encoding` (chat template,
response-only labels, length buckets), :mod:`.tasks` (the built-in suite with exact answers),
:mod:`.spec` (``DataSpec``: the one grammar that names data for the CLI, experiment specs and the app),
:mod:`.limits` (``InputLimits``: the caps every load reads under, set by G2IS_MAX_* variables).

May import: :mod:`g2is_core.workspace`, :mod:`g2is_core.progress`, :mod:`g2is_core.runtime`. Nothing else
of the package: every other folder builds on this one.
"""
