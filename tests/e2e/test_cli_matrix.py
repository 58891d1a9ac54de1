"""Every subcommand through a generated matrix of bad inputs (issue 18 item 6): no exit 1, no traceback.

The subcommands are enumerated from the parser itself (:func:`g2is_core.cli.build_parser`), so a new command
is in the matrix the day it is registered. For each one a *base* argv is generated that fails early: every
argument that names a model, data, a spec, a store, a study or a feature file gets a path that does not exist
(so no case starts a model run), required choices get their first choice, required numbers a valid one. Then
each argument in turn gets each bad value of its kind:

- numbers: 0, -1, nan, inf, 1e30, text, "";
- paths: missing, a directory, an empty file, a junk file;
- choices: a value that is not one; free text: "", "=", text, numbers, non-ASCII;
- switches: given.

Every case runs in this process through ``cli.main`` (fast: no subprocess) and must end with exit 0 (the input
was acceptable) or exit 2 with a one-line ``g2is ...: error: ...`` sentence, never exit 1 ("internal error")
and never a traceback. A hypothesis property adds random text for random arguments on top.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from g2is_core import cli

# Arguments that name something to read: a missing path makes every command stop before any model work.
PATHLIKE = {"model", "data", "pool", "targets", "spec", "study", "warmup", "wheel", "train_store", "target_store",
            "train_features", "target_features", "path", "experiment_spec"}
NUMBERS = ["0", "-1", "nan", "inf", "1e30", "text", ""]
TEXTS = ["", "=", "text", "0", "-1", "1e30", "nan", "ünïcødé ✓", "a=b=c", ",,,"]


class Launched(BaseException):
    """Raised instead of replacing the test process with streamlit (``g2is app``)."""


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every command that runs something, depth first."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path and parser.get_default("func") is not None:
        yield path, parser
    for sp in subs:
        for name, p in sp.choices.items():
            yield from leaves(p, path + (name,))


def _kind(a: argparse.Action) -> str:
    if a.nargs == 0:
        return "switch"
    if a.choices is not None:
        return "choice"
    t = a.type
    name = getattr(t, "__name__", "")
    if a.dest in PATHLIKE or name in ("output_directory", "output_file") or t is Path:
        return "path"
    if t in (int, float) or name in ("whole_number", "number"):
        return "number"
    return "text"


def _args(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                                                              argparse._SubParsersAction))]


def base_values(parser: argparse.ArgumentParser, missing: str) -> dict[argparse.Action, str]:
    """Values that make the command fail early: every path-like argument missing, required values valid."""
    vals: dict[argparse.Action, str] = {}
    for a in _args(parser):
        k = _kind(a)
        required = a.required or (not a.option_strings and a.nargs not in ("?", "*"))
        if k == "path":
            vals[a] = missing
        elif required:
            vals[a] = str(list(a.choices)[0]) if k == "choice" else "1" if k == "number" else "x"
    return vals


def render(words: tuple[str, ...], parser: argparse.ArgumentParser, vals: dict) -> list[str]:
    """The argv: the command words, the positionals in the parser's order, then the options."""
    pos = [vals[a] for a in _args(parser) if not a.option_strings and a in vals]
    opt: list[str] = []
    for a in _args(parser):
        if a.option_strings and a in vals:
            opt += [a.option_strings[0]] if a.nargs == 0 else [a.option_strings[0], vals[a]]
    return [*words, *pos, *opt]


def argv_for(words, parser, missing: str, a: argparse.Action | None = None, value: str | None = None) -> list[str]:
    """The base argv of a command, with argument ``a`` set to ``value`` (a switch: given)."""
    vals = base_values(parser, missing)
    if a is not None:
        vals[a] = value
    return render(words, parser, vals)


@contextlib.contextmanager
def no_launch():
    """``g2is app`` replaces the process with streamlit (after a chdir): neither may happen in a test."""
    from g2is_core.cli import app as cli_app

    real, cwd = cli_app.os.execv, os.getcwd()

    def no_exec(*a, **k):
        raise Launched()

    cli_app.os.execv = no_exec
    try:
        yield
    finally:
        cli_app.os.execv = real
        os.chdir(cwd)


