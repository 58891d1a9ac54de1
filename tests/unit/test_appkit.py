"""The app's plain helpers (no Streamlit): tables, path confinement, uploads, stores, `g2is app`."""
from __future__ import annotations

import pytest

from g2is_core.app import kit as appkit
from g2is_core.data.records import simple
from g2is_core.workspace import write_sidecar


def _recs():
    return [simple("a", "line one\nline two", "x" * 300, source="s1", task="t1"),
            simple("b", "p", "r", source="s1", task="t2", subtask="sub"),
            simple("c", "p", "r", source="s2", task="t2")]


def test_records_table_truncates_and_keeps_order():
    df = appkit.records_table(_recs(), width=20)
    assert list(df.columns) == ["id", "source", "task", "subtask", "prompt", "response"]
    assert list(df["id"]) == ["a", "b", "c"]
    assert df.loc[0, "prompt"] == "line one ⏎ line two"
    assert len(df.loc[0, "response"]) == 20 and df.loc[0, "response"].endswith("…")
    assert df.loc[1, "subtask"] == "sub" and df.loc[0, "subtask"] == ""


def test_count_by_sorts_most_first():
    df = appkit.count_by(_recs(), "task")
    assert df.values.tolist() == [["t2", 2], ["t1", 1]]
    assert appkit.count_by(_recs(), "subtask").values.tolist() == [["(none)", 2], ["sub", 1]]


@pytest.mark.parametrize("name,expected", [
    ("data.jsonl", "data.jsonl"), ("../../etc/passwd", "passwd"), ("C:\\x\\my file.csv", "my_file.csv"),
    (".hidden", "hidden"), ("", "upload"), ("..", "upload"), ("a b/ c?.json", "c_.json"),
])
def test_sanitize_filename(name, expected):
    assert appkit.sanitize_filename(name) == expected


def test_save_upload_never_overwrites_other_content(workspace):
    p1 = appkit.save_upload("../d.jsonl", b"one", workspace)
    assert p1 == workspace.root / "uploads" / "d.jsonl" and p1.read_bytes() == b"one"
    assert appkit.save_upload("d.jsonl", b"one", workspace) == p1          # same content: reused
    p2 = appkit.save_upload("d.jsonl", b"two", workspace)
    assert p2 != p1 and p2.parent == p1.parent and p2.read_bytes() == b"two" and p1.read_bytes() == b"one"


def test_resolve_data_path_is_confined(workspace, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "gsm8k").mkdir(parents=True)
    monkeypatch.setenv("G2IS_SHARED_DATA", str(shared))
    (workspace.root / "uploads").mkdir(exist_ok=True)
    f = workspace.root / "uploads" / "x.jsonl"
    f.write_text("{}\n")
    assert appkit.resolve_data_path("uploads/x.jsonl", workspace) == f
    assert appkit.resolve_data_path(str(f), workspace) == f
    assert appkit.resolve_data_path("gsm8k", workspace) == (shared / "gsm8k").resolve()
    for bad in ("/etc/passwd", "../../../etc/passwd", "uploads/../../outside"):
        with pytest.raises(ValueError, match="outside the folders"):
            appkit.resolve_data_path(bad, workspace)
    with pytest.raises(ValueError, match="no such file"):
        appkit.resolve_data_path("uploads/missing.jsonl", workspace)
    with pytest.raises(ValueError, match="type the path"):
        appkit.resolve_data_path("  ", workspace)


