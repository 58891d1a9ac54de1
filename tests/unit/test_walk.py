"""Core knowledge, budgets and the G2IS walk on hand-made features with known answers, plus an
exact comparison with the dense reference walk (tests/unit/walk_reference.py) and the ``walk`` CLI."""
import os

os.environ.setdefault("G2IS_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from g2is_core.cli.walk import register  # noqa: E402
from g2is_core.graph.knn import build_knn  # noqa: E402
from g2is_core.linalg import unit_rows  # noqa: E402
from g2is_core.graph.walk import CoreKnowledge, WalkResult, budgets, core_knowledge, replay, walk  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from walk_reference import reference_budgets, reference_walk  # noqa: E402

COUNT_COLS = ["nbr_excluded", "nbr_conflict", "nbr_consistency", "scan_excluded", "scan_conflict", "scan_consistency"]


def unit(*v):
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def hand_core(*dirs, weights=None):
    comps = np.stack([unit(*v) for v in dirs])
    w = np.full(len(comps), 1.0 / len(comps)) if weights is None else np.asarray(weights, float)
    return CoreKnowledge(comps, w, w.copy(), ["pc"] * len(comps))


# ----------------------------------------------------------------------------- budgets
def test_budgets_largest_remainder():
    assert budgets(10, [0.5, 0.3, 0.2]) == [5, 3, 2]
    assert budgets(10, [0.3, 0.7]) == [3, 7]            # float 0.3 * 10 = 2.999...: still 3
    assert budgets(7, [1, 1, 1]) == [3, 2, 2]           # remainder tie -> lower index
    assert budgets(5, [0.46, 0.34, 0.2]) == [2, 2, 1]   # 2.3, 1.7, 1.0 -> floors 2,1,1 + 1 to the 0.7
    assert budgets(0, [1.0]) == [0]
    with pytest.raises(ValueError):
        budgets(3, [0.0, 0.0])
    with pytest.raises(ValueError):
        budgets(3, [-0.1, 1.1])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.floats(0.001, 1000.0), min_size=1, max_size=12))
def test_budgets_sum_to_B_property(B, w):
    b = budgets(B, w)
    assert sum(b) == B and all(x >= 0 for x in b)
    share = np.asarray(w) / sum(w)
    assert all(abs(x - B * s) < 1 + 1e-9 for x, s in zip(b, share))  # never more than 1 off the exact share
    if B <= 1000:
        assert sum(reference_budgets(B, w)) == B


# ----------------------------------------------------------------------------- core knowledge
def spectrum_target():
    """Six points mu +- a e1, mu +- b e2, mu +- c e3 with a^2 : b^2 : c^2 = 6 : 3 : 1 (d = 5)."""
    mu = np.array([-0.5, 0.0, 0.0, 2.0, 0.0])
    e = np.eye(5)
    pts = [mu + s * r * e[i] for i, r in enumerate(np.sqrt([6.0, 3.0, 1.0])) for s in (1, -1)]
    return np.array(pts), mu


def test_core_knowledge_k_and_weights():
    y, _ = spectrum_target()
    c = core_knowledge(y, 0.5)                    # 0.6 > 0.5 -> K = 1
    assert c.k == 1 and np.allclose(c.weights, [1.0]) and np.allclose(c.explained, [0.6])
    c = core_knowledge(y, 0.7)                    # 0.6, 0.9 -> K = 2, weights 2/3, 1/3
    assert c.k == 2 and np.allclose(c.weights, [2 / 3, 1 / 3]) and np.isclose(c.cumulative, 0.9)
    assert np.allclose(np.abs(c.components), np.eye(5)[:2], atol=1e-9)
    assert np.allclose(np.linalg.norm(c.components, axis=1), 1.0)
    assert core_knowledge(y, 0.95).k == 3
    assert core_knowledge(y, 0.6 - 1e-9).k == 1 and core_knowledge(y, 0.6 + 1e-9).k == 2  # "exceeds"


