"""Support for the Streamlit pages, without Streamlit: artefact readers, network views, small helpers.

Pages ask these functions and show what they return. May import any core folder; never Streamlit,
never :mod:`g2is_core.cli`.
"""
