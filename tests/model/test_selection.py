"""Selection methods, the SelectionRun on disk, the layout cache, the network view and the CLI, on
tiny hand-made inputs with known answers."""
import os

os.environ.setdefault("G2IS_THREADS", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import g2is_core.selection as S  # noqa: E402
from g2is_core.data.records import simple  # noqa: E402


def recs(n, task="t", prefix="p", texts=None, raw=False):
    out = []
    for i in range(n):
        text = texts[i] if texts else f"question {i}"
        out.append(simple(f"{prefix}{i}", text, f"answer {i}", source="src", task=task,
                          raw={"q": text, "a": f"answer {i}"} if raw else None))
    return out


def clusters(n_per=20, d=16, seed=0, noise=0.15):
    """Three well separated clusters of unit vectors; returns (X [3n, d], labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(d, 3)))[0].T  # orthonormal
    x = np.concatenate([c + noise * rng.normal(size=(n_per, d)) for c in centres])
    labels = np.repeat(np.arange(3), n_per)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, centres


# ----------------------------------------------------------------------------- budget
@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_ratio_is_a_sentence(ratio):
    with pytest.raises(ValueError, match="ratio"):
        S.resolve_budget(100, ratio=ratio)


def test_budget_rules():
    assert S.resolve_budget(100, ratio=0.05) == 5
    assert S.resolve_budget(100, ratio=1.0) == 100
    assert S.resolve_budget(100, count=7) == 7
    with pytest.raises(ValueError, match="larger than the pool"):
        S.resolve_budget(10, count=11)
    with pytest.raises(ValueError, match="selects nothing"):
        S.resolve_budget(10, ratio=0.05)
    with pytest.raises(ValueError, match="either a ratio"):
        S.resolve_budget(10, ratio=0.5, count=2)
    with pytest.raises(ValueError, match="whole number"):
        S.resolve_budget(10, count=0)


def test_registry_and_unknown_option(workspace):
    assert set(S.METHODS) == {"g2is", "less", "random", "embedding", "bm25", "repr", "heads", "heads-hybrid",
                              "g2is-score", "g2is-noconflict", "g2is-noconsistency"}  # + the paper's ablation
    for m in S.METHODS.values():  # every option field carries its help text
        import dataclasses
        assert all(f.metadata.get("help") for f in dataclasses.fields(m.options)), m.name
    with pytest.raises(ValueError, match="no option"):
        S.select("random", recs(5), recs(1, prefix="t"), count=2, nonsense=1, workspace=workspace)
    with pytest.raises(ValueError, match="unknown selection method"):
        S.select("oracle", recs(5), recs(1, prefix="t"), count=2)


# ----------------------------------------------------------------------------- the contract of every method
def contract_inputs(method):
    """A tiny pool and target for ``method``, with what its ``needs`` say it reads: random gradient
    features (clustered, so the walk has structure) with head signatures [3 layers, 4 heads] when it
    reads them, or the tiny random Llama."""
    words = ["cat", "add", "sort", "sum", "list", "word", "map", "key"]
    pool = recs(40, texts=[f"{words[i % 8]} {words[(3 * i) % 8]} item {i}" for i in range(40)])
    targets = recs(3, prefix="t", texts=["add the numbers", "sort the list", "cat sat"])
    kw = {}
    if "features" in method.needs:
        x, _, centres = clusters(n_per=14, d=12, seed=3)
        y = centres[[0, 0, 1]] + 0.1 * np.random.default_rng(4).normal(size=(3, 12))
        sig = sig_t = None
        if "head_signatures" in method.needs:
            rng = np.random.default_rng(5)
            sig = np.abs(rng.normal(size=(40, 3, 4))).astype(np.float32)
            sig_t = np.abs(rng.normal(size=(3, 3, 4))).astype(np.float32)
        kw = {"train_features": S.FeatureSet.from_arrays(x[:40], ids=[r.id for r in pool], signatures=sig),
              "target_features": S.FeatureSet.from_arrays(y.astype(np.float32), ids=[r.id for r in targets],
                                                          signatures=sig_t)}
    opts = {"k": 5} if method.options is S.G2isOptions else {"model": "tiny"} if "model" in method.needs else {}
    return pool, targets, kw, opts


@pytest.mark.parametrize("name", list(S.METHODS))
def test_every_registered_method_keeps_the_contract(name, workspace):
    """Every entry of the registry: a well-formed selection (budget kept, ids from the pool, unique,
    ordered as the scores say, the same for the same seed, finite scores) and a sidecar that loads."""
    m = S.METHODS[name]
    assert m.description and all(f.metadata.get("help") for f in dataclasses.fields(m.options))
    pool, targets, kw, opts = contract_inputs(m)
    a = S.select(name, pool, targets, count=8, workspace=workspace, **kw, **opts)
    b = S.select(name, pool, targets, count=8, workspace=workspace, **kw, **opts)
    ids = {r.id for r in pool}
    walks = "walk" in a.extra  # g2is and its walk ablations: ordered by the walk, and may stop short
    assert walks == (name in ("g2is", "g2is-noconflict", "g2is-noconsistency"))
    assert a.budget == 8 and 1 <= len(a) <= 8 and (len(a) == 8 or walks)  # only the walk may stop short
    assert set(a.ids) <= ids and len(set(a.ids)) == len(a.ids)
    assert a.ids == [pool[i].id for i in a.order] and a.pool_ids == [r.id for r in pool]
    assert a.ids == b.ids and np.array_equal(a.pool_scores, b.pool_scores)          # deterministic
    assert a.pool_scores.shape == (len(pool),) and np.isfinite(a.pool_scores).all() and np.isfinite(a.scores).all()
    assert np.array_equal(a.scores, a.pool_scores[a.order])
    if not walks:  # ranked by score, best first (g2is: the walk's order)
        assert np.all(np.diff(a.scores) <= 0) and a.scores[-1] >= np.sort(a.pool_scores)[-9]
    run = S.SelectionRun.save(a, pool, workspace)
    assert S.SelectionRun.load(run.dir).ids == a.ids and run.method == name


def test_a_new_method_is_one_file_and_one_registry_line(workspace):
    """The worked example of docs/selection.md ("Adding a method"), registered the same way, runs through select()."""
    from dataclasses import dataclass

    from g2is_core.selection.registry import Context, Scored, option, register, top_order

    @dataclass
    class LengthOptions:
        unit: str = option("words", "words: count words; chars: count characters")

    try:
        @register("length", "response length closest to the targets' mean", LengthOptions, needs=("text",))
        def length_method(ctx: Context, budget: int, o: LengthOptions) -> Scored:
            size = (lambda t: len(t.split())) if o.unit == "words" else len
            want = np.mean([size(t.response) for t in ctx.targets])
            s = -np.abs(np.array([size(r.response) for r in ctx.pool], dtype=np.float64) - want)
            return Scored(top_order(s, budget), s)

        pool = [simple(f"p{i}", "q", " ".join(["w"] * (i + 1)), source="s", task="t") for i in range(10)]
        targets = [simple("t0", "q", "w w w w", source="s", task="t")]
        sel = S.select("length", pool, targets, count=3, workspace=workspace)
        assert sel.ids == ["p3", "p2", "p4"]                      # 4 words, then 3 and 5 (ties by pool order)
        assert S.select("length", pool, targets, count=1, unit="chars").ids == ["p3"]
        with pytest.raises(ValueError, match="registered twice"):
            register("length", "again", LengthOptions)(length_method)
        with pytest.raises(ValueError, match="no option"):
            S.select("length", pool, targets, count=1, bogus=1)
    finally:
        S.METHODS.pop("length", None)
    assert "length" not in S.METHODS


# ----------------------------------------------------------------------------- random
def test_random_is_seeded_and_ordered(workspace):
    pool, tg = recs(50), recs(2, prefix="t")
    a = S.select("random", pool, tg, ratio=0.2, seed=3, workspace=workspace)
    b = S.select("random", pool, tg, ratio=0.2, seed=3, workspace=workspace)
    c = S.select("random", pool, tg, ratio=0.2, seed=4, workspace=workspace)
    assert a.ids == b.ids and a.ids != c.ids and len(a) == 10
    assert np.all(np.diff(a.scores) <= 0)                      # best first
    assert a.pool_scores.shape == (50,)
    assert a.scores[-1] >= np.sort(a.pool_scores)[-11]          # nothing better was left out


# ----------------------------------------------------------------------------- features and LESS
def test_combined_features_give_the_weighted_cosine():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    fs = S.FeatureSet.from_arrays([x1, x2], weights=[3, 1])
    c = fs.combined()
    assert np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-6)
    cos = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T  # noqa: E731
    assert np.allclose(c @ c.T, 0.75 * cos(x1) + 0.25 * cos(x2), atol=1e-5)


def test_less_scores_match_the_formula():
    rng = np.random.default_rng(1)
    n, m, d = 13, 5, 7
    xs = [rng.normal(size=(n, d)) for _ in range(2)]
    ys = [rng.normal(size=(m, d)) for _ in range(2)]
    w = np.array([0.7, 0.3])
    sub = ["a", "a", "b", "b", "b"]
    got = S.less_scores(S.FeatureSet.from_arrays(xs, weights=w), S.FeatureSet.from_arrays(ys, weights=w), sub, block=4)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    want = []
    for z in range(n):
        per = {}
        for v in range(m):
            per.setdefault(sub[v], []).append(sum(w[i] * cos(xs[i][z], ys[i][v]) for i in range(2)))
        want.append(max(np.mean(vals) for vals in per.values()))
    assert np.allclose(got, want, atol=1e-5)


def test_less_and_g2is_find_the_target_cluster(workspace):
    x, labels, centres = clusters()
    rng = np.random.default_rng(5)
    y = centres[0] + 0.15 * rng.normal(size=(8, x.shape[1]))
    pool = recs(len(x))
    targets = recs(8, prefix="t")
    train = S.FeatureSet.from_arrays(x, ids=[r.id for r in pool])
    target = S.FeatureSet.from_arrays(y.astype(np.float32), ids=[r.id for r in targets])
    relevant = {pool[i].id for i in np.flatnonzero(labels == 0)}
    less = S.select("less", pool, targets, count=10, train_features=train, target_features=target, workspace=workspace)
    assert S.precision(less.ids, relevant) == 1.0
    g = S.select("g2is", pool, targets, count=10, train_features=train, target_features=target, workspace=workspace,
                 k=5, align_signs=True, add_mean=True)
    assert len(g) <= 10 and S.precision(g.ids, relevant) >= 0.8
    walk = g.extra["walk"]
    assert list(walk.selected) == list(g.order)
    assert g.extra["graph_dir"] and (workspace.root / "graphs").is_dir()  # graph cached for the next run
    # wrong feature rows for the pool: a sentence, not a crash
    with pytest.raises(ValueError, match="rows"):
        S.select("less", pool[:-1], targets, count=3, train_features=train, target_features=target)


def test_g2is_pool_centre_is_the_walk_on_centred_features_and_undoes_a_hub(workspace):
    """A direction every pool gradient shares, and a few records made of little else, makes those records
    every node's nearest neighbours (hubs): the walk is absorbed by them. Centring on the pool mean
    removes the shared direction; it equals running the faithful walk on centred features."""
    _, labels, centres = clusters(n_per=20, d=16, seed=1)
    rng = np.random.default_rng(2)
    common = np.linalg.qr(np.concatenate([centres.T, rng.normal(size=(16, 1))], axis=1))[0][:, 3]  # ⟂ clusters
    x = 0.5 * centres[labels] + common + 0.3 * rng.normal(size=(len(labels), 16))
    hubs = np.flatnonzero(labels == 2)[:6]
    x[hubs] = common + 0.01 * rng.normal(size=(len(hubs), 16))
    y = 0.5 * centres[0] + common + 0.3 * rng.normal(size=(8, 16))
    pool, targets = recs(len(x)), recs(8, prefix="t")
    train = S.FeatureSet.from_arrays(x.astype(np.float32), ids=[r.id for r in pool])
    target = S.FeatureSet.from_arrays(y.astype(np.float32), ids=[r.id for r in targets])
    kw = dict(count=10, workspace=workspace, k=5, align_signs=True, add_mean=True)
    hub_ids = {pool[i].id for i in hubs}
    raw = S.select("g2is", pool, targets, train_features=train, target_features=target, **kw)
    cen = S.select("g2is", pool, targets, train_features=train, target_features=target, pool_centre=True, **kw)
    assert len(hub_ids & set(raw.ids)) >= 3            # absorbed by the hubs
    assert not hub_ids & set(cen.ids)                  # not any more
    relevant = {pool[i].id for i in np.flatnonzero(labels == 0)}
    assert S.precision(cen.ids, relevant) > S.precision(raw.ids, relevant)
    ux, uy = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (x, y))  # the features' cosine geometry
    mu = ux.mean(axis=0)
    ref = S.select("g2is", pool, targets, train_features=S.FeatureSet.from_arrays((ux - mu).astype(np.float32),
                                                                                  ids=[r.id for r in pool]),
                   target_features=S.FeatureSet.from_arrays((uy - mu).astype(np.float32),
                                                            ids=[r.id for r in targets]), **kw)
    assert cen.ids == ref.ids


def test_selection_run_round_trip(workspace):
    x, labels, centres = clusters(n_per=10)
    pool = recs(len(x), raw=True)
    targets = recs(4, prefix="t")
    y = (centres[1] + 0.1 * np.random.default_rng(0).normal(size=(4, x.shape[1]))).astype(np.float32)
    sel = S.select("g2is", pool, targets, ratio=0.2, train_features=S.FeatureSet.from_arrays(x, [r.id for r in pool]),
                   target_features=S.FeatureSet.from_arrays(y), workspace=workspace, k=4)
    run = S.SelectionRun.save(sel, pool, workspace)
    d = run.dir
    for f in ("selected_ids.json", "scores.parquet", "selected.jsonl", "selected_chat.jsonl", "trajectory.parquet",
              "components.parquet", "sidecar.json"):
        assert (d / f).exists(), f
    assert run.ids == sel.ids and run.method == "g2is"
    lines = [json.loads(ln) for ln in (d / "selected.jsonl").read_text().splitlines()]
    assert lines[0] == pool[sel.order[0]].raw                      # original format
    chat = [json.loads(ln) for ln in (d / "selected_chat.jsonl").read_text().splitlines()]
    assert chat[0]["messages"][-1]["role"] == "assistant" and len(chat) == len(sel)
    assert list(run.trajectory["id"]) == sel.ids
    meta = run.meta
    assert meta["inputs"]["pool_data_hash"] and meta["inputs"]["target_data_hash"]
    assert "method_seconds" in meta["timings"] and meta["config"]["budget"] == 6
    assert int(run.scores["selected"].sum()) == len(sel)
    assert S.load_dataset(meta["inputs"]["pool_data_hash"], workspace)[0].id == pool[0].id


def test_builtin_records_export_in_record_json(workspace):
    from g2is_core.data import tasks

    pool = tasks.make_pool(0, per_task=4, distractors=4)
    tg = tasks.make_targets(0, n_per_target=2)["add_reverse"]
    sel = S.select("bm25", pool, tg, count=5, workspace=workspace)
    run = S.SelectionRun.save(sel, pool, workspace)
    first = json.loads((run.dir / "selected.jsonl").read_text().splitlines()[0])
    assert first["id"] == sel.ids[0] and "messages" in first
    assert "record-json" in run.meta["selected_format"]


# ----------------------------------------------------------------------------- text methods
def test_bm25_ranks_the_lexical_match_first(workspace):
    pool = recs(4, texts=["the cat sat on the mat", "add 3 and 4", "reverse the letters a b c", "capital of France"])
    tg = recs(1, prefix="t", texts=["add 12 and 30"])
    sel = S.select("bm25", pool, tg, count=1, workspace=workspace)
    assert sel.ids == ["p1"]
    assert S.bm25_scores(["a b", "c d"], ["zzz"]).max() == 0  # an out-of-vocabulary query scores nothing


def test_embedding_prefers_the_semantic_match(workspace):
    pool = recs(3, texts=["My kitten likes to chase mice.", "Compute the integral of x squared.",
                          "The stock market fell today."])
    tg = recs(1, prefix="t", texts=["Cats are playful pets."])
    sel = S.select("embedding", pool, tg, count=3, workspace=workspace)
    assert sel.ids[0] == "p0"
    assert -1.0 <= sel.scores.min() and sel.scores.max() <= 1.0 + 1e-6
    assert list((workspace.root / "embeddings").iterdir())       # cached by data hash
    again = S.select("embedding", pool, tg, count=3, workspace=workspace)
    assert again.ids == sel.ids


def test_repr_on_the_tiny_model(workspace):
    pool = recs(6, texts=[f"say {w}" for w in "abcdef"])
    tg = recs(2, prefix="t", texts=["say a", "say b"])
    a = S.select("repr", pool, tg, count=3, model="tiny", workspace=workspace)
    b = S.select("repr", pool, tg, count=3, model="tiny", pooling="last", workspace=workspace)
    assert len(a) == 3 and len(b) == 3
    assert np.isfinite(a.pool_scores).all() and np.isfinite(b.pool_scores).all()


# ----------------------------------------------------------------------------- layout
def test_layout_is_cached_and_falls_back_to_pca(workspace):
    from g2is_core.graph import layout as L

    x, _, _ = clusters(n_per=4)
    df = L.layout(x[:10], "tiny-key", workspace)
    assert list(df.columns) == ["node", "x", "y"] and len(df) == 10
    meta = workspace.list("layouts")[0][1]
    assert "PCA" in meta["note"] and "UMAP needs" in meta["note"]
    df2 = L.layout(x[:10], "tiny-key", workspace)
    assert df2.equals(df)
    assert L.find_layout("tiny-key", workspace)[0].equals(df)
    assert L.find_layout("other", workspace) is None


@pytest.mark.slow
def test_umap_layout_separates_clusters(workspace):
    from g2is_core.graph import layout as L

    x, labels, _ = clusters(n_per=15, d=32)
    xy, note = L.compute_layout(x, n_neighbors=10)
    assert "UMAP" in note and xy.shape == (45, 2)
    cent = np.stack([xy[labels == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(xy[labels == c] - cent[c], axis=1).mean() for c in range(3))
    gap = min(np.linalg.norm(cent[a] - cent[b]) for a in range(3) for b in range(a + 1, 3))
    assert gap > spread


# ----------------------------------------------------------------------------- network view
def test_netview_is_inline_and_escaped():
    from g2is_core.app import netview as N

    nb = np.array([[1, 2], [2, 0], [0, 1], [0, 1]])
    sims = np.array([[0.9, 0.5], [0.8, 0.1], [0.7, -0.2], [0.3, 0.2]], dtype=np.float32)
    assert N.khop(nb, 0, hops=1) == [0, 1, 2]
    assert N.khop(nb, 3, hops=2, max_nodes=2) == [3, 0]
    assert (2, 1, pytest.approx(-0.2)) in [(a, b, pytest.approx(s)) for a, b, s in N.edges_among(nb, sims, [0, 1, 2])]
    evil = '</script><img src=x onerror=alert(1)>'
    page = N.network_html([{"id": 0, "label": evil, "title": evil}, {"id": 1, "label": "ok"}], [(0, 1, 0.5, "walk")])
    assert evil not in page and html_escaped(evil) in page.replace("\\u0026", "&")
    assert not N.has_remote_resources(page)
    assert "vis.Network" in page                        # the library itself is in-line
    for tag in ("<script src=\"http", "<script src='http", "<link href=\"http"):
        assert tag not in page


def html_escaped(s):
    import html
    return html.escape(s, quote=True)


def test_walk_subgraph_edges():
    import pandas as pd

    from g2is_core.app import netview as N

    traj = pd.DataFrame({"component": [0, 0, 0, 1], "step": [0, 1, 2, 0], "node": [5, 3, 4, 1],
                         "source": ["anchor", "local", "fallback", "anchor"], "sim_prev": [np.nan, 0.8, 0.4, np.nan]})
    nodes, edges = N.walk_subgraph(traj)
    assert nodes == [5, 3, 4, 1]
    assert [(a, b, k) for a, b, _, k in edges] == [(5, 3, "walk"), (3, 4, "walk")]
    nodes2, _ = N.walk_subgraph(traj, upto=2)
    assert nodes2 == [5, 3]


# ----------------------------------------------------------------------------- CLI
def test_cli_select_and_errors(workspace, capsys):
    from g2is_core.cli import main

    rc = main(["select", "--method", "random", "--pool", "builtin:pool", "--targets", "builtin:targets:add_reverse",
               "--count", "12", "--option", "seed=1"])
    assert rc == 0
    runs = S.list_runs(workspace, "random")
    assert len(runs) == 1 and len(json.loads((runs[0][0] / "selected_ids.json").read_text())) == 12
    assert main(["select", "--method", "random", "--pool", "builtin:pool", "--targets", "builtin:targets",
                 "--ratio", "1.5"]) == 2
    assert "ratio" in capsys.readouterr().err
    assert main(["select", "--method", "random", "--pool", "builtin:pool", "--targets", "builtin:targets",
                 "--ratio", "0.1", "--option", "delta=2"]) == 2
    assert main(["select", "--method", "less", "--pool", "builtin:pool", "--targets", "builtin:targets",
                 "--ratio", "0.1"]) == 2
    assert "gradient features" in capsys.readouterr().err


def test_cli_graph_build_from_stores(workspace):
    from g2is_core.cli import main
    from g2is_core.graph.knn import InstructionGraph
    from g2is_core.features.store import write_store

    x, _, centres = clusters(n_per=8)
    ids = [f"r{i}" for i in range(len(x))]
    cfg = {"model_key": "m", "lora": {}, "projector": {"dim": x.shape[1]}, "checkpoint": {"epoch": 1, "weight": 1.0},
           "kind": "adam"}
    s = write_store(workspace.root / "grads" / "train1", cfg, ids, x.shape[1], lambda r: x[r.start:r.stop],
                    inputs={"data_hash": "h"}, dtype="fp32")
    y = (centres[:2] + 0.01).astype(np.float32)
    write_store(workspace.root / "grads" / "tgt1", {**cfg, "kind": "sgd"}, ["t0", "t1"], x.shape[1],
                lambda r: y[r.start:r.stop], inputs={"data_hash": "ht"}, dtype="fp32")
    assert main(["graph", "build", "--train-store", "train1", "--target-store", "tgt1", "--k", "4",
                 "--layout", "pca"]) == 0
    (d, meta), = workspace.list("graphs")
    g = InstructionGraph.load(d)
    assert g.n == len(x) and g.k == 4 and g.kind == "mixed"
    assert meta["inputs"]["features_key"]
    from g2is_core.graph.layout import find_layout
    assert len(find_layout(meta["inputs"]["features_key"], workspace)[0]) == len(x)
    assert s.dir.name == "train1"
    assert main(["graph", "build", "--train-store", "nope"]) == 2


def test_graph_build_and_select_run_one_g2is_pipeline(workspace, capsys):
    """`graph build` is the pipeline of `select --method g2is` without the walk: same settings (every
    G2isOptions field reachable from both), same graph cache key, so select reuses the graph built."""
    from g2is_core.cli import main
    from g2is_core.features.store import GradientStore, write_store
    from g2is_core.selection.methods.g2is import G2isOptions
    from g2is_core.selection.registry import options_from_strings

    x, _, centres = clusters(n_per=8)
    pool, targets = recs(len(x)), recs(2, prefix="t")
    cfg = {"model_key": "m", "lora": {}, "projector": {"dim": x.shape[1]}, "checkpoint": {"epoch": 1, "weight": 1.0},
           "kind": "adam"}
    write_store(workspace.root / "grads" / "train1", cfg, [r.id for r in pool], x.shape[1], lambda r: x[r.start:r.stop],
                inputs={"data_hash": "h"}, dtype="fp32")
    y = (centres[:2] + 0.01).astype(np.float32)
    write_store(workspace.root / "grads" / "tgt1", {**cfg, "kind": "sgd"}, ["t0", "t1"], x.shape[1],
                lambda r: y[r.start:r.stop], inputs={"data_hash": "ht"}, dtype="fp32")
    assert main(["graph", "build", "--train-store", "train1", "--k", "4", "--pool-centre", "--layout", "none"]) == 0
    (built, _), = workspace.list("graphs")
    stores = {"train_stores": [GradientStore.open(workspace.root / "grads" / "train1")],
              "target_stores": [GradientStore.open(workspace.root / "grads" / "tgt1")]}
    sel = S.select("g2is", pool, targets, count=6, workspace=workspace, k=4, pool_centre=True, **stores)
    assert sel.extra["graph_dir"] == str(built) and len(workspace.list("graphs")) == 1  # reused, not rebuilt
    assert main(["graph", "build", "--train-store", "train1", "--k", "4", "--pool-centre", "--layout", "none"]) == 0
    assert "cached" in capsys.readouterr().out
    # a mixed graph's key carries the core's settings: the fixes give a graph of their own
    for extra in ([], ["--align-signs", "--uncentred"]):
        assert main(["graph", "build", "--train-store", "train1", "--target-store", "tgt1", "--k", "4",
                     "--layout", "none", *extra]) == 0
    assert sorted(m["graph_kind"] for _, m in workspace.list("graphs")) == ["mixed", "mixed", "train"]
    # every G2IS setting is a `select --option`, typed by its dataclass default
    every = {f.name: getattr(G2isOptions(), f.name) for f in dataclasses.fields(G2isOptions)}
    assert options_from_strings("g2is", [f"{k}={v}" for k, v in every.items()]) == every
    with pytest.raises(ValueError, match=r"--k 24 must be between 1 and N-1 = 23"):
        S.select("g2is", pool, targets, count=6, workspace=workspace, k=len(pool), **stores)


# ----------------------------------------------------------------------------- page helpers (pure)
def test_walk_progress_and_compare_runs():
    import pandas as pd

    traj = pd.DataFrame({"component": [0, 0, 1], "step": [0, 1, 0], "node": [4, 2, 7],
                         "source": ["anchor", "fallback", "anchor"],
                         **{c: [0, 2, 1] for c in ("nbr_conflict", "nbr_consistency", "nbr_excluded")},
                         **{c: [0, 3, 0] for c in ("scan_conflict", "scan_consistency", "scan_excluded")}})
    comps = pd.DataFrame({"component": [0, 1], "budget": [3, 1], "filled": [2, 1], "stop": ["no candidate passes", "filled"]})
    p = S.walk_progress(traj, comps, 2)
    assert p["filled"].tolist() == [2, 0] and p["fallbacks"].tolist() == [1, 0]
    assert p["rejected_conflict"].tolist() == [5, 0] and p["stop"].tolist() == ["no candidate passes", "walking"]
    assert S.walk_progress(traj, comps, 3)["stop"].tolist() == ["no candidate passes", "filled"]
    stats, table = S.compare_runs(["a", "b", "c"], ["b", "c", "d"], {"a": "x", "b": "x", "c": "y", "d": "y"})
    assert stats["both"] == 2 and stats["jaccard"] == pytest.approx(0.5)
    assert table.set_index("value").loc["y", ["a", "b"]].tolist() == [1, 2]


def test_map_frame_escapes_hover_text():
    import pandas as pd

    from g2is_core.graph.layout import map_frame

    coords = pd.DataFrame({"node": [0, 1], "x": [0.0, 1.0], "y": [0.0, 1.0]})
    rs = recs(2, texts=["<script>alert(1)</script>", "fine"])
    df = map_frame(coords, rs, highlight={"p1"})
    assert "<script>" not in df["hover"].iat[0] and "&lt;script&gt;" in df["hover"].iat[0]
    assert df["selected"].tolist() == [False, True] and df["task"].tolist() == ["t", "t"]
    with pytest.raises(ValueError, match="other data"):
        map_frame(coords, rs[:1])


def test_display_mask_downsamples_but_keeps_selection_and_is_stable():
    from g2is_core.graph.layout import display_mask

    n = 1000
    visible = np.ones(n, bool)
    visible[:100] = False
    keep = np.zeros(n, bool)
    keep[[5, 500, 999]] = True   # node 5 is filtered out: filters win over keep
    m = display_mask(visible, keep, max_points=200)
    assert m.sum() == 200 and m[500] and m[999] and not m[5] and not m[:100].any()
    assert np.array_equal(m, display_mask(visible, keep, max_points=200))  # same subset on every rerun
    assert np.array_equal(display_mask(visible, keep, max_points=5000), visible)


@pytest.mark.slow
def test_sampled_layout_is_deterministic_and_keeps_clusters_apart():
    from g2is_core.graph.layout import compute_layout

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    labels = rng.integers(0, 4, 1200)
    x = (centres[labels] + 0.2 * rng.normal(size=(1200, 32))).astype(np.float16)  # an fp16 store's rows
    xy, note = compute_layout(x, max_fit=400, block=256)
    assert xy.shape == (1200, 2) and "sample of 400" in note
    assert np.array_equal(xy, compute_layout(x, max_fit=400, block=256)[0])
    # every row (most never seen by the fit) lands nearest to the centroid of its own cluster
    cents = np.stack([xy[labels == k].mean(0) for k in range(4)])
    nearest = np.argmin(((xy[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95
