"""The demo pack shipped in the package: readable by the current code, and made from the inputs the code makes now.

If a test here fails after a change to the built-in suite, the demo spec or an artefact format, regenerate the
pack with the command it records (``g2is demo --pack``; docs/benchmarks.md "The demo pack").
"""
from __future__ import annotations

import numpy as np
import pytest

from g2is_core.app import readers
from g2is_core.demo.pack import PACK_DIR, check_pack, find_pack


@pytest.fixture(scope="module")
def pack():
    info = find_pack(PACK_DIR)
    assert info is not None, f"no demo pack at {PACK_DIR}: run `g2is demo --pack`"
    return info


def test_the_pack_is_complete_and_its_inputs_are_the_current_suite(pack):
    assert check_pack(pack) == []
    assert pack.command.startswith("g2is") and "demo" in pack.command and "--pack" in pack.command
    assert pack.code_version and pack.model_hash
    size = sum(f["bytes"] for f in pack.meta["files"].values())
    assert size < 8e6, f"the pack is {size / 1e6:.1f} MB; it should stay a few MB"


def test_the_pack_was_made_from_the_shipped_demo_spec(pack):
    """The pack's spec is the demo spec as shipped now, and its rows are that spec's cells (keys included)."""
    from g2is_core.data.loaders import data_hash
    from g2is_core.loop.experiment import load_pool
    from g2is_core.loop.runner import cell_config
    from g2is_core.loop.spec import BASE, DEMO_SPEC, load_spec
    from g2is_core.workspace import hash_config

    spec = load_spec(DEMO_SPEC)
    assert pack.meta["spec"] == spec.to_dict(), "the demo spec changed: regenerate the pack (g2is demo --pack)"
    pool_hash = data_hash(load_pool(spec.pool))
    keys = {hash_config(cell_config(spec, t, m, r, s_, pool_hash)) for t in spec.targets for m in spec.all_methods()
            for r in ([None] if m in (BASE, "full") else spec.ratios) for s_ in spec.seeds}
    rows = readers.registry(pack.workspace()).rows(pack.meta["experiment"])
    assert {r["config_hash"] for r in rows} == keys


def test_every_page_has_something_to_show_from_the_pack(pack):
    ws = pack.workspace()
    assert ws.read_only
    graphs = readers.graphs(ws)
    assert graphs
    from g2is_core.graph.layout import find_layout

    for g in graphs:
        found = find_layout(g.features_key, ws)
        assert found is not None, f"graph {g.path.name} has no layout in the pack"
        coords, _ = found
        assert len(coords) == g.meta["n"] and np.isfinite(coords[["x", "y"]].to_numpy()).all()
        assert readers.dataset_saved(ws, g.data_hash)
    walks = [r for r in readers.selection_runs(ws) if r.has_walk]
    assert walks and all(r.load().ids for r in walks)
    studies = readers.head_studies(ws)
    assert len(studies) == 1
    reg = readers.registry(ws)
    assert reg is not None and reg.read_only
    rows = reg.rows(pack.meta["experiment"])
    methods = {r["method"] for r in rows if r["status"] == "done"}
    assert {"base", "random", "full", "g2is", "less", "bm25"} <= methods
    for r in rows:  # paths inside the pack, resolved against it
        if r["selection"]:
            assert readers.selected_ids(r["selection"])
        if r["train_dir"]:
            assert readers.training_losses(r["train_dir"])


def test_a_tampered_pack_is_reported(pack, tmp_path):
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(pack.root, copy)
    victim = next(p for p in sorted(copy.rglob("*.json")) if p.name != "pack.json")
    victim.write_text(victim.read_text() + " ")
    (copy / "stray.txt").write_text("x")
    problems = check_pack(find_pack(copy), inputs=False)
    assert any(str(victim.relative_to(copy)) in p and "changed" in p for p in problems)
    assert any("stray.txt" in p and "not listed" in p for p in problems)


def test_the_pack_is_read_only(pack):
    ws = pack.workspace()
    with pytest.raises(PermissionError, match="read-only"):
        ws.dir("graphs", "x")


def test_no_pack_when_switched_off(monkeypatch):
    monkeypatch.setenv("G2IS_DEMO_PACK", "none")
    assert find_pack() is None
