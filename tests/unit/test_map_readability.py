"""The graph views' readability helpers: strongest edges per node (netview), map zoom, marker size and
cluster labels (graph.layout), on hand-made inputs with known answers."""
import numpy as np
import pytest

from g2is_core.app.netview import strongest_edges
from g2is_core.graph.layout import cluster_labels, fit_ranges, marker_size

# A square 0-1-2-3 with a diagonal 0-2; cosines chosen so every ranking is strict.
EDGES = [(0, 1, 0.9), (1, 2, 0.5), (2, 3, 0.8), (3, 0, 0.3), (0, 2, 0.6)]


def test_m1_keeps_each_nodes_strongest_edge():
    # 0: 0-1 (.9); 1: 0-1; 2: 2-3 (.8); 3: 2-3
    assert strongest_edges(EDGES, 1) == [(0, 1, 0.9), (2, 3, 0.8)]


def test_m2_keeps_each_nodes_two_strongest():
    # 0: 0-1, 0-2; 1: 0-1, 1-2; 2: 2-3, 0-2; 3: 2-3, 3-0
    assert strongest_edges(EDGES, 2) == EDGES
    # drop the weakest edge's second support: with 3-0 at .3 and a new 3-1 at .4, 3 keeps 2-3 and 3-1,
    # 0 keeps 0-1 and 0-2, so 3-0 goes
    more = EDGES + [(3, 1, 0.4)]
    assert (3, 0, 0.3) not in strongest_edges(more, 2)
    assert (3, 1, 0.4) in strongest_edges(more, 2)


def test_threshold_and_focus():
    assert strongest_edges(EDGES, None, threshold=0.55) == [(0, 1, 0.9), (2, 3, 0.8), (0, 2, 0.6)]
    assert strongest_edges(EDGES, 2, threshold=0.7) == [(0, 1, 0.9), (2, 3, 0.8)]
    # every edge of the focus survives m and threshold
    assert strongest_edges(EDGES, 1, threshold=0.7, focus=3) == [(0, 1, 0.9), (2, 3, 0.8), (3, 0, 0.3)]
    assert strongest_edges(EDGES, 0) == []
    assert strongest_edges(EDGES, 0, focus=1) == [(0, 1, 0.9), (1, 2, 0.5)]
    with pytest.raises(ValueError):
        strongest_edges(EDGES, -1)


def test_walk_edges_always_survive_and_do_not_use_the_budget():
    edges = [(0, 1, 0.1, "walk"), (0, 1, 0.9, "knn"), (0, 2, 0.5, "knn"), (1, 2, 0.2, "knn")]
    assert strongest_edges(edges, 1) == [(0, 1, 0.1, "walk"), (0, 1, 0.9, "knn"), (0, 2, 0.5, "knn")]


def test_ties_are_deterministic():
    edges = [(1, 0, 0.5), (0, 2, 0.5)]
    assert strongest_edges(edges, 1) == strongest_edges(list(reversed(edges)), 1)[::-1]
    assert strongest_edges(edges, 1) == edges  # 0 keeps (0, 2) (smaller src); 1 and 2 keep their only edge


def test_fit_ranges_zoom_onto_the_bulk():
    x = np.r_[np.linspace(0, 1, 98), -100.0, 100.0]  # two strays far outside the bulk
    y = np.r_[np.linspace(10, 12, 98), 0.0, 0.0]
    (x0, x1), (y0, y1) = fit_ranges(x, y, q=0.02, margin=0.1)
    assert -0.2 < x0 < 0 and 1 < x1 < 1.2
    assert 9.5 < y0 < 10 and 12 < y1 < 12.5
    (a, b), _ = fit_ranges([-100, 0, 1, 100], [0, 0, 0, 0], q=0.0, margin=0.0)
    assert (a, b) == (-100, 100)
    assert fit_ranges([3.0], [np.nan]) == ((2.5, 3.5), (-1.0, 1.0))
    with pytest.raises(ValueError):
        fit_ranges([0, 1], [0, 1], q=0.5)


def test_marker_size_shrinks_with_the_count():
    assert marker_size(33) == marker_size(500) == 11.0
    assert marker_size(2000) == pytest.approx(5.5)
    assert marker_size(10**6) == 4.0
    assert marker_size(0) == 11.0


def test_cluster_labels_name_each_blob_by_its_majority():
    rng = np.random.default_rng(0)
    centres = {"arith": (0, 0), "trivia": (50, 0), "code": (0, 50)}
    xs, ys, vals = [], [], []
    for name, (cx, cy) in centres.items():
        xs += list(cx + rng.normal(0, 1, 40))
        ys += list(cy + rng.normal(0, 1, 40))
        vals += [name] * 40
    vals[0] = "trivia"  # one stray value inside the arith blob: majority 39/40 still labels it plainly
    lab = cluster_labels(xs, ys, vals)
    assert sorted(lab["label"]) == ["arith", "code", "trivia"]
    for name, (cx, cy) in centres.items():
        row = lab[lab["label"] == name].iloc[0]
        assert abs(row["x"] - cx) < 1 and abs(row["y"] - cy) < 1
        assert row["n"] == 40
    assert lab.loc[lab["label"] == "arith", "share"].iat[0] == pytest.approx(39 / 40)
    # deterministic; a mixed cluster says its share
    assert lab.equals(cluster_labels(xs, ys, vals))
    mixed = cluster_labels([0, 0.1, 0.2, 0.3, 0.4], [0] * 5, ["a", "a", "a", "b", "b"], k=1)
    assert mixed["label"].tolist() == ["a (60%)"]
    assert cluster_labels([0, 1], [0, 1], ["a", "b"]).empty  # fewer points than min_points
