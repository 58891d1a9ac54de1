"""Bounded input (issue 18 items 3 and 7): the loader's caps on decompressed bytes, line length and
records (lowered through their environment variables so the bombs stay small), regular files only,
the app's upload and path views, and the Runs page's typed paths confined like the Data page's.

bench/bench_input_bounds.py measures the peak memory of the real bombs (1 GiB line, /dev/zero)."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import socket

import pytest

from g2is_core import cli
from g2is_core.app import forms
from g2is_core.app import kit as appkit
from g2is_core.data.limits import InputLimitError, InputLimits, input_limits, parse_size
from g2is_core.data.loaders import load_records, read_text_file
from g2is_core.data.records import DataError

REC = b'{"prompt": "say hi", "completion": "hi"}\n'
MiB = 1 << 20


@pytest.fixture
def caps(monkeypatch):
    """The caps lowered to 1 MiB bytes, 64 KiB lines, 100 000 records."""
    monkeypatch.setenv("G2IS_MAX_DATA_BYTES", "1M")
    monkeypatch.setenv("G2IS_MAX_LINE_BYTES", "64K")
    monkeypatch.setenv("G2IS_MAX_RECORDS", "100000")
    return input_limits()


@contextlib.contextmanager
def deadline(seconds: int = 10):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    def boom(*_):
        raise TimeoutError(f"still reading after {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ============================================================================ the caps and their variables
def test_defaults_live_in_one_place_and_env_overrides(monkeypatch):
    for var in ("G2IS_MAX_DATA_BYTES", "G2IS_MAX_LINE_BYTES", "G2IS_MAX_RECORDS", "G2IS_MAX_LOAD_MEMORY"):
        monkeypatch.delenv(var, raising=False)
    assert input_limits() == InputLimits()
    monkeypatch.delenv("G2IS_MAX_LOAD_MEMORY", raising=False)
    monkeypatch.setenv("G2IS_MAX_DATA_BYTES", "2G")
    monkeypatch.setenv("G2IS_MAX_RECORDS", "12")
    assert input_limits() == InputLimits(max_bytes=2 << 30, max_records=12)
    assert parse_size("64 MiB", "X") == 64 * MiB and parse_size("1000", "X") == 1000
    for bad in ("0", "-1", "1.5G", "lots", ""):
        with pytest.raises(ValueError, match="X=.* is not a positive size"):
            parse_size(bad, "X")
    monkeypatch.setenv("G2IS_MAX_RECORDS", "many")
    with pytest.raises(ValueError, match="G2IS_MAX_RECORDS='many'"):
        input_limits()


def test_one_endless_line_in_a_gzip_is_refused_naming_file_line_and_limit(tmp_path, caps):
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(REC)
        f.write(b"a" * (3 * MiB))      # line 2: 3 MiB, no newline (inflates from ~3 KB)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(InputLimitError) as e:
        load_records(bomb)
    msg = str(e.value)
    assert e.value.limit == "max_line_bytes" and e.value.line == 2
    assert msg.startswith(f"{bomb}, line 2: the line is longer than 64 KiB")
    assert "G2IS_MAX_LINE_BYTES" in msg and "G2IS_MAX_LINE_BYTES=128K" in msg   # what to do
    # Lenient skips the line, but reading past it still counts: the 1 MiB byte cap stops the load.
    with pytest.raises(InputLimitError, match=r"bomb.jsonl.gz, line 2: the data passes 1 MiB .*G2IS_MAX_DATA_BYTES"):
        load_records(bomb, lenient=True)


def test_a_long_line_is_skipped_in_lenient_mode_and_the_rest_loads(tmp_path, caps):
    f = tmp_path / "d.jsonl"
    f.write_bytes(REC + b'{"prompt": "' + b"x" * 100_000 + b'", "completion": "y"}\n' + REC)
    with pytest.raises(InputLimitError, match=r"d.jsonl, line 2: the line is longer than 64 KiB"):
        load_records(f)
    res = load_records(f, lenient=True)
    assert len(res) == 2 and [ln for ln, _ in res.report.skipped] == [2]


def test_multi_line_bomb_stops_at_the_byte_cap(tmp_path, caps):
    bomb = tmp_path / "many.jsonl.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(REC * 100_000)          # 4 MiB of valid records from ~20 KB
    with pytest.raises(InputLimitError) as e:
        load_records(bomb)
    cut = MiB // len(REC) + 1          # the line during which the count passes 1 MiB
    assert e.value.limit == "max_bytes" and e.value.line == cut
    assert str(e.value).startswith(f"{bomb}, line {cut}: the data passes 1 MiB (decompressed)")
    assert "G2IS_MAX_DATA_BYTES=2M" in str(e.value)


def test_the_byte_cap_counts_the_files_of_a_folder_together(tmp_path, caps):
    d = tmp_path / "pool"
    d.mkdir()
    n = 600_000 // len(REC)
    for name in ("a.jsonl", "b.jsonl"):
        (d / name).write_bytes(REC * n)
    assert len(load_records(d / "a.jsonl")) == n      # each alone is under the cap
    with pytest.raises(InputLimitError, match=r"b.jsonl, line \d+: the data passes 1 MiB"):
        load_records(d)


def test_the_record_cap_counts_lines_read(tmp_path, caps, monkeypatch):
    monkeypatch.setenv("G2IS_MAX_RECORDS", "1000")
    f = tmp_path / "r.jsonl"
    f.write_bytes(REC * 1500)
    with pytest.raises(InputLimitError, match=r"r.jsonl, line 1001: the load passes 1,000 records .*G2IS_MAX_RECORDS=2000"):
        load_records(f)
    with pytest.raises(InputLimitError, match="line 1001: the load passes 1,000 records"):
        load_records(tmp_path / "r.jsonl", lenient=True)     # skipped lines would count too
    assert len(load_records(f, limit=10)) == 10               # a limit below the cap stops before it


def test_memory_growth_cap_stops_records_of_many_tiny_values(tmp_path, monkeypatch):
    """A record of many one-character messages costs ~20x its bytes: the byte caps let it through,
    the memory cap stops it, naming the file, the line and G2IS_MAX_LOAD_MEMORY."""
    msgs = [{"role": r, "content": "a"} for _ in range(500) for r in ("user", "assistant")]
    line = json.dumps({"messages": msgs}).encode() + b"\n"
    f = tmp_path / "chat.jsonl"
    f.write_bytes(line * 3000)                      # ~90 MB of Python objects from ~30 MB... in 3000 lines
    monkeypatch.setenv("G2IS_MAX_LOAD_MEMORY", "16M")
    with pytest.raises(InputLimitError) as e:
        load_records(f)
    assert e.value.limit == "max_memory" and e.value.line is not None and e.value.line < 3000
    assert str(e.value).startswith(f"{f}, line {e.value.line}: loading has grown this process's memory by more "
                                   "than 16 MiB (G2IS_MAX_LOAD_MEMORY")


def test_whole_file_json_is_capped_before_parsing(tmp_path, caps):
    # One element holding 100 000 empty objects: ~21 bytes of Python per input byte if parsed.
    f = tmp_path / "one.json"
    f.write_text("[[" + "{}," * 100_000 + "{}]]")
    with pytest.raises(InputLimitError) as e:
        load_records(f)
    assert e.value.limit == "max_line_bytes"
    assert str(e.value).startswith(f"{f}, line 1: the file is larger than 64 KiB, the most the loader parses at once")
    assert "JSON Lines" in str(e.value) and "G2IS_MAX_LINE_BYTES" in str(e.value)
    small = tmp_path / "small.json"
    small.write_text(json.dumps([{"instruction": "a", "output": "b"}] * 10))
    assert len(load_records(small)) == 10


def test_plain_text_corpora_are_capped(tmp_path, caps):
    f = tmp_path / "book.txt"
    f.write_bytes(b"para\n\n" * (MiB // 6 + 10))
    with pytest.raises(InputLimitError, match=r"book.txt, line \d+: the file passes 1 MiB .*G2IS_MAX_DATA_BYTES"):
        read_text_file(f)
    (tmp_path / "ok.txt").write_bytes(b"caf\xc3\xa9 \xff")
    assert read_text_file(tmp_path / "ok.txt", errors="replace") == "café \ufffd"


# ============================================================================ regular files only
def test_fifo_dev_zero_socket_and_folder_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.jsonl"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        with deadline(10):
            for path, kind in ((fifo, "a named pipe"), ("/dev/zero", "a character device"), (sock_path, "a socket")):
                with pytest.raises(DataError) as e:
                    load_records(path)
                assert str(e.value) == (f"{path}: is {kind} (FIFO), not a regular file" if kind == "a named pipe"
                                        else f"{path}: is {kind}, not a regular file") + (
                    "; only regular files are read as data (a pipe or a device may never end). Save the data to a "
                    "file and load that")
            with pytest.raises(DataError, match="is a folder where a data file is expected"):
                read_text_file(tmp_path)
            # In a folder, a FIFO named like data is refused by name (strict) or listed (lenient); never read.
            d = tmp_path / "d"
            d.mkdir()
            (d / "good.jsonl").write_bytes(REC)
            os.mkfifo(d / "z.jsonl")
            with pytest.raises(DataError, match=r"z.jsonl: is a named pipe"):
                load_records(d)
            res = load_records(d, lenient=True)
            assert len(res) == 1 and [os.path.basename(f) for f, _ in res.report.skipped_files] == ["z.jsonl"]
    finally:
        sock.close()


def test_cli_exit_2_with_one_sentence_for_dev_zero_fifo_and_a_bomb(tmp_path, capsys, caps):
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    bomb = tmp_path / "b.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"x" * (2 * MiB)))
    for path, expect in (("/dev/zero", "is a character device, not a regular file"),
                         (fifo, "is a named pipe"), (bomb, "line 1: the line is longer than 64 KiB")):
        with deadline(20):
            rc = cli.main(["data", "inspect", str(path)])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"g2is data: error: {path}") and expect in lines[0], lines[0]


# ============================================================================ the app: uploads, paths, the Runs page
def test_upload_is_saved_from_the_file_object_in_chunks(workspace):
    import io

    class Reads(io.BytesIO):
        sizes: list[int] = []

        def read(self, n=-1):
            self.sizes.append(n)
            return super().read(n)

    data = b"x" * (3 * MiB + 5)
    up = Reads(data)
    up.read(10)                                  # a file object part-read already is copied whole
    p = appkit.save_upload("u.jsonl", up, workspace, chunk=MiB)
    assert p.read_bytes() == data and all(0 < n <= MiB for n in Reads.sizes[1:])
    assert appkit.save_upload("u.jsonl", data, workspace) == p                  # same content: reused
    assert [q.name for q in p.parent.iterdir()] == ["u.jsonl"]                  # no temp file left


def test_streamlit_upload_cap_is_under_the_loader_byte_cap():
    import tomllib

    from g2is_core.workspace import PROJECT_ROOT

    cfg = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert 0 < cfg["server"]["maxUploadSize"] * 10**6 <= InputLimits().max_bytes


def _outside(workspace, monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("G2IS_SHARED_DATA", str(shared))
    monkeypatch.delenv("G2IS_ALLOWED_PATHS", raising=False)
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("prompt,response\nhidden,header\n")
    return secret


def test_runs_page_refuses_paths_outside_with_the_data_pages_sentence(workspace, monkeypatch, tmp_path):
    secret = _outside(workspace, monkeypatch, tmp_path)
    with pytest.raises(ValueError) as data_page:
        appkit.resolve_data_spec(str(secret), workspace)
    sentence = str(data_page.value)
    assert sentence == appkit.outside_sentence(str(secret), appkit.allowed_roots(workspace))
    assert "G2IS_ALLOWED_PATHS" in sentence and str(workspace.root) in sentence
    ts = {t.key: t for t in forms.job_templates()}
    cases = [("warmup", {"data": str(secret)}), ("grads", {"data": str(secret), "warmup": "w"}),
             ("bench", {"spec": str(secret)}), ("bench-features", {"spec": str(secret)}),
             ("bench-plan", {"spec": str(secret)}),
             ("model-fetch", {"wheel": str(secret)}), ("head-study", {"model": str(secret)}),
             ("impact-study", {"corpora": f"x={secret}"})]
    for key, typed in cases:
        t = ts[key]
        values = {**{f.name: f.default for f in t.fields}, **typed}
        with pytest.raises(ValueError) as runs_page:
            t.argv(values, workspace)
        assert str(runs_page.value) == sentence, key
        with pytest.raises(ValueError, match="outside the folders the app may read"):
            t.confined(workspace).build(values)                 # what the page's form calls
    # The same through a relative escape and a symlink inside the workspace.
    (workspace.root / "link.csv").symlink_to(secret)
    for typed in ("../elsewhere/secret.csv", "link.csv"):
        with pytest.raises(ValueError, match=re.escape(f"{typed} is outside the folders the app may read")):
            ts["bench"].argv({"spec": typed, "methods": ""}, workspace)


def test_runs_page_accepts_allowed_paths_and_makes_them_absolute(workspace, monkeypatch, tmp_path):
    secret = _outside(workspace, monkeypatch, tmp_path)
    ts = {t.key: t for t in forms.job_templates()}
    defaults = {f.name: f.default for f in ts["warmup"].fields}
    assert ts["warmup"].argv(defaults, workspace) == ts["warmup"].build(defaults)   # builtin:pool, default model
    bench = {f.name: f.default for f in ts["bench"].fields}
    assert ts["bench"].argv(bench, workspace)[2] == bench["spec"]                   # the shipped spec is readable
    (workspace.root / "uploads").mkdir()
    (workspace.root / "uploads" / "d.jsonl").write_bytes(REC)
    argv = ts["warmup"].argv({**defaults, "data": "uploads/d.jsonl?fmt=prompt_completion"}, workspace)
    assert argv[argv.index("--data") + 1] == f"{workspace.root / 'uploads' / 'd.jsonl'}?fmt=prompt_completion"
    monkeypatch.setenv("G2IS_ALLOWED_PATHS", str(secret.parent))                   # the user's allow-list
    assert ts["bench"].argv({"spec": str(secret), "methods": ""}, workspace)[2] == str(secret)
    assert appkit.resolve_data_path(str(secret), workspace) == secret


def test_every_path_field_of_every_form_is_confined():
    for t in forms.job_templates():
        for f in t.fields:
            if f.kind == "path" or f.name in ("model", "data", "spec", "corpora", "wheel"):
                assert f.confine in forms.CONFINE, (t.key, f.name)


def test_bounded_parse_of_an_uploaded_bomb_keeps_no_decompressed_copy(workspace, caps):
    """The upload path: save_upload, then the loader through the data spec the page builds; a bomb is
    refused at the cap, and the upload folder holds only the compressed file."""
    from g2is_core.data.spec import DataSpec

    bomb = gzip.compress(REC * 100_000)
    p = appkit.save_upload("bomb.jsonl.gz", bomb, workspace)
    assert p.stat().st_size == len(bomb)
    with pytest.raises(InputLimitError, match="bomb.jsonl.gz, line .*: the data passes 1 MiB"):
        DataSpec(kind="file", name=str(p)).load()
    assert sorted(q.name for q in p.parent.iterdir()) == ["bomb.jsonl.gz"]

