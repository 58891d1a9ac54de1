"""`g2is bench archive` / `restore` (loop/archive.py): an experiment's finished cells written as files and read back
into another workspace's registry give the same tables, the same intervals and the same skipped cells; an edited
or misnamed file stops with a sentence naming it."""
import gzip
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from g2is_core.loop.archive import export_cells, import_cells, read_cell
from g2is_core.loop.plan import plan
from g2is_core.loop.registry import Registry
from g2is_core.loop.runner import all_cells, cell_config
from g2is_core.loop.scores import load_scores, save_scores
from g2is_core.loop.spec import spec_from_dict
from g2is_core.loop.study import overlap_by_cell, paired_ci_table
from g2is_core.workspace import Workspace, hash_config

RAW = {"name": "arch", "model": "tiny", "pool": {"builtin": {"seed": 0, "per_task": 4, "distractors": 8}},
       "methods": ["bm25"], "ratios": [0.1], "seeds": [0, 1], "targets": [{"name": "add_reverse", "n_select": 2}]}
POOL_HASH = "poolhash"
IDS = ["q0", "q1", "q2", "q3"]


def _finish(reg, ws_root, spec, method, seed, values, picked):
    t = spec.targets[0]
    ratio = None if method == "base" else 0.1
    cfg = cell_config(spec, t, method, ratio, seed, POOL_HASH)
    key = hash_config(cfg)
    assert reg.claim(key, spec.name, t.name, method, ratio, seed, cfg)
    sel = None
    if picked:
        sel = ws_root / "selections" / f"sel-{method}-{seed}"
        sel.mkdir(parents=True)
        (sel / "selected_ids.json").write_text(json.dumps(picked))
        # the selection's scores table: every pool record, its source, and whether it was picked
        pool = ["a", "b", "c", "d", "x", "y"]
        pd.DataFrame({"id": pool, "source": ["t0", "t0", "dolly", "dolly", "oasst", "oasst"],
                      "selected": [i in picked for i in pool]}).to_parquet(sel / "scores.parquet")
    save_scores(reg, key, spec.name, {"ids": IDS, "values": {"accuracy": values}, "weights": {}})
    reg.finish(key, metrics={"accuracy": sum(values) / len(values), "n_train": len(picked)},
               timings={"select_s": 1.0, "train_s": 10.0, "eval_s": 5.0}, selection=str(sel) if sel else None,
               train_dir=str(ws_root / "training" / f"w{method}{seed}") if method != "base" else None,
               info={"diagnostics": {"composition": {"source": {"t0": len(picked)}}}})
    return key


@pytest.fixture
def finished(tmp_path):
    ws = Workspace(tmp_path / "ws_a")
    spec = spec_from_dict(RAW, "spec.yaml")
    reg = Registry.open(ws)
    reg.record_version(spec.name, hash_config(spec.to_dict()), spec.to_dict(),
                       [hash_config(cell_config(spec, *c, POOL_HASH)) for c in all_cells(spec)])
    keys = [_finish(reg, ws.root, spec, "base", 0, [0.0, 0.0, 1.0, 0.0], []),
            _finish(reg, ws.root, spec, "random", 0, [0.0, 1.0, 0.0, 0.0], ["a", "b"]),
            _finish(reg, ws.root, spec, "random", 1, [1.0, 0.0, 0.0, 0.0], ["c", "d"]),
            _finish(reg, ws.root, spec, "bm25", 0, [1.0, 1.0, 1.0, 0.0], ["a", "x"]),
            _finish(reg, ws.root, spec, "bm25", 1, [1.0, 1.0, 0.0, 1.0], ["c", "y"])]
    # a cell still running is no result, and a finished one of an earlier edit of the spec is not in its tables:
    # both stay out of the archive
    t = spec.targets[0]
    old = {**cell_config(spec, t, "bm25", 0.1, 0, POOL_HASH), "train": {"lr": 1.0}}
    assert reg.claim(hash_config(old), spec.name, t.name, "bm25", 0.1, 0, old)
    reg.finish(hash_config(old), metrics={"accuracy": 0.5}, timings={})
    cfg = {**cell_config(spec, t, "bm25", 0.1, 0, POOL_HASH), "note": "running"}
    assert reg.claim(hash_config(cfg), spec.name, t.name, "bm25", 0.1, 7, cfg)
    return spec, reg, keys, tmp_path


