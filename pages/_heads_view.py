"""Streamlit helpers shared by the Instruction graph and Walk pages' head-signature views (docs/bridge.md,
"The graph and walk views"): the cached signatures of a side's gradient stores and the [layer x head] heatmap.

Layout only; the signatures and every number come from :mod:`g2is_core.app.bridge`.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from g2is_core.app import bridge


@st.cache_resource(max_entries=6, show_spinner="Loading the head signatures")
def signatures(root: str, keys: tuple[str, ...], side: str, stamp: float) -> bridge.Signatures:  # noqa: ARG001
    """:func:`bridge.store_signatures` of the stores ``keys`` in the workspace at ``root`` (read, never written;
    ``stamp``: :func:`bridge.signature_stamp`, the cache key). Raises what it raises (a sentence)."""
    from g2is_core.workspace import Workspace

    return bridge.store_signatures(Workspace(root, read_only=True), keys, side)


def heatmap(z: np.ndarray, title: str, height: int = 300) -> go.Figure:
    """[L, H] as a heatmap: layers on y (layer 0 at the bottom), heads on x, hover "L{l} H{h}: value"."""
    L, H = np.shape(z)
    fig = go.Figure(go.Heatmap(z=np.asarray(z), x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)],
                               colorscale="Viridis", zmin=0, colorbar={"thickness": 10},
                               hovertemplate="%{y} %{x}: %{z:.3g}<extra></extra>"))
    fig.update_layout(title={"text": html.escape(title), "font": {"size": 13}}, height=height,
                      margin={"l": 0, "r": 0, "t": 30, "b": 0})
    return fig