@pytest.fixture
def bad_paths(tmp_path) -> dict[str, str]:
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "a-directory").mkdir()
    (d / "empty.jsonl").write_bytes(b"")
    (d / "junk.bin").write_bytes(b"\x00\xff\xfe junk {[ \x89PNG\r\n" * 20)
    return {"missing": str(d / "missing.yaml"), "directory": str(d / "a-directory"),
            "empty": str(d / "empty.jsonl"), "junk": str(d / "junk.bin")}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh workspace; main's changes to the environment are undone afterwards; no process replacement."""
    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("G2IS_THREADS", "1")
    monkeypatch.delenv("G2IS_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    with no_launch():
        yield tmp_path


def run(capsys, argv: list[str]) -> tuple[int | None, str]:
    try:
        rc = cli.main(argv)
    except Launched:
        rc = 0
    except SystemExit as exc:  # main never lets one out; caught so the report names the case
        rc = -1 if exc.code is None else exc.code
    out = capsys.readouterr()
    return rc, out.out + out.err


def problem(rc, text: str) -> str | None:
    """Why a case's outcome breaks the policy, or None."""
    if "Traceback" in text:
        return "traceback"
    if rc == 1 or "internal error" in text:
        return f"exit {rc}: " + next((ln for ln in text.splitlines() if "internal error" in ln), text[-300:])
    if rc not in (0, 2):
        return f"exit {rc}"
    if rc == 2:
        lines = [ln for ln in re.split(r"[\r\n]+", text) if re.match(r"^g2is\b.*error: ", ln)]
        if len(lines) != 1:
            return "exit 2 without exactly one 'g2is ...: error: ...' line: " + text[-300:]
    return None


COMMANDS = list(leaves(cli.build_parser()))
IDS = [" ".join(w) for w, _ in COMMANDS]


def test_the_matrix_covers_every_registered_command():
    top = {w[0] for w, _ in COMMANDS}
    registered = {name for mod in cli.command_modules() for name in mod.COMMANDS}
    assert top == registered, "a registered command has no runnable leaf in the matrix"
    assert len(COMMANDS) >= 20  # model fetch/info, data inspect, tasks, walk, warmup, grads, graph build, ...


def cases(words, parser, paths: dict[str, str]):
    """(label, argv) of every bad-input case of one command."""
    yield "base", argv_for(words, parser, paths["missing"])
    for kind, p in paths.items():  # every path argument the same bad thing: the reader of each one is reached
        yield f"all paths {kind}", argv_for(words, parser, p)
    for a in _args(parser):
        k = _kind(a)
        values = {"number": NUMBERS, "path": list(paths.values()), "choice": ["not-a-choice"], "switch": [None],
                  "text": TEXTS}[k]
        for v in values:
            name = a.option_strings[0] if a.option_strings else a.dest
            yield f"{name}={v!r}", argv_for(words, parser, paths["missing"], a, v)


@pytest.mark.parametrize("words,parser", COMMANDS, ids=IDS)
def test_bad_inputs_are_exit_2_with_a_sentence(words, parser, bad_paths, isolated, capsys):
    failures = []
    n = 0
    for label, argv in cases(words, parser, bad_paths):
        rc, text = run(capsys, argv)
        n += 1
        why = problem(rc, text)
        if why:
            failures.append(f"g2is {' '.join(argv)}  [{label}]: {why}")
    assert n >= 1
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("flag,values", [("--workspace", None), ("--threads", NUMBERS)])
def test_global_options(flag, values, bad_paths, isolated, capsys):
    """The options before the command: a workspace that is a file / junk, thread counts out of range."""
    failures = []
    for v in values or list(bad_paths.values()):
        for cmd in (["bench", "show"], ["tasks"]):
            rc, text = run(capsys, [flag, v, *cmd])
            why = problem(rc, text)
            if why:
                failures.append(f"{flag} {v!r} {' '.join(cmd)}: {why}")
    assert not failures, "\n".join(failures)


def test_a_corrupt_registry_is_a_sentence_naming_the_file(isolated, capsys, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "registry.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmodel: tiny\ntargets: [{name: add_reverse}]\nmethods: []\n")
    for argv in (["bench", "show"], ["bench", "show", "t"], ["bench", "run", str(spec)]):
        rc, text = run(capsys, argv)
        assert rc == 2 and problem(rc, text) is None, text
        assert "registry.sqlite" in text and "damaged" in text and "move it aside" in text, text


def test_a_full_disk_is_exit_2_even_when_a_library_wraps_it(isolated, capsys, monkeypatch):
    """ENOSPC reaches the CLI as an OSError, or wrapped (safetensors/torch raise RuntimeError, sqlite its own)."""
    import errno

    from g2is_core.cli import base as cli_base

    def wrapped(args):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/ws/x.safetensors")
        except OSError as exc:
            raise RuntimeError("failed to write the file") from exc

    for boom in (wrapped, lambda a: (_ for _ in ()).throw(RuntimeError("Error while serializing: IoError(Os { code: 28, "
                                                                      "kind: StorageFull, message: \"No space left on "
                                                                      "device\" })"))):
        monkeypatch.setattr(cli_base, "_tasks", boom)
        rc, text = run(capsys, ["tasks"])
        assert rc == 2 and "disk is full" in text and problem(rc, text) is None, text


def test_a_bug_is_still_exit_1(isolated, capsys, monkeypatch):
    """The matrix's assertion can fail: an unexpected exception is exit 1 ("internal error")."""
    from g2is_core.cli import base as cli_base

    monkeypatch.setattr(cli_base, "_tasks", lambda a: {}["missing"])
    rc, text = run(capsys, ["tasks"])
    assert rc == 1 and problem(rc, text) is not None


# ----------------------------------------------------------------------------- random text, anywhere
ARGS = [(w, p, a) for w, p in COMMANDS for a in _args(p) if a.nargs != 0]


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(ARGS),
       text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24))