def test_core_knowledge_sign_options():
    y, mu = spectrum_target()
    faithful = core_knowledge(y, 0.5)
    assert np.allclose(faithful.components[0], [1, 0, 0, 0, 0])     # sklearn: largest |entry| positive
    aligned = core_knowledge(y, 0.5, align_signs=True)
    assert np.allclose(aligned.components[0], [-1, 0, 0, 0, 0])     # <e1, mu> = -0.5 < 0 -> flipped
    assert aligned.components[0] @ mu >= 0


def test_core_knowledge_add_mean_and_uncentred():
    y, mu = spectrum_target()
    c = core_knowledge(y, 0.7, add_mean=True)
    share = 6 * (mu @ mu) / (y ** 2).sum()             # 6 * 4.25 / (25.5 + 20) = 0.5604...
    assert c.kinds == ["mean", "pc", "pc"]
    assert np.allclose(c.components[0], mu / np.linalg.norm(mu))
    assert np.allclose(c.weights, [share, 0.6 * (1 - share) / 0.9, 0.3 * (1 - share) / 0.9])
    assert np.isclose(c.weights.sum(), 1.0)
    u = core_knowledge(y, 0.5, centred=False)
    assert u.k >= 1 and np.isclose(u.weights.sum(), 1.0)
    assert u.components[0] @ mu != 0                  # the uncentred SVD keeps the mean in play


def test_core_knowledge_single_example():
    y = np.array([[0.0, 3.0, 4.0]])
    with pytest.raises(ValueError, match="uncentred"):
        core_knowledge(y)
    u = core_knowledge(y, centred=False)
    assert u.k == 1 and np.allclose(u.components[0], [0, 0.6, 0.8])
    m = core_knowledge(y, add_mean=True)
    assert m.kinds == ["mean"] and np.allclose(m.components[0], [0, 0.6, 0.8])
    with pytest.raises(ValueError):
        core_knowledge(y, variance=1.0)


# ----------------------------------------------------------------------------- hand-built walks
def test_anchors_follow_signed_similarity_and_exclusion():
    x = np.stack([unit(1, 0.1, 0), unit(1, 0, 0), unit(0.5, 1, 0), unit(-1, 0, 0)])
    nbrs = np.array([[1], [0], [0], [2]])
    # two components along e1: the second must anchor on the second-best row, not row 1 again
    core = hand_core((1, 0, 0), (1, 0, 0))
    r = walk(x, core, nbrs, 2)
    assert r.selected.tolist() == [1, 0]
    assert r.trajectory["source"].tolist() == ["anchor", "anchor"]
    assert r.trajectory["scan_excluded"].tolist() == [0, 1]
    # anchor pool of 1 whose only member is taken: the best not-in-E example outside it
    r = walk(x, core, nbrs, 2, anchors_top=1)
    assert r.selected.tolist() == [1, 0] and r.trajectory["rank"].tolist() == [0, 1]
    # a negative component anchors on the most negative row (signed similarity, not |.|)
    r = walk(x, hand_core((-1, 0, 0)), nbrs, 1)
    assert r.selected.tolist() == [3]


def test_no_conflict_rejection():
    x = np.stack([unit(1, 0, 0), unit(-0.1, 1, 0), unit(0.8, 0.6, 0), unit(0.5, 0, 1)])
    nbrs = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 2, 1]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 2)
    t = r.trajectory
    assert r.selected.tolist() == [0, 2]                  # node 1 has cos -0.1 with the anchor
    assert t.loc[1, "source"] == "local" and t.loc[1, "nbr_conflict"] == 1 and t.loc[1, "nbr_consistency"] == 0
    assert np.isclose(t.loc[1, "sim_prev"], 0.8)


