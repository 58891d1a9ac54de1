import subprocess
import sys

from g2is_core.cli import build_parser, main


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "g2is_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("model", "data", "tasks"):
        assert cmd in out.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "completion": "y"}\n{not json\n')
    rc = main(["data", "inspect", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "bad.jsonl" in err and "line 2" in err


def test_tasks_lists_the_builtin_suite(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "add_reverse" in out and "composite" in out


def test_parser_builds():
    assert build_parser().prog == "g2is"


def test_data_specs_on_the_command_line(workspace, tmp_path, capsys):
    """--pool/--targets take the one data-spec grammar (README "Naming data"): the old spellings, the
    experiment specs' builtin:<composite>, options in the text; a bad spec is one line naming what is accepted."""
    import json

    from g2is_core.selection import list_runs

    assert main(["select", "--method", "random", "--pool", "builtin:pool?per_task=6&distractors=12", "--targets",
                 "builtin:add_reverse", "--count", "5"]) == 0
    (run, meta), = list_runs(workspace, "random")
    assert meta["inputs"]["pool"] == "builtin:pool?per_task=6&distractors=12 (seed 0)"
    assert meta["inputs"]["targets"] == "builtin:targets:add_reverse (seed 0)"
    assert len(json.loads((run / "selected_ids.json").read_text())) == 5
    capsys.readouterr()
    for spec, says in (("builtin:add", "name its records builtin:task:add"),
                       ("builtin:pool?fmt=csv", "option fmt= does not apply to builtin:pool")):
        assert main(["select", "--method", "random", "--pool", "builtin:pool", "--targets", spec, "--count", "5"]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.count("\n") == 0