def test_random_text_for_any_argument_is_never_a_bug(case, text, tmp_path_factory, capsys):
    words, parser, a = case
    tmp = tmp_path_factory.mktemp("prop")
    env = {k: os.environ.get(k) for k in ("G2IS_WORKSPACE", "G2IS_THREADS")}
    os.environ["G2IS_WORKSPACE"] = str(tmp / "ws")
    try:
        argv = argv_for(words, parser, str(tmp / "missing"), a, text)
        with no_launch():
            rc, out = run(capsys, argv)
        assert problem(rc, out) is None, f"g2is {' '.join(argv)}: {out[-400:]}"
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- settings: one rule, two faces
SPEC = "name: t\nmodel: tiny\npool: {builtin: {seed: 0, per_task: 4}}\ntargets: [{name: add_reverse}]\nmethods: []\n"
BAD_SPEC_FIELDS = {
    "train.batch_size": ("train: {batch_size: 0}", "positive whole number"),
    "train.epochs": ("train: {epochs: 0}", "positive whole number"),
    "train.lr": ("train: {lr: .nan}", "finite positive"),
    "train.max_length": ("train: {max_length: -1}", "positive whole number"),
    "train.grad_accum": ("train: {grad_accum: 0}", "positive whole number"),
    "train.warmup_ratio": ("train: {warmup_ratio: 1.5}", r"\[0, 1\)"),
    "train.lora.r": ("train: {lora: {r: 0}}", "positive whole number"),
    "train.lora.dropout": ("train: {lora: {dropout: 1.0}}", r"\[0, 1\)"),
    "selection.features.warmup.epochs": ("selection: {features: {warmup: {epochs: 0}}}", "positive whole number"),
    "selection.features.warmup.fraction": ("selection: {features: {warmup: {fraction: 0}}}", "fraction"),
    "selection.features.dim": ("selection: {features: {dim: 0}}", "positive whole number"),
    "selection.features.max_length": ("selection: {features: {max_length: 0}}", "positive whole number"),
    "eval.max_length": ("eval: {max_length: 0}", "positive whole number"),
    "eval.batch_size": ("eval: {batch_size: 0}", "positive whole number"),
    "eval.template": ("eval: {template: fancy}", "chat, plain"),
    "seeds": ("seeds: []", "empty"),
    "ratios": ("ratios: [0]", r"\(0, 1\]"),
}


@pytest.mark.parametrize("field", list(BAD_SPEC_FIELDS))
def test_a_bad_spec_value_is_exit_2_naming_file_and_field(field, isolated, capsys, tmp_path):
    """Spec `batch_size: 0`, `epochs: 0`, ... were a ZeroDivisionError ("internal error") mid-run."""
    line, why = BAD_SPEC_FIELDS[field]
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC + line + "\n")
    for argv in (["bench", "run", str(spec)], ["bench", "features", str(spec)]):
        rc, text = run(capsys, argv)
        assert rc == 2 and problem(rc, text) is None, text
        assert f"bad.yaml, field '{field}'" in text and re.search(why, text), text


@pytest.mark.parametrize("cls,kw,field", [
    ("g2is_core.models.training:TrainConfig", {"batch_size": 0}, "batch_size"),
    ("g2is_core.models.training:TrainConfig", {"lr": float("inf")}, "lr"),
    ("g2is_core.models.training:TrainConfig", {"betas": (0.9, 1.0)}, "betas"),
    ("g2is_core.features.warmup:WarmupConfig", {"epochs": 0}, "epochs"),
    ("g2is_core.features.warmup:WarmupConfig", {"max_length": 0}, "max_length"),
    ("g2is_core.features.extract:FeatureConfig", {"max_length": 0}, "max_length"),
    ("g2is_core.features.extract:FeatureConfig", {"kind": "nope"}, "kind"),
    ("g2is_core.features.projection:ProjectorConfig", {"dim": 0}, "dim"),
    ("g2is_core.models.lora:LoraSettings", {"r": 0}, "r"),
    ("g2is_core.models.lora:LoraSettings", {"targets": ()}, "targets"),
    ("g2is_core.loop.evaluation:EvalSettings", {"max_length": -5}, "max_length"),
])
def test_settings_refuse_bad_values_in_code_too(cls, kw, field):
    import importlib

    from g2is_core.settings import SettingError

    mod, name = cls.split(":")
    with pytest.raises(SettingError) as info:
        getattr(importlib.import_module(mod), name)(**kw)
    assert info.value.field == field


def test_a_setting_refused_inside_a_command_names_its_flag():
    """A settings dataclass raises SettingError(field); the CLI names the command's flag of that name."""
    from g2is_core.settings import SettingError

    args = cli.build_parser(["grads"]).parse_args(["grads", "--data", "x", "--warmup", "y"])
    why = cli.user_error(SettingError("max_length", "0 is not a positive whole number (give 1 or more)"), args)
    assert why == "--max-length: 0 is not a positive whole number (give 1 or more)"
    assert cli.user_error(SettingError("proj_rows", "0 is bad"), args) == "setting 'proj_rows': 0 is bad"
    assert cli.user_error(KeyError("x"), args) is None  # a bug stays a bug
