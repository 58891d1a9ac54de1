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


# ----------------------------------------------------------------------------- the CLI as a new user meets it
HEAVY = ("torch", "transformers", "pandas", "faiss", "umap", "peft", "scipy", "pyarrow")


def _subparsers(parser, path=("g2is",)):
    """(path, parser) for every parser in the tree, the top one included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    import argparse

    missing = [f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
               for path, p in _subparsers(build_parser()) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and (not a.help or a.help == argparse.SUPPRESS)]
    assert not missing, "options without help text: " + ", ".join(missing)


def test_help_pages_speak_to_users_not_developers():
    """`walk`, `select` and `graph build --help` had the module docstrings (reST roles, Python paths)."""
    pages = {" ".join(path): p.format_help() for path, p in _subparsers(build_parser())}
    for cmd in ("g2is walk", "g2is select", "g2is graph build"):
        text = pages[cmd]
        assert "example:" in text, cmd
        for dev in (":class:", ":func:", "``", "g2is_core."):
            assert dev not in text, (cmd, dev)


def _run_py(code: str, tmp_path) -> str:
    import os

    env = {**os.environ, "G2IS_WORKSPACE": str(tmp_path / "ws")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return (out.stdout.strip().splitlines() or [""])[-1]  # the code prints its answer last


def test_top_level_help_imports_no_command_module_code(tmp_path):
    """`g2is --help` registers the commands by name only: not even numpy loads (it was 1.5 s on a busy machine)."""
    code = ("import sys\nfrom g2is_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('loaded:', ','.join(sorted(m for m in ('numpy', *%r) if m in sys.modules)))" % (HEAVY,))
    assert _run_py(code, tmp_path) == "loaded:"


def test_help_and_bad_arguments_are_answered_before_heavy_imports(tmp_path):
    """Every `--help` and these argument errors come back without torch, transformers, pandas, faiss or umap
    (a bad argument used to take 13-20 s: the model stack loaded before the input was checked)."""
    cases = [["model", "info", "no-such-model"], ["heads", "pattern", "--task", "add", "--model", "no-such-model"],
             ["impact", "run", "--corpus", "a=no-such-file", "--corpus", "b=no-such-file"],
             ["select", "--method", "random", "--pool", "no-such-file", "--targets", "builtin:targets", "--count", "3"],
             ["select", "--method", "random", "--pool", "builtin:pool", "--targets", "builtin:targets", "--ratio", "2"],
             ["walk", "--train-features", "no.npy", "--target-features", "no.npy", "--out", str(tmp_path / "w")],
             ["graph", "build", "--train-store", "no-such-store"], ["warmup", "--data", "builtin:pool", "--max-length",
                                                                    "-3"],
             ["grads", "--data", "no-such-file", "--warmup", "x"], ["bench", "run", "no-such-spec.yaml"]]
    code = f"""
import contextlib, io, sys
from g2is_core.cli import build_parser, main
from tests.e2e.test_cli import _subparsers
paths = [list(p[1:]) for p, _ in _subparsers(build_parser())]
rcs = []
for argv in [p + ['--help'] for p in paths] + {cases!r}:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    if not ((argv[-1] == '--help' and rc in (0, None)) or (rc == 2 and 'error: ' in err.getvalue().strip().splitlines()[-1])):
        rcs.append(' '.join(argv) + ' -> ' + str(rc) + ' ' + err.getvalue()[-300:])
print('failed:', rcs, 'loaded:', ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    assert _run_py(code, tmp_path) == "failed: [] loaded:"


def test_argument_errors_name_the_flag(capsys):
    for argv, flag in ((["warmup", "--data", "builtin:pool", "--max-length", "0"], "--max-length"),
                       (["select", "--method", "random", "--pool", "builtin:pool", "--targets", "builtin:targets",
                         "--ratio", "1.5"], "--ratio")):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err, err


def test_data_inspect_breaks_a_multi_task_family_down_per_task(tmp_path, capsys):
    """BBH is one task per file (MMLU per subject, T0 per template): `data inspect` lists each; a prompt
    library beside the data (mmlu/lib_prompt/mmlu-cot.json) is skipped and named even in a strict load."""
    import json

    d = tmp_path / "bbh"
    d.mkdir()
    for name, n in (("boolean_expressions", 3), ("date_understanding", 2)):
        (d / f"{name}.json").write_text(json.dumps(
            {"canary": "x", "examples": [{"input": f"q{i}", "target": "True"} for i in range(n)]}))
    (d / "lib.json").write_text(json.dumps({"boolean_expressions": "Q: ...\nA: ...", "date_understanding": "..."}))
    assert main(["data", "inspect", str(d)]) == 0
    out = capsys.readouterr().out
    assert "5 records loaded" in out
    assert "2 subtasks: boolean_expressions 3, date_understanding 2" in out
    assert "skipped file" in out and "lib.json" in out and "prompt library" in out
    assert main(["data", "inspect", str(d), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["by_subtask"]["bbh"] == {"boolean_expressions": 3, "date_understanding": 2}
