"""The house's layering, read statically from the source (ast; nothing is imported).

Every ``import``/``from ... import`` counts, at module level and inside functions, and so does
``importlib.import_module("...")`` with a literal name, plus the registration list
``g2is_core.cli.COMMAND_MODULES``. Edges are kept to modules of this project only.
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = "g2is_core"
CLI = f"{PKG}.cli"

# The base modules every folder may use (and which use nothing but each other).
BASE = (PKG, f"{PKG}.workspace", f"{PKG}.runtime", f"{PKG}.progress", f"{PKG}.linalg", f"{PKG}.settings")
CORE_FOLDERS = ("data", "models", "features", "graph", "selection", "heads", "loop", "impact", "demo")

# What each part may import besides itself and BASE, as in its __init__ docstring ("May import: ...").
# An entry is a module or a folder (a folder allows everything under it).
ALLOWED: dict[str, tuple[str, ...]] = {
    "data": (),
    "models": ("data",),
    "features": ("data", "models"),
    "graph": (),
    "selection": ("data", "models", "features", "graph"),
    "heads": ("data", "models", "features.ray_backend"),  # heads/ray.py reuses the Ray plumbing
    "loop": ("data", "models", "features", "selection", "heads.patterns"),  # the closed loop's head patterns
    "impact": ("data", "models", "loop"),
    "demo": ("data", "models", "features", "graph", "selection", "heads", "loop"),
    "app": (*CORE_FOLDERS, "jobs"),       # any core folder and the jobs runner; never the CLI
    "cli": CORE_FOLDERS,                  # the core; never the app's helpers, never the jobs runner
    "jobs": (),                           # runs argv as processes: the base modules only
    "workspace": (), "runtime": (), "progress": (), "linalg": (), "settings": (), "": (),   # "": the package's own __init__
}
# Folders whose docstring lists its allowed folders by name (graph and data name only base modules;
# app says "any core folder").
DOCSTRING_NAMES = ("models", "features", "selection", "heads", "loop", "impact", "demo")

ARTEFACT_NAME = re.compile(r"[\w.-]+\.(json|parquet|npy|sqlite)\b")


# ----------------------------------------------------------------------------- the import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def _sources() -> dict[str, tuple[Path, ast.Module]]:
    files = sorted((ROOT / PKG).rglob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in files}


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``); None if external."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, tree: ast.Module, modules: set[str]) -> list[tuple[str, str, int]]:
    """(imported module as written, resolved project module or "", line) for every import in the file."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[tuple[str, str, int]] = []

    def add(name: str, line: int) -> None:
        out.append((name, _resolve(name, modules) or "", line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            for a in node.names:   # `from pkg import mod` imports the module pkg.mod
                sub = f"{full}.{a.name}"
                add(sub if sub in modules else full, node.lineno)
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if fname == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                add(node.args[0].value, node.lineno)
    if mod == CLI:   # the registration list: cli/__init__ imports these by name
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMMAND_MODULES" for t in node.targets):
                for elt in node.value.elts:
                    add(elt.value, node.lineno)
    return out


@lru_cache(maxsize=1)
def _graph() -> dict[str, list[tuple[str, str, int]]]:
    src = _sources()
    modules = set(src)
    return {m: _imports(m, p, t, modules) for m, (p, t) in src.items()}


def _edges(mod: str) -> set[str]:
    return {target for _, target, _ in _graph()[mod] if target and target != mod}


def _core_modules() -> list[str]:
    return [m for m in _graph() if m == PKG or m.startswith(PKG + ".")]


def _part(mod: str) -> str:
    """The layering part of a module: its folder under g2is_core, or its own name for top-level modules."""
    rest = mod[len(PKG) + 1:] if mod != PKG else ""
    return rest.split(".")[0]


def _is_under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


# ----------------------------------------------------------------------------- the rules
def test_the_graph_sees_function_level_and_importlib_imports():
    """The reader itself: lazy imports and importlib string calls are edges too."""
    assert f"{PKG}.data.loaders" in _edges(f"{PKG}.cli.base")         # inside _data_inspect
    assert f"{CLI}.heads" in _edges(CLI)                                # COMMAND_MODULES
    mods = set(_graph())
    tree = ast.parse("def f():\n    import importlib\n    importlib.import_module('g2is_core.cli')\n")
    assert (CLI, CLI, 3) in _imports(f"{PKG}.x", ROOT / PKG / "x.py", tree, mods)


def test_no_import_cycle():
    graph = {m: sorted(t for t in _edges(m) if t in _graph() and _is_under(t, PKG)) for m in _core_modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles (module or function level): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cli_modules_import_no_other_cli_module_but_common():
    bad = []
    for m in _core_modules():
        if not _is_under(m, CLI) or m == CLI:
            continue
        allowed = {CLI} if m == f"{CLI}.__main__" else set() if m == f"{CLI}._common" else {f"{CLI}._common"}
        bad += [f"{m} -> {t}" for t in _edges(m) if _is_under(t, CLI) and t not in allowed]
    assert not bad, "a command module may import only cli/_common.py of the CLI: " + ", ".join(sorted(bad))


def test_nothing_outside_the_cli_imports_it():
    bad = [f"{m} -> {t}" for m in _graph() if not _is_under(m, CLI) for t in _edges(m) if _is_under(t, CLI)]
    assert not bad, "the CLI is a leaf: " + ", ".join(sorted(bad))


def test_jobs_knows_nothing_of_the_cli():
    assert not [t for t in _edges(f"{PKG}.jobs") if _is_under(t, CLI)]
    raw = [name for name, _, _ in _graph()[f"{PKG}.jobs"]]
    assert not [n for n in raw if "cli" in n.split(".")], raw


def test_no_streamlit_in_the_package():
    bad = [f"{m}:{line}" for m in _core_modules() for name, _, line in _graph()[m] if name.split(".")[0] == "streamlit"]
    assert not bad, "g2is_core must not import streamlit: " + ", ".join(bad)


def test_each_part_imports_only_what_its_docstring_allows():
    bad = []
    for m in _core_modules():
        part = _part(m)
        if part not in ALLOWED:
            bad.append(f"{m}: no layering entry (add it to ALLOWED and to its docstring)")
            continue
        own = f"{PKG}.{part}" if part else PKG
        ok = [own, *BASE, *(f"{PKG}.{a}" for a in ALLOWED[part])]
        for t in _edges(m):
            if _is_under(t, PKG) and not any(t == o or (o != PKG and _is_under(t, o)) for o in ok):
                bad.append(f"{m} -> {t}")
    assert not bad, "imports outside the layering table: " + ", ".join(sorted(bad))


def test_folder_docstrings_state_the_table():
    src = _sources()
    wrong = []
    for folder in DOCSTRING_NAMES:
        doc = ast.get_docstring(src[f"{PKG}.{folder}"][1]) or ""
        assert "May import" in doc, f"{folder}/__init__.py: no 'May import' sentence"
        stated = doc[doc.index("May import"):]
        named = set(re.findall(rf"{PKG}\.([\w.]+)`", stated)) - {b[len(PKG) + 1:] for b in BASE if b != PKG}
        if named != set(ALLOWED[folder]):
            wrong.append(f"{folder}: docstring says {sorted(named)}, table says {sorted(ALLOWED[folder])}")
    for folder in ("app", "cli", "data", "graph"):
        assert "May import" in (ast.get_docstring(src[f"{PKG}.{folder}"][1]) or ""), folder
    assert not wrong, "; ".join(wrong)


def test_pages_name_no_artefact_file():
    """Pages reach artefacts through g2is_core.app.readers; a file name in a page is a second reader.

    Commands shown to the user (literals starting with "g2is ") are text, not file access.
    """
    bad = []
    for m, (path, tree) in _sources().items():
        if not (m.startswith("pages") or m == "app"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and not node.value.startswith("g2is "):
                if ARTEFACT_NAME.search(node.value):
                    bad.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not bad, "pages name artefact files: " + ", ".join(bad)