def test_resolve_data_spec_parses_with_the_one_grammar_then_confines(workspace, tmp_path, monkeypatch):
    from g2is_core.data.spec import DataSpec

    shared = tmp_path / "shared"
    (shared / "gsm8k").mkdir(parents=True)
    (shared / "gsm8k" / "t.jsonl").write_text("{}\n")
    monkeypatch.setenv("G2IS_SHARED_DATA", str(shared))
    (workspace.root / "uploads").mkdir(exist_ok=True)
    f = workspace.root / "uploads" / "x.jsonl"
    f.write_text("{}\n")
    got = appkit.resolve_data_spec("uploads/x.jsonl[1:]?fmt=alpaca&lenient=true", workspace)
    assert got == DataSpec(kind="file", name=str(f), rows=(1, None), fmt="alpaca", lenient=True)
    assert appkit.resolve_data_spec("shared:gsm8k/t.jsonl", workspace).path() == (shared / "gsm8k" / "t.jsonl").resolve()
    assert appkit.resolve_data_spec("gsm8k", workspace).path() == (shared / "gsm8k").resolve()   # as before
    assert appkit.resolve_data_spec(" builtin:targets:add_reverse ", workspace) == DataSpec("targets", "add_reverse")
    with pytest.raises(ValueError, match="outside the folders"):
        appkit.resolve_data_spec("shared:../../etc/passwd", workspace)
    with pytest.raises(ValueError, match="built-in data, not a file or folder"):
        appkit.resolve_data_path("builtin:pool", workspace)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        appkit.resolve_data_spec("uploads/x.jsonl?colour=red", workspace)


def test_stores_for_data_filters_on_data_hash(workspace):
    for key, h in (("s1", "abc"), ("s2", "def"), ("s3", None)):
        write_sidecar(workspace.dir("grads", key), "grads", {"dim": 8}, inputs={"data_hash": h} if h else {})
    assert list(appkit.stores_for_data(workspace, "abc")["key"]) == ["s1"]
    assert appkit.stores_for_data(workspace, "zzz").empty
    assert len(appkit.artefact_rows(workspace, "grads")) == 3
    assert appkit.artefact_rows(workspace, ["graphs", "walks"]).empty


def test_token_stats_counts_truncation():
    from g2is_core.models.loading import tiny_tokenizer

    tok = tiny_tokenizer()
    recs = [simple("a", "hi", "yo", source="s", task="t"), simple("b", "x" * 200, "y", source="s", task="t")]
    st = appkit.token_stats(tok, recs, max_length=64)
    assert st.n == 2 and st.n_cut == 1 and st.cut_response_tokens == 0
    assert st.lengths[1] - 64 == st.cut_prompt_tokens      # the long prompt is cut from the left
    assert st.lengths[0] < 64


def test_model_status_says_what_to_run(workspace):
    s = appkit.model_status(workspace)
    assert not s.ready and "g2is model fetch" in s.message


def test_elapsed():
    assert appkit.elapsed(None) == ""
    assert appkit.elapsed("2025-01-01T00:00:00+00:00", "2025-01-01T00:00:12+00:00") == "12 s"
    assert appkit.elapsed("2025-01-01T00:00:00+00:00", "2025-01-01T01:02:03+00:00") == "1 h 02 min"


