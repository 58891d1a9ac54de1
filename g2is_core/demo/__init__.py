"""The demo: the embedded default end to end (:mod:`.run`), and the pack of its results shipped with the
package (:mod:`.pack`), which the app shows on first open.

May import: :mod:`g2is_core.data`, :mod:`g2is_core.models`, :mod:`g2is_core.features`,
:mod:`g2is_core.graph`, :mod:`g2is_core.selection`, :mod:`g2is_core.heads`, :mod:`g2is_core.loop`
and the base modules.
"""
