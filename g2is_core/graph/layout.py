"""2-D layout of a feature matrix for the Instruction graph page: UMAP, computed once and cached.

``layout(features, key)`` returns a DataFrame (node, x, y) [N rows]. It is cached in the workspace
kind ``layouts`` under a hash of the features' content key (a gradient store / feature-set key, or
the array's sha256) and the layout settings, as ``layout.parquet`` with a sidecar, so the page only
ever reads a parquet file: it never computes a layout in a rerun.

Method: features are L2-normalised (cosine geometry, as the graph), reduced to at most 50 dims by
PCA (standard before UMAP for wide features: d is 2048-8192 here), then UMAP (umap-learn,
metric cosine, fixed random_state; that makes it deterministic and single-threaded). With fewer
than :data:`MIN_UMAP` rows UMAP's neighbourhood graph is meaningless, so the layout is the first
two principal components instead, and the sidecar's ``note`` says so. ``method="pca"`` asks for
that layout directly (instant; for previews and tests). Cost: numba compiles UMAP on first use in
a process (about 30 s here); then roughly 0.03 s per row on one core.

For the pages (pure, no plotting): :func:`map_frame` (the table behind the map), :func:`display_mask`
(which points the browser draws), :func:`fit_ranges` (zoom onto the drawn points), :func:`marker_size`
and :func:`cluster_labels` (the majority task/source of each k-means cluster, at its median).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import workspace as ws_mod
from ..linalg import unit_rows
from ..workspace import Workspace, hash_config

KIND = "layouts"
MIN_UMAP = 15
METHODS = ("umap", "pca")  # pca: the first two principal components (instant; previews and tests)
PCA_DIMS = 50
DISPLAY_MAX = 25_000  # the map draws at most this many points (display_mask) unless asked for all
MAX_FIT = 20_000  # above this many rows the maps are fitted on a sample and rows are placed block by block


def layout_dir(ws: Workspace, features_key: str, **cfg: Any) -> Path:
    return ws.root / KIND / hash_config({"features": features_key, **_config(**cfg)})


def _config(n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0, method: str = "umap") -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"layout method {method!r} is not one of {', '.join(METHODS)}")
    return {"method": method, "n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "seed": int(seed),
            "pca_dims": PCA_DIMS}


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[0], x.shape[1])
    return PCA(n_components=dims, random_state=seed, svd_solver="auto").fit_transform(x).astype(np.float32)


def _pca2(x: np.ndarray, seed: int) -> np.ndarray:
    """[N, 2]: the first two principal components (a zero column when there is only one)."""
    z = _pca(x, 2, seed)
    return np.c_[z, np.zeros((len(z), 2 - z.shape[1]), np.float32)] if z.shape[1] < 2 else z


def compute_layout(features: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                   block: int = 16384, method: str = "umap", max_fit: int = MAX_FIT) -> tuple[np.ndarray, str]:
    """[N, 2] float32 coordinates of the rows of ``features`` [N, d], and a note naming the method used.

    Memory stays bounded for any N: above ``max_fit`` rows, PCA and UMAP are fitted on a seeded sample
    of ``max_fit`` rows and every row is then placed with the fitted maps, block by block, reading
    ``features`` (a memmap is fine) one block at a time; only the [N, 2] output grows with N.
    """
    x = features
    if getattr(x, "ndim", None) != 2 or x.shape[0] < 1:
        x = np.asarray(x)
        raise ValueError(f"features must be a non-empty 2-D array [N, d]; got shape {x.shape}")
    n = x.shape[0]
    if n < 3:
        out = np.zeros((n, 2), np.float32)
        out[:, 0] = np.arange(n)
        return out, f"PCA skipped: only {n} row(s); points placed on a line"
    if n > max_fit and method == "umap":
        return _layout_by_sample(x, n_neighbors, min_dist, seed, block, max_fit)
    xs = np.empty((n, x.shape[1]), np.float32)
    for a in range(0, n, block):  # normalise block by block (the input may be an fp16 memmap)
        xs[a:a + block] = unit_rows(x[a:a + block], zero="keep")
    if method == "pca":
        return _pca2(xs, seed), "PCA (first two components), as asked"
    if n < MIN_UMAP:
        return _pca2(xs, seed), f"PCA (first two components): only {n} rows, UMAP needs at least {MIN_UMAP}"
    z = _pca(xs, PCA_DIMS, seed) if xs.shape[1] > PCA_DIMS else xs
    return _umap(z, n_neighbors, min_dist, seed).fit_transform(z).astype(np.float32), \
        "UMAP (cosine) of the features after PCA to 50 dims"


def _umap(z: np.ndarray, n_neighbors: int, min_dist: float, seed: int):
    import umap

    n = len(z)
    return umap.UMAP(n_components=2, n_neighbors=min(int(n_neighbors), n - 1), min_dist=min_dist, metric="cosine",
                     random_state=seed, init="spectral" if n > 2 * n_neighbors else "random")


def _layout_by_sample(x, n_neighbors: int, min_dist: float, seed: int, block: int, max_fit: int):
    from sklearn.decomposition import PCA

    n = x.shape[0]
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
    sample = unit_rows(np.concatenate([np.asarray(x[fit_rows[a:a + block]]) for a in range(0, max_fit, block)]),
                       zero="keep")
    pca = PCA(n_components=min(PCA_DIMS, sample.shape[1]), random_state=seed).fit(sample) \
        if sample.shape[1] > PCA_DIMS else None
    z = pca.transform(sample).astype(np.float32) if pca is not None else sample
    reducer = _umap(z, n_neighbors, min_dist, seed).fit(z)
    del sample, z
    out = np.empty((n, 2), np.float32)
    for a in range(0, n, block):
        b = unit_rows(x[a:a + block], zero="keep")
        zb = pca.transform(b).astype(np.float32) if pca is not None else b
        out[a:a + block] = reducer.transform(zb)
    return out, (f"UMAP (cosine, after PCA to 50 dims) fitted on a seeded sample of {max_fit:,} of {n:,} rows; "
                 "every row placed with the fitted maps, block by block (bounded memory)")


def layout(features: np.ndarray, features_key: str | None = None, workspace: Workspace | None = None, *,
           n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0, ids: list | None = None,
           method: str = "umap"):
    """The cached layout (DataFrame: node, x, y[, id]) of ``features``; computed and saved on first use."""
    import pandas as pd

    ws = workspace or Workspace()
    key = features_key or hash_config({"sha256": ws_mod.hash_array(np.asarray(features))})
    d = layout_dir(ws, key, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, method=method)
    if ws.is_complete(d):
        return pd.read_parquet(d / "layout.parquet")
    t0 = time.perf_counter()
    xy, note = compute_layout(features, n_neighbors, min_dist, seed, method=method)
    df = pd.DataFrame({"node": np.arange(len(xy), dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1]})
    if ids is not None:
        df["id"] = [str(i) for i in ids]
    d.mkdir(parents=True, exist_ok=True)
    with ws_mod.atomic_path(d / "layout.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    ws_mod.write_sidecar(d, "layout", _config(n_neighbors, min_dist, seed, method), inputs={"features_key": key},
                         extra={"n": len(df), "note": note, "seconds": round(time.perf_counter() - t0, 3)})
    return df


def find_layout(features_key: str, workspace: Workspace | None = None):
    """The newest cached layout of these features (any settings) as (DataFrame, sidecar), or None."""
    import pandas as pd

    ws = workspace or Workspace()
    for d, meta in ws.list(KIND):
        if (meta.get("inputs") or {}).get("features_key") == features_key:
            return pd.read_parquet(d / "layout.parquet"), meta
    return None


def map_frame(coords, records=None, *, ids: list | None = None, highlight: set | None = None,
              hover_chars: int = 120):
    """The table behind the Instruction graph map: node, x, y, id, source, task, selected, hover.

    ``coords``: the layout DataFrame (node, x, y). ``records``: the pool records in node order (or
    None: only ids are known). ``hover`` is HTML-escaped (plotly renders hover text as HTML) and
    carries the prompt only when ``hover_chars`` > 0.
    """
    import html

    import pandas as pd

    df = coords[["node", "x", "y"]].copy()
    n = len(df)
    if records is not None and len(records) != n:
        raise ValueError(f"{len(records)} records for a layout of {n} nodes; the layout is of other data")
    if records is not None:
        df["id"] = [r.id for r in records]
        df["source"] = [r.source for r in records]
        df["task"] = [r.task for r in records]
        prompts = [r.prompt for r in records]
    else:
        df["id"] = [str(i) for i in (ids if ids is not None else coords.get("id", df["node"]))]
        df["source"] = "(unknown)"
        df["task"] = "(unknown)"
        prompts = [""] * n
    hl = highlight or set()
    df["selected"] = [i in hl for i in df["id"]]

    esc = html.escape
    ids_, tasks_, srcs_ = df["id"].tolist(), df["task"].tolist(), df["source"].tolist()

    def prompt(i: int) -> str:
        p = prompts[i].replace("\n", " ")
        p = p if len(p) <= hover_chars else p[: hover_chars - 1] + "…"
        return f"<br>{esc(p)}" if hover_chars > 0 and p else ""

    # plain list work, not DataFrame cell access: 100k rows take well under a second
    df["hover"] = [f"node {i}<br>{esc(ids_[i])}<br>{esc(tasks_[i])} · {esc(srcs_[i])}{prompt(i)}" for i in range(n)]
    return df


def display_mask(visible: np.ndarray, keep: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Which nodes the browser draws: all visible ones up to ``max_points``; beyond that a fixed random
    subset of the visible nodes plus every ``keep`` node (selection, focus, neighbours).

    Server-side downsampling keeps the map light at 100k+ nodes while the subset stays the same from
    one rerun to the next (seeded), so panning does not make points jump. Returns a bool mask [N].
    """
    visible = np.asarray(visible, bool)
    keep = np.asarray(keep, bool) & visible
    n_vis = int(visible.sum())
    if n_vis <= max_points:
        return visible.copy()
    rank = np.random.default_rng(seed).permutation(len(visible))  # node -> a fixed pseudo-random rank
    vis_idx = np.flatnonzero(visible & ~keep)
    budget = max(0, max_points - int(keep.sum()))
    chosen = vis_idx[np.argsort(rank[vis_idx], kind="stable")[:budget]]
    out = keep.copy()
    out[chosen] = True
    return out


