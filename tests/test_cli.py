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
