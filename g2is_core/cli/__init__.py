"""The ``g2is`` command line.

Each capability registers its subcommands from its own module (``register(subparsers)``), listed
once in :data:`COMMAND_MODULES`; this file only wires them up and turns expected errors (bad
input, missing artefacts) into one readable line and a non-zero exit code.

A command module names its commands in ``COMMANDS`` (name -> one-line help) and imports nothing heavy
at module level: ``main`` registers in full only the module of the command being run (its flags'
defaults come from core dataclasses whose modules load numpy and more), the others as their names
and help lines. So ``g2is --help`` and ``g2is CMD --help`` stay fast, and argparse reports a bad
argument before any model code is imported.

May import: every core folder and the base modules; never the app's helpers or the jobs runner. A
command module imports no other module of this folder except :mod:`._common` (shared argument helpers).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

from .. import __version__
from ._common import non_negative_int

# Modules that add subcommands; a missing optional module is skipped (its extra is not installed).
COMMAND_MODULES = [
    "g2is_core.cli.base",
    "g2is_core.cli.walk",
    "g2is_core.cli.grads",
    "g2is_core.cli.graph",
    "g2is_core.cli.heads",
    "g2is_core.cli.impact",
    "g2is_core.cli.bench",
    "g2is_core.cli.app",
]

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error policy: a bad argument is ONE line naming the flag, exit 2 (the usage
    block is one ``--help`` away), like every other input error of ``g2is``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``g2is`` parser. Without ``argv``, every command in full (tests, the Runs page's forms);
    with it, only the module of the command ``argv`` names in full, the others as name + help."""
    p = Parser(prog="g2is", description="G2IS Studio: instruction-data selection by gradients, "
                                "attention-head patterns, and the loop from data to score.")
    p.add_argument("--version", action="version", version=f"g2is {__version__}")
    p.add_argument("--workspace", help="artefact directory (default: cache/ in the project, or $G2IS_WORKSPACE)")
    p.add_argument("--threads", type=non_negative_int, help="torch threads (default 1, or $G2IS_THREADS; 0 = all cores)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    mods = command_modules()
    wanted = None if argv is None else _command_of(argv)
    for mod in mods:
        if argv is None or wanted in mod.COMMANDS:
            mod.register(sub)
        else:  # listed in `g2is --help`; never parsed in this process
            for name, text in mod.COMMANDS.items():
                sub.add_parser(name, help=text)
    return p


def _command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (its first positional word after the global options), or None."""
    it = iter(argv)
    for tok in it:
        if tok in ("--workspace", "--threads"):
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


def command_modules() -> list:
    """The importable modules of :data:`COMMAND_MODULES` (a missing optional one is skipped)."""
    mods = []
    for name in COMMAND_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return mods


# A full disk or quota reached, said by libraries that wrap the OSError in their own exception (safetensors,
# torch, numpy, sqlite): found in the message or in the exception's chain.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "database or disk is full")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def user_error(exc: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """The one sentence for an error the user can fix (bad input, a bad setting, a damaged or missing file, a
    full disk, a directory the OS refuses), or None for a bug. The one policy of the CLI (exit 2 with this
    sentence, exit 1 "internal error" otherwise); the app's jobs run the CLI, so they follow it too."""
    from ..settings import SettingError

    if isinstance(exc, SettingError):
        # a settings dataclass refused a value: name the flag where the command has one of that name
        flag = "--" + exc.field.replace("_", "-")
        if args is not None and hasattr(args, exc.field):
            return f"{flag}: {exc}"
        return f"setting {exc.field!r}: {exc}"
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL or any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            return (f"the disk is full{where}: {' '.join(str(e).split())[:200]}; finished work is kept, free some "
                    "space and run the same command again")
    if isinstance(exc, ValueError):  # DataError, ModelError, SettingError, EvalError, RegistryError: sentences
        return str(exc)
    if isinstance(exc, OSError):  # a missing file, permission denied, a path that is a file: the OS said no
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        if isinstance(exc, FileNotFoundError) and not exc.filename:
            return str(exc)  # our own "no such ..." sentence
        return (f"{exc.strerror or exc}{where}; finished work is kept, fix this and run the same command again")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a bad argument (2, said in one line by Parser.error)
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else EXIT_BAD_INPUT
    if args.workspace:
        os.environ["G2IS_WORKSPACE"] = str(Path(args.workspace).expanduser().resolve())
    if args.threads is not None:
        os.environ["G2IS_THREADS"] = str(args.threads)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"g2is {args.command}: interrupted; finished work is kept, run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (classified below: the user's to fix -> 2, a bug -> 1)
        why = user_error(exc, args)
        if why is not None:
            print(f"g2is {args.command}: error: {' '.join(why.split())}", file=sys.stderr)  # one line, always
            return EXIT_BAD_INPUT
        if os.environ.get("G2IS_DEBUG"):
            raise
        msg = " ".join(str(exc).split())[:300]
        print(f"g2is {args.command}: internal error: {type(exc).__name__}: {msg} (set G2IS_DEBUG=1 for the "
              "traceback and please report it)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
