"""Heads: attention-head activation patterns (L x H) before and after SFT, and their change."""
from __future__ import annotations

import streamlit as st

from pages import _ui

st.title("Heads")
st.caption("Activation pattern AP[l, h] = mean |sum A * dLoss/dA| per head, labelled L{layer}H{head}.")
_ui.artefacts(
    "heads",
    empty="No activation pattern yet. Measure one with `g2is heads ...` (see `g2is heads --help`) "
          "or from the Runs page.",
    commands=["g2is heads --help"],
    note="Patterns use the default model: fetch it first (Runs page, “Fetch the default model”).",
)
