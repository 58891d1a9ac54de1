"""Hardening, tested as an attacker would (issue 8): the bad-input matrix through the CLI and the
library, the app's path and upload rules, local-only networking, and a scan of the package for
unsafe deserialisation and unescaped HTML.

Every CLI case goes through ``g2is_core.cli.main`` and must end with exit code 2 (bad input) and
ONE readable line on stderr that names the problem (progress-bar redraws aside), never a
traceback. The loader cases that test_data.py already covers in depth (error names the file, line
and field; lenient mode) are repeated here only as CLI cases; docs/reliability.md lists both.
"""
from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from g2is_core import cli
from g2is_core.workspace import PROJECT_ROOT, Workspace

GOOD = {"instruction": "Say hi", "input": "", "output": "hi"}


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, the last non-progress stderr line, all stderr) of ``g2is ARGV`` in this process."""
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    lines = [ln for ln in re.split(r"[\r\n]+", out.err) if ln.strip() and not re.match(r"^\s*\S+:\s+\d+%\|", ln)]
    return rc, (lines[-1] if lines else ""), out.err


def assert_one_line(capsys, argv, expect: str, rc: int = 2) -> str:
    code, line, err = run_cli(capsys, argv)
    assert code == rc, err
    assert "Traceback" not in err
    msg_lines = [ln for ln in err.splitlines() if ln.startswith("g2is ")]
    assert len(msg_lines) == 1, err                       # exactly one message line
    assert line == msg_lines[0] and re.search(expect, line, re.IGNORECASE), line
    return line


# ============================================================================ data files through the CLI
def _files(d: Path) -> dict[str, Path]:
    """The bad-input files of the matrix: name -> path."""
    raw: dict[str, bytes] = {
        "truncated_jsonl": b'{"instruction": "a", "output": "b"}\n{"instruction": "x", "outp',
        "truncated_json_list": b'[{"instruction": "a", "output": "b"}, {"instr',
        "truncated_gzip": gzip.compress(json.dumps(GOOD).encode() * 50)[:40],
        "wrong_type": b'{"instruction": 5, "output": "b"}\n',
        "wrong_type_messages": b'{"messages": "hello"}\n',
        "missing_field": b'{"instruction": "a"}\n',
        "empty_prompt": b'{"instruction": "", "output": "b"}\n',
        "empty_response": b'{"instruction": "a", "output": "   "}\n',
        "invalid_utf8": b'{"instruction": "a\xff\xfe", "output": "b"}\n',
        "duplicate_ids": b'{"id": "x", "messages": [{"role": "user", "content": "a"}, '
                         b'{"role": "assistant", "content": "b"}]}\n' * 2,
        "zero_records_empty_file": b"",
        "zero_records_blank_lines": b"\n\r\n\n",
        "zero_records_empty_list": b"[]",
        "json_null": b"null",
        "bad_role": b'{"messages": [{"role": "hacker", "content": "a"}]}\n',
        "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    }
    out = {}
    for name, data in raw.items():
        suffix = ".json" if name in ("truncated_json_list", "zero_records_empty_list", "json_null", "deep_nesting") \
            else ".jsonl.gz" if name == "truncated_gzip" else ".jsonl"
        p = d / f"{name}{suffix}"
        p.write_bytes(data)
        out[name] = p
    return out


DATA_CASES = {  # case -> what the one line must say
    "truncated_jsonl": r"line 2: not valid JSON",
    "truncated_json_list": r"not valid JSON",
    "truncated_gzip": r"could not read the file.*gzip",
    "wrong_type": r"line 1, field 'instruction': field is a number, expected text",
    "wrong_type_messages": r"line 1.*messages",
    "missing_field": r"cannot tell the format from the keys \['instruction'\]",
    "empty_prompt": r"field 'instruction': field is empty",
    "empty_response": r"field 'output': field is empty",
    "invalid_utf8": r"line 1: invalid UTF-8",
    "duplicate_ids": r"line 2, field 'id': duplicate id 'x'",
    "zero_records_empty_file": r"the file is empty",
    "zero_records_blank_lines": r"the file is empty",
    "zero_records_empty_list": r"no record|empty",
    "json_null": r"cannot tell the format",
    "bad_role": r"role 'hacker'",
    "deep_nesting": r"not valid JSON|too deeply nested|nest",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    return _files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_is_one_line_and_exit_2(capsys, bad_files, case):
    line = assert_one_line(capsys, ["data", "inspect", bad_files[case]], DATA_CASES[case])
    assert bad_files[case].name in line or "format" in line     # the file is named


def test_missing_path_and_bad_columns(capsys, tmp_path):
    assert_one_line(capsys, ["data", "inspect", tmp_path / "nope.jsonl"], r"no such file or folder")
    good = tmp_path / "g.csv"
    good.write_text("q,a\n1,2\n")
    assert_one_line(capsys, ["data", "inspect", good, "--columns", "{bad"], r"--columns is not valid JSON")
    assert_one_line(capsys, ["data", "inspect", good, "--columns", "[1]"], r"--columns must be a JSON object")


def test_documented_lenient_handling(capsys, tmp_path):
    """BOM, CRLF, a 1 MB record load as they are; --lenient skips bad lines and lists them."""
    bom = tmp_path / "bom_crlf.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\r\n").encode() * 2)
    assert cli.main(["data", "inspect", str(bom), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["loaded"] == 2 and rep["format"] == "alpaca" and not rep["skipped"]

    from g2is_core.data.loaders import load_records

    recs = load_records(bom).records
    assert recs[0].prompt == "Say hi" and "\r" not in recs[0].response   # CRLF is not part of the text

    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"instruction": "x" * 1_000_000, "output": "y"}) + "\n")
    rec = load_records(big).records[0]
    assert len(rec.prompt) == 1_000_000                                  # kept whole; truncation is at encoding

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes((json.dumps(GOOD) + "\n{oops\n" + json.dumps(GOOD).replace("hi", "yo") + "\n"
                       + '{"instruction": "a\xff"}\n').encode("latin-1"))
    assert cli.main(["data", "inspect", str(mixed), "--lenient", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["loaded"] == 2 and [s["line"] for s in rep["skipped"]] == [2, 4]


def test_huge_record_is_truncated_at_encoding_not_refused():
    from g2is_core.data.encoding import encode_all
    from g2is_core.models.loading import tiny_tokenizer
    from g2is_core.data.records import simple

    rec = simple("big", "x" * 1_000_000, "yes", source="s", task="t")
    enc, rep = encode_all(tiny_tokenizer(), [rec], max_length=64)
    assert enc[0].length <= 64 and rep.n_cut == 1 and rep.cut_prompt_tokens > 900_000


# ============================================================================ features, ratios, k, budgets
@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("feats")
    rng = np.random.default_rng(0)
    arrays = {
        "train": rng.normal(size=(20, 8)).astype(np.float32),
        "target": rng.normal(size=(3, 8)).astype(np.float32),
        "target_one": rng.normal(size=(1, 8)).astype(np.float32),
        "target_d16": rng.normal(size=(3, 16)).astype(np.float32),
        "ints": np.arange(40).reshape(20, 2),
        "vector": np.ones(8, np.float32),
        "empty": np.zeros((0, 8), np.float32),
    }
    for bad, value in (("nan_row", np.nan), ("inf_row", np.inf), ("zero_row", 0.0)):
        a = arrays["train"].copy()
        a[3] = value
        arrays[bad] = a
    out = {k: d / f"{k}.npy" for k in arrays}
    for k, a in arrays.items():
        np.save(out[k], a)
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out["pickled"] = d / "pickled.npy"
    (d / "not_npy.npy").write_bytes(b"\x93NUMPY garbage")
    out["not_npy"] = d / "not_npy.npy"
    out["out"] = d / "walk-out"
    return out


WALK_CASES = {  # (train, target, extra args) -> message
    "ratio_0": ("train", "target", ["--ratio", "0"], r"--ratio: 0.0 is not a fraction in \(0, 1\]"),
    "ratio_above_1": ("train", "target", ["--ratio", "1.5"], r"--ratio: 1.5 is not a fraction in \(0, 1\]"),
    "ratio_nan": ("train", "target", ["--ratio", "nan"], r"--ratio: nan is not a fraction in \(0, 1\]"),
    "ratio_negative": ("train", "target", ["--ratio", "-0.1"], r"--ratio: -0.1 is not a fraction in \(0, 1\]"),
    "budget_rounds_to_0": ("train", "target", ["--ratio", "0.01", "--k", "5"], r"budget is 0 rows"),
    "count_above_n": ("train", "target", ["--count", "21", "--k", "5"], r"budget is 21 rows but must be between 1 and N=20"),
    "k_above_n": ("train", "target", ["--ratio", "0.5", "--k", "50"], r"--k 50 must be between 1 and N-1 = 19"),
    "k_zero": ("train", "target", ["--ratio", "0.5", "--k", "0"], r"--k 0 must be between 1"),
    "dims_mismatch": ("train", "target_d16", ["--ratio", "0.5", "--k", "5"], r"d=8 but target features have d=16"),
    "nan_rows": ("nan_row", "target", ["--ratio", "0.5", "--k", "5"], r"1 row\(s\) contain NaN or inf \(first: \[3\]\)"),
    "inf_rows": ("inf_row", "target", ["--ratio", "0.5", "--k", "5"], r"contain NaN or inf"),
    "zero_norm_rows": ("zero_row", "target", ["--ratio", "0.5", "--k", "5"], r"all zeros \(first: \[3\]\)"),
    "one_target_example_centred": ("train", "target_one", ["--ratio", "0.5", "--k", "5"],
                                   r"single target example.*--uncentred.*--add-mean"),
    "integer_features": ("ints", "target", ["--ratio", "0.5", "--k", "5"], r"must hold floats"),
    "1d_features": ("vector", "target", ["--ratio", "0.5"], r"non-empty 2-D array"),
    "empty_features": ("empty", "target", ["--ratio", "0.5"], r"non-empty 2-D array"),
    "pickled_npy": ("pickled", "target", ["--ratio", "0.5"], r"not a readable \.npy array"),
    "corrupt_npy": ("not_npy", "target", ["--ratio", "0.5"], r"not a readable \.npy array"),
    "missing_file": ("absent", "target", ["--ratio", "0.5"], r"--train-features .*: no such file"),
}


@pytest.mark.parametrize("case", list(WALK_CASES))
def test_walk_bad_input_is_one_line_and_exit_2(capsys, feats, case):
    train, target, extra, expect = WALK_CASES[case]
    tr = feats.get(train, feats["train"].parent / f"{train}.npy")
    assert_one_line(capsys, ["walk", "--train-features", tr, "--target-features", feats[target], "--out",
                             feats["out"] / case, *extra], expect)
    assert not (feats["out"] / case / "sidecar.json").exists()


def test_one_target_example_works_uncentred(capsys, feats, tmp_path):
    """A target with one example has no centred variance; the documented way out runs."""
    assert cli.main(["walk", "--train-features", str(feats["train"]), "--target-features", str(feats["target_one"]),
                     "--ratio", "0.25", "--k", "5", "--uncentred", "--out", str(tmp_path / "w")]) == 0
    ids = json.loads((tmp_path / "w" / "selected_ids.json").read_text())
    assert 1 <= len(ids) <= 5 and len(set(ids)) == len(ids)


SELECT_CASES = {
    "ratio_0": (["--ratio", "0"], r"--ratio: 0.0 is not a fraction in \(0, 1\]"),
    "ratio_above_1": (["--ratio", "1.5"], r"--ratio: 1.5 is not a fraction in \(0, 1\]"),
    "ratio_nan": (["--ratio", "nan"], r"--ratio: nan is not a fraction in \(0, 1\]"),
    "no_budget": ([], r"give --ratio .* or --count"),
    "count_0": (["--count", "0"], r"--count: 0 is not a positive whole number"),
    "count_above_n": (["--count", "100000"], r"larger than the pool \(1440 records\)"),
    "unknown_option": (["--ratio", "0.1", "--option", "evil=1"], r"give key=value with a key of method"),
    "gradient_method_without_stores": (["--ratio", "0.1", "--method", "less"], r"store|features"),
}


@pytest.mark.parametrize("case", list(SELECT_CASES))
def test_select_bad_input_is_one_line_and_exit_2(capsys, workspace, case):
    extra, expect = SELECT_CASES[case]
    method = [] if "--method" in extra else ["--method", "random"]
    assert_one_line(capsys, ["select", *method, "--pool", "builtin:pool", "--targets", "builtin:targets:add_reverse",
                             *extra], expect)


def test_select_on_empty_or_unknown_data(capsys, workspace, bad_files):
    assert_one_line(capsys, ["select", "--method", "random", "--pool", bad_files["zero_records_empty_file"],
                             "--targets", "builtin:targets:add_reverse", "--ratio", "0.1"], r"the file is empty")
    assert_one_line(capsys, ["select", "--method", "random", "--pool", "builtin:nope", "--targets",
                             "builtin:targets:add_reverse", "--ratio", "0.1"], r"unknown built-in data")
    assert_one_line(capsys, ["select", "--method", "random", "--pool", "builtin:pool", "--targets",
                             "builtin:targets:<script>", "--ratio", "0.1"], r"no such target")


def _store(directory: Path, ids: list[str], model_key: str, kind: str, dim: int = 8, seed: int = 0):
    from g2is_core.features.store import write_store

    cfg = {"model_key": model_key, "lora": {"r": 4}, "projector": {"family": "rademacher", "seed": 0, "dim": dim},
           "checkpoint": {"warmup": "w", "epoch": 1, "step": 3, "weight": 1.0}, "kind": kind}
    rng = np.random.default_rng(seed)
    return write_store(directory, cfg, ids, dim, lambda r: rng.normal(size=(len(r), dim)).astype(np.float32),
                       inputs={"data_hash": "h"}, dtype="fp32", shard_rows=512)


def test_store_from_another_model_is_refused(capsys, workspace, tmp_path):
    from g2is_core.data.spec import DataSpec

    pool = [r.id for r in DataSpec.parse("builtin:pool").load().records]
    target = [r.id for r in DataSpec.parse("builtin:targets:add_reverse").load().records]
    a = _store(tmp_path / "pool", pool, "model-A", "adam")
    b = _store(tmp_path / "target-other-model", target, "model-B", "sgd")
    base = ["--pool", "builtin:pool", "--targets", "builtin:targets:add_reverse", "--ratio", "0.05",
            "--train-store", a.dir, "--target-store", b.dir]
    assert_one_line(capsys, ["select", "--method", "less", *base], r"not comparable.*model_key")
    assert_one_line(capsys, ["graph", "build", "--train-store", a.dir, "--target-store", b.dir, "--layout", "none",
                             "--k", "4"], r"not comparable.*model_key")
    # a store of other data (its ids are not the pool's) is refused too
    c = _store(tmp_path / "target-as-pool", target, "model-A", "adam")
    assert_one_line(capsys, ["select", "--method", "less", "--pool", "builtin:pool", "--targets",
                             "builtin:targets:add_reverse", "--ratio", "0.05", "--train-store", c.dir,
                             "--target-store", b.dir], r"store|ids|rows|records")
    # a store directory that is not a store, and an unfinished one
    assert_one_line(capsys, ["select", "--method", "less", *base[:6], "--train-store", tmp_path,
                             "--target-store", b.dir], r"not a gradient store|no gradient store")


# ============================================================================ models
def test_models_unsupported_gguf_and_corrupt_safetensors(capsys, workspace, tmp_path, unsupported_gguf):
    from g2is_core.models.loading import tiny_llama

    assert_one_line(capsys, ["model", "info", unsupported_gguf], r"cannot load this GGUF")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    assert_one_line(capsys, ["model", "info", tmp_path / "junk.gguf"], r"GGUF|model")

    m, tok = tiny_llama()
    m.save_pretrained(tmp_path / "c")
    tok.save_pretrained(tmp_path / "c")
    st = tmp_path / "c" / "model.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + st.read_bytes()[100:200])
    assert_one_line(capsys, ["model", "info", tmp_path / "c"], r"corrupt")
    assert_one_line(capsys, ["model", "info", tmp_path / "nope"], r"no such model")
    assert_one_line(capsys, ["model", "info", tmp_path], r"not a Hugging Face model directory")


# ============================================================================ the OS says no; a bug
def test_os_errors_and_bugs_are_one_line(capsys, feats, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line(capsys, ["walk", "--train-features", feats["train"], "--target-features", feats["target"],
                             "--ratio", "0.5", "--k", "5", "--out", blocker / "sub"], r"error: .*a-file")

    from g2is_core.cli import base as cli_base

    def boom(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli_base, "_tasks", boom)
    line = assert_one_line(capsys, ["tasks"], r"internal error: RuntimeError: something unexpected", rc=1)
    assert "G2IS_DEBUG" in line
    monkeypatch.setenv("G2IS_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["tasks"])


def test_bench_spec_errors_are_one_line(capsys, workspace, tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nmodel: tiny\n  oops: [\n")
    assert_one_line(capsys, ["bench", "run", bad], r"spec|YAML|yaml")
    bad.write_text("name: x\nmodel: tiny\nmethods: [pickle]\n")
    assert_one_line(capsys, ["bench", "run", bad], r"method|targets|field")
    assert_one_line(capsys, ["bench", "run", tmp_path / "absent.yaml"], r"absent\.yaml")


# ============================================================================ disk-full leaves the old file
def test_disk_full_write_keeps_previous_artefact(tmp_path, monkeypatch):
    """ENOSPC in the middle of an atomic write: the previous file is intact, no temp file is left."""
    import errno

    from g2is_core import workspace as ws

    target = tmp_path / "a.json"
    ws.write_json(target, {"v": 1})
    before = target.read_bytes()
    real_fsync = ws.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ws.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        ws.write_json(target, {"v": 2, "pad": "x" * 100_000})
    monkeypatch.setattr(ws.os, "fsync", real_fsync)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# ============================================================================ the app: paths, uploads, network
def test_typed_paths_are_confined(tmp_path, monkeypatch):
    from g2is_core.app.kit import resolve_data_path

    ws = Workspace(tmp_path / "ws")
    monkeypatch.setenv("G2IS_SHARED_DATA", str(tmp_path / "no-shared"))
    (ws.root / "ok.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "secret.txt").write_text("secret")
    (ws.root / "link").symlink_to(tmp_path / "secret.txt")
    (ws.root / "dirlink").symlink_to(tmp_path)
    assert resolve_data_path("ok.jsonl", ws) == ws.root / "ok.jsonl"
    for attempt in ["../secret.txt", str(tmp_path / "secret.txt"), "link", "dirlink/secret.txt", "/etc/passwd",
                    "~/.ssh/id_rsa", "ok.jsonl/../../secret.txt", "file:///etc/passwd", "\x00"]:
        with pytest.raises(ValueError):
            resolve_data_path(attempt, ws)


def test_upload_names_cannot_escape_or_inject(tmp_path):
    from g2is_core.app.kit import sanitize_filename, save_upload

    ws = Workspace(tmp_path / "ws")
    for name in ["../../etc/passwd", "..\\..\\win.ini", "<script>alert(1)</script>.jsonl", ".hidden", "",
                 "a" * 500 + ".jsonl", "x\x00y.jsonl", 'javascript:alert(1)//".json']:
        safe = sanitize_filename(name)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", safe) and len(safe) <= 120, safe
        p = save_upload(name, b"data", ws)
        assert p.parent == ws.root / "uploads"


def test_upload_size_is_limited_and_app_is_local():
    import tomllib

    cfg = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert 0 < cfg["server"]["maxUploadSize"] <= 200          # MB; Streamlit refuses bigger uploads
    assert cfg["client"]["showErrorDetails"] == "none"         # no tracebacks in the browser


def test_exposing_the_app_needs_a_flag_and_warns(capsys, monkeypatch):
    from g2is_core.cli import app as cli_app

    calls = []
    monkeypatch.setattr(cli_app.os, "execv", lambda exe, argv: calls.append(argv))
    monkeypatch.setattr(cli_app.os, "chdir", lambda d: None)
    assert cli.main(["app", "--port", "8600"]) == 0
    argv = calls[-1]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert "WARNING" not in capsys.readouterr().err
    assert cli.main(["app", "--host", "0.0.0.0"]) == 0
    assert calls[-1][calls[-1].index("--server.address") + 1] == "0.0.0.0"
    assert "WARNING: listening on 0.0.0.0" in capsys.readouterr().err
    assert_one_line(capsys, ["app", "--port", "70000"], r"port 70000 is not between 1 and 65535")


# ============================================================================ the code itself
def _sources() -> list[Path]:
    files = sorted((PROJECT_ROOT / "g2is_core").rglob("*.py")) + [PROJECT_ROOT / "app.py"]
    return files + sorted((PROJECT_ROOT / "pages").glob("*.py"))


# Every call that hands HTML to the browser, reviewed by hand (file -> why it is safe). A new one
# fails this test until it is reviewed and listed here.
HTML_SINKS_REVIEWED = {
    "pages/graph.py": "components.html(netview.network_html(...)): labels/titles escaped in network_html; "
                      "record text reaches the page via textContent only",
    "pages/walk.py": "components.html(netview.network_html(...)): same as the graph page",
}


def test_no_pickle_unsafe_torch_load_or_unreviewed_html():
    problems = []
    for f in _sources():
        src = f.read_text(encoding="utf-8")
        rel = str(f.relative_to(PROJECT_ROOT))
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal")
                       for n in names):
                    problems.append(f"{rel}:{node.lineno}: imports a pickle-style module")
            if not isinstance(node, ast.Call):
                continue
            fn = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if fn.endswith("torch.load"):
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    problems.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
            if fn.endswith("np.load") or fn.endswith("numpy.load"):
                v = kw.get("allow_pickle")
                if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{rel}:{node.lineno}: np.load with allow_pickle")
            if fn.endswith("read_pickle") or fn.endswith("to_pickle"):
                problems.append(f"{rel}:{node.lineno}: pandas pickle")
            v = kw.get("unsafe_allow_html")
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                problems.append(f"{rel}:{node.lineno}: unsafe_allow_html (render text, or escape and list it here)")
            if fn.endswith("components.html") or fn.endswith("st.html") or fn.endswith("components.iframe"):
                if rel not in HTML_SINKS_REVIEWED:
                    problems.append(f"{rel}:{node.lineno}: {fn} is not in HTML_SINKS_REVIEWED")
            if fn in ("eval", "exec"):
                problems.append(f"{rel}:{node.lineno}: {fn}")
            if fn.endswith("yaml.load") and not ("Loader" in kw and "Safe" in ast.unparse(kw["Loader"])):
                problems.append(f"{rel}:{node.lineno}: yaml.load without SafeLoader (use yaml.safe_load)")
            if fn.endswith("from_pretrained") and "trust_remote_code" in kw:
                v = kw["trust_remote_code"]
                if not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{rel}:{node.lineno}: trust_remote_code")
        if re.search(r"\bpickle\b", src) and "import pickle" in src:
            problems.append(f"{rel}: mentions pickle")
    assert not problems, "\n".join(problems)


def test_weights_are_safetensors():
    """Models and checkpoints are written as safetensors (torch.save would pickle)."""
    for f in _sources():
        src = f.read_text(encoding="utf-8")
        assert "torch.save(" not in src, f"{f}: torch.save pickles; use safetensors"
        assert "safe_serialization=False" not in src, f"{f}: save_pretrained must write safetensors"


def test_md_text_makes_names_inert_in_markdown():
    from g2is_core.app.kit import md_text

    s = md_text('job <script>x</script> [a](javascript:b) **c**\nnext')
    assert "<script>" not in s and "](" not in s and "\n" not in s
    assert s.replace("\\", "") == "job <script>x</script> [a](javascript:b) **c** next"