def test_consistency_rejection():
    # node 1: cos with anchor 0.1 >= 0 (no conflict) but cos(S + x1, e1) = 0.74 < 0.8 * 1
    x = np.stack([unit(1, 0, 0), unit(0.1, 0.995, 0), unit(0.8, 0.6, 0), unit(0.5, 0, 1)])
    nbrs = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 2, 1]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 2, delta=0.8)
    t = r.trajectory
    assert r.selected.tolist() == [0, 2]
    assert t.loc[1, "nbr_consistency"] == 1 and t.loc[1, "nbr_conflict"] == 0
    s = x[0] + x[2]
    assert np.isclose(t.loc[1, "consistency_before"], 1.0)
    assert np.isclose(t.loc[1, "consistency_after"], s[0] / np.linalg.norm(s))
    # with a lenient delta the first neighbour passes
    assert walk(x, hand_core((1, 0, 0)), nbrs, 2, delta=0.7).selected.tolist() == [0, 1]


def test_fallback_when_neighbours_fail_or_are_excluded():
    # anchor 0's only neighbour (1) conflicts; the fallback takes the best-scoring passing row (3)
    x = np.stack([unit(1, 0, 0), unit(-0.2, 1, 0), unit(0.3, 0, 1), unit(0.9, 0.3, 0.1), unit(0.2, 1, 0)])
    nbrs = np.array([[1], [0], [0], [0], [0]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 2)
    t = r.trajectory
    assert r.selected.tolist() == [0, 3]
    assert t.loc[1, "source"] == "fallback" and t.loc[1, "nbr_conflict"] == 1
    assert t.loc[1, "scan_excluded"] == 1 and t.loc[1, "scan_conflict"] == 0   # row 0 (rank 0) is in E
    # neighbour already excluded -> fallback as well: from 3 the only neighbour is 0 (in E)
    r = walk(x, hand_core((1, 0, 0)), nbrs, 3)
    assert r.selected.tolist() == [0, 3, 2]
    assert r.trajectory.loc[2, "nbr_excluded"] == 1 and r.trajectory.loc[2, "source"] == "fallback"
    assert r.components.loc[0, "fallbacks"] == 2


def test_fallback_rescans_rows_that_failed_consistency_earlier():
    # step 2: neighbour of 4 is excluded; the fallback passes over row 1 (fails consistency) and takes 2.
    # step 3: S has changed, so row 1, rejected before, now passes: the fallback must rescan from the top.
    raw = np.array([[1, 0, 0], [0.7, -0.9, 0.7], [0.3, -0.8, -0.7], [-0.3, -0.2, -0.7], [0.9, -0.6, 0.8]])
    x = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    nbrs = np.array([[4], [4], [4], [4], [0]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 4, delta=0.9)
    t = r.trajectory
    assert r.selected.tolist() == [0, 4, 2, 1]
    assert t["source"].tolist() == ["anchor", "local", "fallback", "fallback"]
    assert t.loc[2, "scan_consistency"] == 1 and t.loc[2, "scan_excluded"] == 2
    assert t.loc[3, "scan_consistency"] == 0 and t.loc[3, "rank"] == 2
    ref = reference_walk(x, [unit(1, 0, 0)], [1.0], 4, nbrs, delta=0.9)
    assert r.selected.tolist() == [s["node"] for s in ref]
    want = pd.DataFrame(ref).reindex(columns=COUNT_COLS).fillna(0).to_numpy().astype(int)
    assert (t[COUNT_COLS].to_numpy() == want).all()


def test_under_fill_when_nothing_passes():
    # every other row conflicts with the anchor: the component stops at 1 of 3, no relaxation
    x = np.stack([unit(1, 0, 0), unit(-0.1, 1, 0), unit(-0.2, 0, 1), unit(-0.3, 1, 1)])
    nbrs = np.array([[1, 2], [0, 2], [0, 1], [1, 2]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 3)
    assert r.selected.tolist() == [0]
    row = r.components.iloc[0]
    assert (row["budget"], row["filled"], row["stop"]) == (3, 1, "no candidate passes")
    assert row["scan_conflict"] == 3
    assert "1 / 3" in r.summary()


def test_second_component_is_independent_of_first_components_conflicts():
    # conflict is checked only against THIS component's selection; E is global
    x = np.stack([unit(1, 0, 0), unit(-1, 0.05, 0), unit(-1, 0, 0.05), unit(0, 1, 0)])
    nbrs = np.array([[3, 1], [2, 3], [1, 3], [0, 1]])
    core = hand_core((1, 0, 0), (-1, 0, 0))
    r = walk(x, core, nbrs, 4)
    # component 0: row 3 fails consistency (cos 0.71 < 0.8), rows 1, 2 conflict with row 0 -> 1 of 2.
    # component 1 (-e1): rows 1 and 2 conflict with row 0, which belongs to component 0: allowed.
    # Rows 1 and 2 tie on <x, -e1>: the lower index anchors.
    assert r.selected.tolist() == [0, 1, 2]
    assert r.components["filled"].tolist() == [1, 2] and r.components["budget"].tolist() == [2, 2]
    assert r.trajectory["source"].tolist() == ["anchor", "anchor", "local"]


def test_ties_broken_by_index_and_determinism():
    x = np.stack([unit(0, 1, 0), unit(1, 0, 0), unit(1, 0, 0), unit(1, 0, 0)])
    nbrs = np.array([[1, 2], [2, 3], [1, 3], [1, 2]])
    r = walk(x, hand_core((1, 0, 0)), nbrs, 3)
    assert r.selected.tolist() == [1, 2, 3]
    xr, core, nb = random_case(3, 600, 16)
    a = walk(xr, core, nb, 60)
    b = walk(xr, core, nb, 60)
    assert a.selected.tolist() == b.selected.tolist()
    pd.testing.assert_frame_equal(a.trajectory, b.trajectory)


def test_validation_errors():
    xr, core, nb = random_case(0, 100, 8)
    with pytest.raises(ValueError, match="ratio"):
        walk(xr, core, nb, ratio=1.5)
    with pytest.raises(ValueError, match="budget"):
        walk(xr, core, nb, ratio=0.001)
    with pytest.raises(ValueError, match="d="):
        walk(xr[:, :4], core, nb[:, :2], 5)
    with pytest.raises(ValueError, match="neighbors"):
        walk(xr, core, nb[:50], 5)


# ----------------------------------------------------------------------------- random: equal to the reference
def random_case(seed, n, d, clustered=True):
    rng = np.random.default_rng(seed)
    if clustered:
        cent = rng.standard_normal((6, d))
        x = cent[rng.integers(0, 6, n)] + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0)
    else:
        x = rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)
    x = unit_rows(x, zero="raise")
    core = core_knowledge(rng.standard_normal((int(rng.integers(4, 16)), d)) + rng.standard_normal(d),
                          float(rng.uniform(0.3, 0.9)), align_signs=bool(seed % 2))
    nb, _ = build_knn(x, int(rng.integers(2, 16)))
    return x, core, nb


def reference_case(seed):
    """The random comparison case of ``seed``: (x, core, neighbours, B, delta, its rng for further draws)."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(300, 2001))
    d = int(rng.choice([4, 8, 16, 32, 64]))
    x, core, nb = random_case(seed, n, d, clustered=seed % 3 != 0)
    B = max(core.k, int(n * rng.uniform(0.02, 0.12)))
    delta = float(rng.choice([0.5, 0.8, 0.95, 1.0]))
    return x, core, nb, B, delta, rng


@pytest.mark.parametrize("seed", range(10))
def test_fast_walk_equals_reference(seed):
    x, core, nb, B, delta, rng = reference_case(seed)
    r = walk(x, core, nb, B, delta=delta, chunk=int(rng.choice([1, 5, 256])))
    ref = reference_walk(x, core.components, core.weights, B, nb, delta=delta)
    assert r.selected.tolist() == [s["node"] for s in ref]
    assert r.trajectory["source"].tolist() == [s["source"] for s in ref]
    want = pd.DataFrame(ref).reindex(columns=COUNT_COLS).fillna(0).to_numpy().astype(int)
    assert (r.trajectory[COUNT_COLS].to_numpy() == want).all()
    assert r.components["filled"].sum() == len(r.selected) <= B


def test_reference_comparison_covers_every_path():
    """The random cases above exercise local steps, fallbacks and under-fill (else they prove little)."""
    seen, stops = set(), set()
    for seed in range(10):
        x, core, nb, B, delta, _ = reference_case(seed)
        r = walk(x, core, nb, B, delta=delta)
        seen |= set(r.trajectory["source"])
        stops |= set(r.components["stop"])
    assert seen == {"anchor", "local", "fallback"}
    assert {"filled", "no candidate passes"} <= stops


# ----------------------------------------------------------------------------- persistence and replay
def test_save_load_and_replay(tmp_path):
    x, core, nb = random_case(7, 500, 16)
    r = walk(x, core, nb, ratio=0.1)
    r.save(tmp_path / "w", inputs={"train": "abc"})
    assert json.loads((tmp_path / "w" / "selected_ids.json").read_text()) == r.selected.tolist()
    back = WalkResult.load(tmp_path / "w")
    assert back.selected.tolist() == r.selected.tolist()
    pd.testing.assert_frame_equal(back.trajectory, r.trajectory)
    assert back.components["filled"].tolist() == r.components["filled"].tolist()
    assert np.allclose(back.core.components, core.components) and back.config["B"] == 50
    assert replay(back.trajectory).tolist() == r.selected.tolist()
    # replay does not depend on row order, and refuses a broken trajectory
    assert replay(r.trajectory.sample(frac=1.0, random_state=0)).tolist() == r.selected.tolist()
    bad = r.trajectory.copy()
    bad.loc[len(bad) - 1, "node"] = bad.loc[0, "node"]
    with pytest.raises(ValueError):
        replay(bad)


# ----------------------------------------------------------------------------- CLI
def cli(argv):
    parser = argparse.ArgumentParser(prog="g2is")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def write_features(tmp_path, n=400, d=16, m=8, seed=0):
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((4, d))
    a = cent[rng.integers(0, 4, n)] + rng.standard_normal((n, d))
    b = cent[rng.integers(0, 4, m)] + rng.standard_normal((m, d))
    np.save(tmp_path / "A.npy", a.astype(np.float32))
    np.save(tmp_path / "B.npy", b.astype(np.float32))
    return a, b


def test_cli_walk_writes_selection(tmp_path, capsys):
    a, b = write_features(tmp_path)
    out = tmp_path / "out"
    rc = cli(["walk", "--train-features", str(tmp_path / "A.npy"), "--target-features", str(tmp_path / "B.npy"),
              "--ratio", "0.05", "--delta", "0.8", "--pca-variance", "0.5", "--k", "8", "--out", str(out)])
    assert rc == 0
    sel = json.loads((out / "selected_ids.json").read_text())
    traj = pd.read_parquet(out / "trajectory.parquet")
    side = json.loads((out / "sidecar.json").read_text())
    assert sel == traj.sort_values(["component", "step"])["node"].tolist() and 0 < len(sel) <= 20
    assert side["kind"] == "g2is_walk" and len(side["inputs"]["train_features"]["sha256"]) == 64
    # the same selection as calling the library directly on normalised inputs
    x, y = unit_rows(a, zero="raise"), unit_rows(b, zero="raise")
    core = core_knowledge(y, 0.5)
    nb, _ = build_knn(x, 8)
    assert walk(x, core, nb, 20).selected.tolist() == sel
    line = capsys.readouterr().out.strip()
    assert line.startswith("walk: selected") and "\n" not in line
    # --count and the options
    cli(["walk", "--train-features", str(tmp_path / "A.npy"), "--target-features", str(tmp_path / "B.npy"),
         "--count", "7", "--k", "5", "--graph", "hnsw", "--align-signs", "--add-mean", "--out", str(tmp_path / "o2")])
    assert len(json.loads((tmp_path / "o2" / "selected_ids.json").read_text())) <= 7


def test_cli_walk_is_the_g2is_pipeline_and_reaches_every_option(tmp_path):
    """`g2is walk` flags are generated from G2isOptions (every field, defaults included) and it runs the
    pipeline of `select --method g2is`; with --workspace the kNN graph is cached there."""
    import dataclasses

    from g2is_core.selection import FeatureSet
    from g2is_core.selection.methods.g2is import G2isOptions, run_g2is
    from g2is_core.selection.registry import options_from_args

    write_features(tmp_path)
    parser = argparse.ArgumentParser(prog="g2is")
    register(parser.add_subparsers(dest="command"))
    base = ["walk", "--train-features", str(tmp_path / "A.npy"), "--target-features", str(tmp_path / "B.npy"),
            "--out", str(tmp_path / "o")]
    assert options_from_args(G2isOptions, parser.parse_args(base)) == G2isOptions()
    flipped = options_from_args(G2isOptions, parser.parse_args(
        base + ["--k", "7", "--graph", "hnsw", "--delta", "0.5", "--pca-variance", "0.6", "--anchors-top", "9",
                "--align-signs", "--add-mean", "--uncentred", "--no-cache", "--pool-centre"]))
    defaults = G2isOptions()
    assert all(getattr(flipped, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(G2isOptions))
    ws = tmp_path / "ws"
    argv = base + ["--count", "12", "--k", "8", "--pool-centre", "--workspace", str(ws)]
    assert cli(argv) == 0
    sel = json.loads((tmp_path / "o" / "selected_ids.json").read_text())
    assert len(list((ws / "graphs").iterdir())) == 1
    want = run_g2is(FeatureSet.from_npy(tmp_path / "A.npy"), FeatureSet.from_npy(tmp_path / "B.npy"), 12,
                    G2isOptions(k=8, pool_centre=True))
    assert want.walk.selected.tolist() == sel
    assert cli(argv) == 0 and json.loads((tmp_path / "o" / "selected_ids.json").read_text()) == sel  # from the cache
    side = json.loads((tmp_path / "o" / "sidecar.json").read_text())
    assert side["config"]["pool_centre"] is True and side["config"]["uncentred"] is False


@pytest.mark.parametrize("case, match", [
    ("nan", "NaN"), ("dim", "d="), ("ratio", "ratio"), ("k", "k"), ("missing", "no such file|does not exist"),
])
def test_cli_walk_bad_input(tmp_path, capsys, case, match):
    a, b = write_features(tmp_path, n=50)
    argv = ["walk", "--train-features", str(tmp_path / "A.npy"), "--target-features", str(tmp_path / "B.npy"),
            "--k", "5", "--ratio", "0.1", "--out", str(tmp_path / "o")]
    if case == "nan":
        a[3, 2] = np.nan
        np.save(tmp_path / "A.npy", a)
    elif case == "dim":
        np.save(tmp_path / "B.npy", b[:, :5])
    elif case == "ratio":
        argv[argv.index("--ratio") + 1] = "1.5"
    elif case == "k":
        argv[argv.index("--k") + 1] = "50"
    elif case == "missing":
        argv[2] = str(tmp_path / "nope.npy")
    # Flags are checked when parsed (argparse exit 2 naming the flag), files and numbers when run (ValueError).
    with pytest.raises((ValueError, SystemExit)) as exc:
        cli(argv)
    said = str(exc.value) if exc.type is ValueError else capsys.readouterr().err
    assert exc.type is ValueError or exc.value.code == 2
    assert re.search(match, said), said
    assert not (tmp_path / "o").exists()