def test_round_trip_gives_the_same_rows_scores_intervals_and_overlaps(finished):
    spec, reg, keys, tmp = finished
    rep = export_cells(reg, spec.name, tmp / "archive")
    assert sorted(rep.written) == sorted(keys) and rep.versions == 1
    assert sorted(p.name for p in (tmp / "archive" / "cells").iterdir()) == sorted(f"{k}.json.gz" for k in keys)

    other = Registry.open(Workspace(tmp / "ws_b"))
    got = import_cells(other, tmp / "archive")
    assert sorted(got.written) == sorted(keys)
    a = {r["config_hash"]: r for r in reg.current_rows(spec.name) if r["status"] == "done"}
    b = {r["config_hash"]: r for r in other.current_rows(spec.name)}
    assert set(a) == set(b)
    for k in keys:
        for col in ("target", "method", "ratio", "seed", "config", "metrics", "timings", "created", "finished"):
            assert a[k][col] == b[k][col], col
        assert b[k]["selection"] is None and b[k]["train_dir"] is None   # the first machine's paths stay behind
        assert b[k]["info"]["diagnostics"] == a[k]["info"]["diagnostics"]
    assert load_scores(other, spec.name) == load_scores(reg, spec.name)
    ci_a = paired_ci_table(a.values(), load_scores(reg, spec.name), n_boot=200)
    ci_b = paired_ci_table(b.values(), load_scores(other, spec.name), n_boot=200)
    assert ci_a.equals(ci_b) and not ci_a.empty
    # the overlap reads the carried ids: {a,b} vs {a,x} = 1/3, {c,d} vs {c,y} = 1/3
    ov = overlap_by_cell(b.values())
    assert ov.jaccard.tolist() == pytest.approx([1 / 3]) and ov.n_seeds.tolist() == [2]
    assert overlap_by_cell(a.values()).equals(ov)
    # the report's picks per source file read the carried sources: bm25 seed 0 picked a (t0) and x (oasst)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from report_experiment import composition_section, overlap_section

    text = composition_section(list(b.values()), seed=0)
    assert text == composition_section(list(a.values()), seed=0)
    assert "| oasst | 1 | 0 |" in text and "| t0 | 1 | 2 |" in text   # random seed 0 picked a and b
    assert overlap_section(list(b.values()), seed=0) == overlap_section(list(a.values()), seed=0)
    # `bench run` skips them: a finished row cannot be claimed again, and the plan counts them done
    for k in keys:
        row = b[k]
        assert not other.claim(k, spec.name, row["target"], row["method"], row["ratio"], row["seed"], row["config"])
    assert plan(spec, other).n_done == len(keys)


def test_export_again_writes_the_same_bytes_and_a_second_import_changes_nothing(finished):
    spec, reg, keys, tmp = finished
    export_cells(reg, spec.name, tmp / "archive")
    before = {p.name: p.read_bytes() for p in (tmp / "archive" / "cells").iterdir()}
    rep = export_cells(reg, spec.name, tmp / "archive")
    assert rep.written == [] and sorted(rep.unchanged) == sorted(keys)
    assert {p.name: p.read_bytes() for p in (tmp / "archive" / "cells").iterdir()} == before
    other = Registry.open(Workspace(tmp / "ws_b"))
    import_cells(other, tmp / "archive")
    again = import_cells(other, tmp / "archive")
    assert again.written == [] and sorted(again.unchanged) == sorted(keys)
    # exported from the second machine, the cells are the same files (the carried ids and weight keys round-trip)
    export_cells(other, spec.name, tmp / "archive2")
    assert {p.name: p.read_bytes() for p in (tmp / "archive2" / "cells").iterdir()} == before


