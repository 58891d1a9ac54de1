"""`g2is demo` end to end on the tiny model (the shipped demo spec with ``model: tiny``): every stage leaves what
its page reads, a rerun does no work again, and the pack made from it is complete and current."""
from __future__ import annotations

import yaml

from g2is_core.app import readers
from g2is_core.demo.pack import check_pack, find_pack, write_pack
from g2is_core.demo.run import STAGES, DemoSettings, read_status, run_demo
from g2is_core.graph.layout import find_layout
from g2is_core.loop.spec import DEMO_SPEC


def tiny_demo_spec(tmp_path):
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["model"] = "tiny"
    p = tmp_path / "demo_tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_demo_fills_every_page_then_packs(tmp_path, workspace):
    seen = []
    settings = DemoSettings(spec=tiny_demo_spec(tmp_path), layout="pca")
    res = run_demo(settings, workspace, progress=lambda f, m: seen.append((f, m)), log=lambda m: None)
    # progress: monotone over the five stages, each named
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0
    for name, _ in STAGES:
        assert any(m.startswith(f"{name} ") for _, m in seen), name
    st = read_status(workspace)
    assert st["finished"] and st["fraction"] == 1.0 and set(st["seconds"]) == {n for n, _ in STAGES}

    # what each page reads
    graphs = readers.graphs(workspace)
    assert [g.path for g in graphs] == res.graphs
    assert find_layout(graphs[0].features_key, workspace) is not None          # the map
    assert any(r.has_walk and r.target == "first_last" for r in readers.selection_runs(workspace))   # the walk
    assert len(readers.head_studies(workspace)) == 1 and res.study is not None  # the heads
    rows = readers.registry(workspace).rows("demo")
    assert {r["method"] for r in rows} == {"base", "random", "full", "g2is", "less", "bm25"}
    assert all(r["status"] == "done" for r in rows)

    # resumable: a rerun finds everything done
    again = run_demo(settings, workspace, log=lambda m: None)
    assert again.graphs == res.graphs and again.study == res.study
    assert [r["config_hash"] for r in again.rows] == [r["config_hash"] for r in rows]

    info = write_pack(res, workspace, tmp_path / "pack", command="g2is demo --pack (test)")
    assert check_pack(find_pack(tmp_path / "pack")) == []
    pws = info.workspace()
    assert len(readers.graphs(pws)) == len(graphs) and readers.head_studies(pws)
    prow = readers.registry(pws).rows("demo")
    assert sorted(r["config_hash"] for r in prow) == sorted(r["config_hash"] for r in rows)
    assert all(r["metrics"] == next(x for x in rows if x["config_hash"] == r["config_hash"])["metrics"] for r in prow)