# ----------------------------------------------------------------------------- map readability
def fit_ranges(x, y, *, q: float = 0.01, margin: float = 0.08, min_span: float = 1e-6
               ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges that zoom the map onto the drawn points: ((x0, x1), (y0, y1)).

    Each axis spans its ``q`` .. ``1 - q`` quantiles, widened by ``margin`` of that span on both
    sides. Why quantiles, not min/max: a UMAP layout of a few tight, far-apart clusters plus a handful
    of strays leaves most of a min/max canvas empty; the strays stay reachable by panning or the
    plotly "autoscale" button. A degenerate axis (one point, or all equal) gets a span of 1 around it.
    NaN coordinates are ignored; no finite point gives ((-1, 1), (-1, 1)).
    """
    if not 0 <= q < 0.5 or margin < 0:
        raise ValueError(f"q must be in [0, 0.5) and margin >= 0 (got q={q}, margin={margin})")

    def one(v) -> tuple[float, float]:
        v = np.asarray(v, float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return (-1.0, 1.0)
        lo, hi = (float(t) for t in np.quantile(v, [q, 1 - q]))
        span = hi - lo
        if span < min_span:
            mid = (lo + hi) / 2
            return (mid - 0.5, mid + 0.5)
        return (lo - margin * span, hi + margin * span)

    return one(x), one(y)


def marker_size(n_drawn: int, *, largest: float = 11.0, smallest: float = 4.0) -> float:
    """Marker diameter (px) for a map of ``n_drawn`` points: ``largest`` up to 500 points, then
    shrinking with the square root of the count (the same ink per area) down to ``smallest``.

    Why: the demo's 480 points drawn at 5 px read as dust on a 620 px canvas; 25k points at 11 px
    would cover each other.
    """
    n = max(int(n_drawn), 1)
    return float(np.clip(largest * np.sqrt(500 / max(n, 500)), smallest, largest))


def _kmeans(xy: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding (seeded): the cluster of each row [N]."""
    rng = np.random.default_rng(seed)
    n = len(xy)
    centres = [xy[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((xy[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        if d2.sum() <= 0:
            break
        centres.append(xy[rng.choice(n, p=d2 / d2.sum())])
    c = np.asarray(centres, float)
    lab = np.zeros(n, int)
    for _ in range(iters):
        lab = ((xy[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([xy[lab == j].mean(0) if np.any(lab == j) else c[j] for j in range(len(c))])
        if np.allclose(new, c):
            break
        c = new
    return lab


def cluster_labels(x, y, values, *, k: int | None = None, max_k: int = 12, min_points: int = 5,
                   max_sample: int = 20_000, seed: int = 0):
    """Text labels for the map: the majority ``values`` (task or source) of each k-means cluster of the
    2-D points, placed at the cluster's median.

    ``k`` defaults to the number of distinct values (capped at ``max_k``): a layout whose groups are
    the tasks then gets one label per task. Clusters with fewer than ``min_points`` points get no
    label. Above ``max_sample`` points the clusters are found on a seeded sample (labels only need
    the rough shape). Returns a DataFrame (x, y, label, share, n) [clusters], largest first; ``share``
    is the majority's fraction of the cluster, ``label`` is "value" or "value (share%)" when the
    majority is below 90%.
    """
    import pandas as pd

    xy = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    vals = np.asarray(values, dtype=object)
    ok = np.isfinite(xy).all(1)
    xy, vals = xy[ok], vals[ok]
    cols = ["x", "y", "label", "share", "n"]
    if len(xy) < max(min_points, 1):
        return pd.DataFrame(columns=cols)
    if len(xy) > max_sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(xy), max_sample, replace=False))
        xy, vals = xy[pick], vals[pick]
    k = min(k or len(set(vals.tolist())), max_k, len(xy))
    lab = _kmeans(xy, max(k, 1), seed)
    rows = []
    for j in np.unique(lab):
        idx = lab == j
        if idx.sum() < min_points:
            continue
        names, counts = np.unique(vals[idx].astype(str), return_counts=True)
        top = int(np.argmax(counts))  # ties: the first name in sorted order
        share = float(counts[top] / idx.sum())
        text = str(names[top]) if share >= 0.9 else f"{names[top]} ({share:.0%})"
        rows.append({"x": float(np.median(xy[idx, 0])), "y": float(np.median(xy[idx, 1])), "label": text,
                     "share": share, "n": int(idx.sum())})
    rows.sort(key=lambda r: (-r["n"], r["label"]))
    return pd.DataFrame(rows, columns=cols)