def test_a_cell_the_registry_measured_later_keeps_the_registrys_row(finished):
    spec, reg, keys, tmp = finished
    export_cells(reg, spec.name, tmp / "archive")
    row = next(r for r in reg.rows(spec.name) if r["config_hash"] == keys[1])
    reg.update_measurement(keys[1], metrics={**row["metrics"], "accuracy": 0.9}, timings=row["timings"],
                           info=row["info"])
    with reg._conn() as c:
        c.execute("UPDATE runs SET finished=? WHERE config_hash=?", (row["finished"] + 10, keys[1]))
    rep = import_cells(reg, tmp / "archive")
    assert rep.kept == [keys[1]] and rep.written == []
    assert next(r for r in reg.rows(spec.name) if r["config_hash"] == keys[1])["metrics"]["accuracy"] == 0.9


def _rewrite(path, edit):
    rec = json.loads(gzip.decompress(path.read_bytes()))
    edit(rec)
    path.write_bytes(gzip.compress(json.dumps(rec).encode()))


def test_edited_misnamed_or_foreign_files_stop_with_a_sentence_and_import_nothing(finished):
    spec, reg, keys, tmp = finished
    export_cells(reg, spec.name, tmp / "archive")
    cells = tmp / "archive" / "cells"
    victim = cells / f"{keys[3]}.json.gz"
    good = victim.read_bytes()

    _rewrite(victim, lambda r: r["row"]["metrics"].update(accuracy=1.0))   # a better number typed in
    other = Registry.open(Workspace(tmp / "ws_b"))
    with pytest.raises(ValueError, match=rf"{keys[3]}\.json\.gz: its content does not match its digest"):
        import_cells(other, tmp / "archive")
    assert other.rows() == []   # every file is checked before any is written

    victim.write_bytes(good)
    shutil.copy(victim, cells / "0000000000000000.json.gz")
    with pytest.raises(ValueError, match=rf"0000000000000000\.json\.gz: holds cell {keys[3]}"):
        import_cells(other, tmp / "archive")
    (cells / "0000000000000000.json.gz").unlink()

    (cells / "junk.json.gz").write_text("not gzip")
    with pytest.raises(ValueError, match=r"junk\.json\.gz: not a g2is cell file"):
        read_cell(cells / "junk.json.gz")
    (cells / "junk.json.gz").write_bytes(gzip.compress(b'{"format": "other/9"}'))
    with pytest.raises(ValueError, match=r"junk\.json\.gz: format 'other/9'"):
        read_cell(cells / "junk.json.gz")


def test_archiving_an_unknown_experiment_names_the_known_ones(finished):
    spec, reg, keys, tmp = finished
    with pytest.raises(ValueError, match=r"no finished cell of experiment 'nope'.*it has: arch"):
        export_cells(reg, "nope", tmp / "archive")


def test_the_cli_archives_and_restores_between_workspaces(finished, monkeypatch, capsys):
    from g2is_core.cli import main

    spec, reg, keys, tmp = finished
    monkeypatch.setenv("G2IS_WORKSPACE", str(reg.path.parent))
    assert main(["bench", "archive", spec.name, str(tmp / "archive")]) == 0
    assert f"{len(keys)} cell(s) written, 0 unchanged; 1 spec version(s)" in capsys.readouterr().out
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp / "ws_b"))
    assert main(["bench", "restore", str(tmp / "archive")]) == 0
    assert f"{len(keys)} cell(s) imported" in capsys.readouterr().out
    assert main(["bench", "show", spec.name]) == 0
    shown = capsys.readouterr().out
    assert "bm25" in shown and "random" in shown
    assert main(["bench", "restore", str(tmp / "nowhere")]) == 2
    assert "nowhere: no cell files under" in capsys.readouterr().err