def test_app_command_is_local_unless_asked(capsys):
    from g2is_core.cli import build_parser
    from g2is_core.cli.app import app_command

    cmd = app_command(8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[4].endswith("app.py")
    assert app_command(8600, "0.0.0.0")[cmd.index("--server.address") + 1] == "0.0.0.0"
    args = build_parser().parse_args(["app", "--port", "8600"])
    assert args.func.__name__ == "run_app" and args.host is None


def test_readers_find_artefacts_without_pages_naming_files(workspace):
    import pandas as pd

    from g2is_core.app import readers
    from g2is_core.workspace import write_json

    g = workspace.dir("graphs", "g1")
    write_sidecar(g, "graph", {"k": 4}, inputs={"features_key": "fk", "data_hash": "dh"})
    assert [(e.path, e.features_key, e.data_hash) for e in readers.graphs(workspace)] == [(g, "fk", "dh")]
    assert readers.run_graph(workspace, {"graph_key": "g1"}).path == g
    assert readers.run_graph(workspace, {"graph_key": "nope"}) is None and readers.run_graph(workspace, {}) is None

    r = workspace.dir("selections", "r1")
    write_json(r / "selected_ids.json", ["b", "a"])
    pd.DataFrame({"id": ["a", "b"], "selected": [True, True]}).to_parquet(r / "scores.parquet")
    write_sidecar(r, "selection", {"method": "random"}, inputs={"pool_data_hash": "dh"})
    (run,) = readers.selection_runs(workspace)
    assert (run.method, run.pool_data_hash, run.has_walk) == ("random", "dh", False) and run.stamp() > 0
    assert readers.selected_ids(r) == ["b", "a"]
    assert list(readers.selection_scores(r)["id"]) == ["a", "b"]
    assert not readers.dataset_saved(workspace, "dh") and not readers.dataset_saved(workspace, None)

    t = workspace.dir("train", "t1")
    assert readers.training_losses(t) is None
    write_json(t / "state.json", {"losses": [{"samples": 2, "loss": 1.5}]})
    assert readers.training_losses(t) == [{"samples": 2, "loss": 1.5}]
    assert readers.registry(workspace) is None
    assert not (workspace.root / readers.REGISTRY_FILE).exists()   # reading never creates the registry
    assert readers.head_studies(workspace) == [] and readers.impact_studies(workspace) == []


def test_workspace_state_counts_what_the_pages_show_and_names_the_next_step(workspace):
    """The overview page's reader: a fresh workspace asks for the model, then the demo, then your data."""
    from g2is_core.app import readers
    from g2is_core.models.loading import default_model_dir
    from g2is_core.workspace import write_sidecar

    s = readers.workspace_state(workspace)
    assert (s.model_ready, s.stores, s.graphs, s.selections, s.head_studies, s.impact_studies,
            s.benchmark_rows, s.jobs) == (False, 0, 0, 0, 0, 0, 0, ())
    assert s.next_step == "fetch" and "g2is model fetch" in s.model_message and not s.running("demo")
    assert not (workspace.root / "registry.sqlite").exists()          # reading creates nothing
    default_model_dir(workspace).mkdir(parents=True)
    write_sidecar(default_model_dir(workspace), "model", {})
    assert readers.workspace_state(workspace).next_step == "demo"
    for kind in (readers.STORES, readers.GRAPHS):
        (workspace.root / kind / "k1").mkdir(parents=True)
        write_sidecar(workspace.root / kind / "k1", kind, {})
    s = readers.workspace_state(workspace)
    assert (s.model_ready, s.stores, s.graphs, s.next_step) == (True, 1, 1, "data")


def test_benchmark_noise_marks_claim_no_spread_or_win_from_one_seed():
    import pandas as pd

    from g2is_core.app.kit import with_noise_marks, with_paired_noise

    t = pd.DataFrame({"method": ["g2is", "bm25", "less"], "n_seeds": [1, 3, 3], "mean": [0.5, 0.6, 0.9],
                      "std": [0.0, 0.1, 0.05], "vs_random": [0.08, 0.05, 0.3]})
    m = with_noise_marks(t)
    assert pd.isna(m["std"].iat[0]) and m["std"].iat[1] == 0.1                 # no 0.000 from one seed
    assert list(m["noise"]) == ["one seed", "inside the seed spread", ""]
    p = pd.DataFrame({"method": ["g2is", "bm25", "less"], "n_pairs": [1, 3, 3], "mean_diff": [0.08, 0.01, 0.3],
                      "min_diff": [0.08, -0.02, 0.2], "max_diff": [0.08, 0.04, 0.4], "better": [1, 2, 3]})
    q = with_paired_noise(p)
    assert pd.isna(q["better"].iat[0]) and list(q["better"].iloc[1:]) == [2, 3]  # no "better 1" from one pair
    assert list(q["noise"]) == ["one seed", "seeds disagree on the sign", ""]


def test_run_entry_names_its_target():
    from pathlib import Path

    from g2is_core.app.readers import RunEntry

    cli = RunEntry(Path("a"), {"inputs": {"targets": "builtin:targets:add_reverse (seed 0)", "target_data_hash": "ab"}})
    bench = RunEntry(Path("b"), {"name": "demo/lookup_add/g2is/0.05/0", "inputs": {"target_data_hash": "cd"}})
    bare = RunEntry(Path("c"), {"inputs": {"target_data_hash": "0123456789", "train_store_keys": ["k1", "k2"]}})
    assert cli.target == "add_reverse (seed 0)" and bench.target == "lookup_add" and bare.target == "target 01234567"
    assert bare.train_store_keys == ["k1", "k2"] and cli.train_store_keys == []
