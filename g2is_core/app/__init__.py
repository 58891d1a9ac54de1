"""Support for the Streamlit pages, without Streamlit: typed artefact readers, launch forms, network views.

What lives here: :mod:`.readers` (the only way the pages reach artefact files), :mod:`.forms` (the Runs
page's job templates), :mod:`.kit` (tables, path rules, uploads, status lines), :mod:`.netview`,
:mod:`.bridge` (head signatures of a graph's pool and a run's target, for the graph and walk views).
Pages ask these functions and show what they return.

May import: any core folder and :mod:`g2is_core.jobs`; never Streamlit, never the CLI.
"""