def test_compare_results_pairs_lines_by_table_and_cell(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import compare_results

    head = "| target | metric | method | ratio | seeds | mean ± std | vs random |\n|---|---|---|---|---|---|---|\n"
    old = ("## Results\n\n" + head + "| t | nll | base |  | 1 | 2.734 ± 0.000 |  |\n"
           "| t | nll | g2is | 1% | 3 | 1.500 ± 0.010 | -0.1 |\n| t | nll | less | 1% | 3 | 1.400 ± 0.010 | |\n"
           "## Other\n\n" + head + "| t | nll | base |  | 1 | 9.000 ± 0.000 |  |\n")
    new = ("## Results\n\n" + head + "| t | nll | base |  | 1 | 2.734 ± 0.000 |  |\n"
           "| t | nll | g2is | 1% | 2 | 1.520 ± 0.010 | -0.1 |\n")
    (tmp_path / "old.md").write_text(old)
    (tmp_path / "new.md").write_text(new)
    assert compare_results.main([str(tmp_path / "old.md"), str(tmp_path / "new.md")]) == 0
    out = capsys.readouterr().out
    assert "| Results | t | nll | base |  | 1 | 2.734 ± 0.000 | 2.734 ± 0.000 | yes | +0.000 |" in out
    assert "| Results | t | nll | g2is | 1% | 3 / 2 (other seeds) | 1.500 ± 0.010 | 1.520 ± 0.010 | no | +0.020 |" in out
    # "Other"'s base line is another table's: not paired with Results' base
    assert "1 of 2 lines equal as printed (1 over the same number of seeds); 2 lines only in old.md, 0 only in new.md" in out
    assert compare_results.main([str(tmp_path / "old.md"), str(tmp_path / "new.md"), "--out", str(tmp_path / "c.md"),
                                 "--command", "make it"]) == 0
    written = (tmp_path / "c.md").read_text()
    assert written.startswith("<!-- generated by `make it`; do not edit by hand -->") and "| no | +0.020 |" in written
    assert compare_results.main([str(tmp_path / "gone.md"), str(tmp_path / "new.md")]) == 2


def test_compare_results_implies_the_seed_a_rerun_lacks():
    """Three seeds 1.742, 1.234, 1.443 (mean 1.473, std 0.255); the rerun holds the first two (1.488 ± 0.359): the
    old line implies 1.443 for the third, and its std fits. Another old std, or a rerun not one seed short, does not."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from compare_results import left_out_seed

    assert left_out_seed("3", "1.473 ± 0.255", "2", "1.488 ± 0.359") == "1.443 (fits)"
    assert left_out_seed("3", "1.473 ± 0.200", "2", "1.488 ± 0.359") == "1.443 (misfit)"
    assert left_out_seed("2", "0.500 ± 0.071", "1", "0.450 ± 0.000") == "0.550 (fits)"   # 0.45, 0.55
    assert left_out_seed("3", "1.473 ± 0.255", "1", "1.742 ± 0.000") == ""
    assert left_out_seed("3", "1.473 ± 0.255", "3", "1.473 ± 0.255") == ""
    assert left_out_seed("3", "n/a", "2", "1.488 ± 0.359") == ""


def test_a_machine_resolving_auto_otherwise_cannot_add_cells_to_an_experiment(monkeypatch):
    """A cell's key holds `bf16: auto` as written: on a CPU with native bf16 the finished fp32 cells would be paired
    with bf16 ones in one table. The runner refuses with a sentence; matching or foreign rows pass."""
    import g2is_core.runtime as runtime
    from g2is_core.loop.runner import check_precision

    spec = spec_from_dict({**RAW, "train": {"bf16": "auto"}}, "study.yaml")
    fp32_row = {"status": "done", "config_hash": "k1",
                "info": {"precision": {"train": {"precision": "fp32"}, "eval": {"precision": "fp32"}}}}
    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: False)
    check_precision(spec, [fp32_row], {"k1"})   # fp32 here too: nothing to say
    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: True)
    with pytest.raises(ValueError, match=r"study\.yaml: train\.bf16: auto runs training in bf16 on this machine .*"
                                         r"1 finished cell\(s\) of experiment 'arch' ran it in fp32 \(e\.g\. k1\); one "
                                         r"table must not mix precisions.*pin train\.bf16 in the spec \(false runs fp32"):
        check_precision(spec, [fp32_row], {"k1"})
    check_precision(spec, [fp32_row], {"other"})   # a row of another spec version is no part of this one
    check_precision(spec, [{**fp32_row, "status": "failed"}], {"k1"})
    pinned = spec_from_dict({**RAW, "train": {"bf16": False}}, "study.yaml")
    check_precision(pinned, [fp32_row], {"k1"})   # pinned to fp32: it runs fp32 on every machine
