"""Peak memory of `g2is data inspect` and of the app's upload parse on hostile inputs, beside the bound.

Usage:  python bench/bench_input_bounds.py [--dir /tmp/g2is-bombs] [--bound-mb 1000] [--only NAME ...]

Builds each input once under --dir (kept for reruns), then runs every case in its own subprocess and
reads that child's peak RSS from os.wait4 (the kernel's ru_maxrss, so the number covers the whole
process: interpreter, imports, parse). Cases (at the default caps of g2is_core/data/limits.py):

- line_bomb:   a ~1 MB .gz that inflates to ONE 1 GiB line                       (the issue's 3.3 GB case)
- multi_bomb:  a few-MB .gz of gzip members that inflate to 4 GiB of valid records (the issue's > 4 GB case)
- fat_records: records of ~540 bytes with one emoji (strings stored 4 bytes per character), as many as
               fit under BOTH the byte and the record cap: the worst case for the records kept in memory
- json_one:    a JSON file just under the line cap holding one element of empty objects (~21 bytes of
               Python objects per input byte: the worst parse of a piece the caps let through)
- json_bomb:   a .json.gz that inflates past the line cap (refused before parsing)
- junk_lenient: 4 GiB (gzip members) of non-JSON lines loaded with --lenient (every line a skipped entry)
- tiny_values: records of 4000 one-character chat messages each, up to the byte cap (the memory cap's case)
- dev_zero:    /dev/zero as data                                                  (the issue's 3.2 GB in 9 s)
- fifo:        a named pipe with no writer (must not hang)
- app_upload:  the line bomb through the app's path: app.kit.save_upload from a file object, then the
               data spec the Data page builds (DataSpec(...).load()), in one process

Prints the CPU model and load average first; docs/reliability.md ("Limits") has the figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
MiB, GiB = 1 << 20, 1 << 30



def _members(path: Path, block: bytes, total: int) -> Path:
    """A multi-member gzip: ``block`` compressed once, written total/len(block) times (fast to build;
    Python's gzip reads every member)."""
    if not path.exists():
        member = gzip.compress(block, compresslevel=9, mtime=0)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(total // len(block)):
                f.write(member)
        tmp.replace(path)
    return path


def build(d: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (input path, extra CLI args)."""
    from g2is_core.data.limits import InputLimits

    lim = InputLimits()
    d.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, list[str]]] = {}
    # one 1 GiB line, as one deflate stream (~1 MB: deflate's ratio tops out near 1032:1)
    line = d / "line_bomb.jsonl.gz"
    if not line.exists():
        with gzip.GzipFile(line.with_suffix(".tmp"), "wb", compresslevel=9, mtime=0) as f:
            chunk = b"a" * (16 * MiB)
            for _ in range(GiB // len(chunk)):
                f.write(chunk)
        line.with_suffix(".tmp").replace(line)
    cases["line_bomb"] = (line, [])
    rec = b'{"prompt": "say hi", "completion": "hi"}\n'
    cases["multi_bomb"] = (_members(d / "multi_bomb.jsonl.gz", rec * (4 * MiB // len(rec)), 4 * GiB), [])
    # fat records: byte cap / record cap bytes each, one emoji so every prompt is stored as UCS-4
    size = lim.max_bytes // lim.max_records
    body = "\U0001F600" + "x" * max(1, size - 40)
    fat = json.dumps({"prompt": body, "completion": "y"}, ensure_ascii=False).encode() + b"\n"
    cases["fat_records"] = (_members(d / "fat_records.jsonl.gz", fat * 4096, lim.max_bytes), [])
    one = d / "json_one.json"
    if not one.exists():
        n = (lim.max_line_bytes - 16) // 3
        one.write_bytes(b"[[" + b"{}," * (n - 1) + b"{}]]")
    cases["json_one"] = (one, [])
    elem = json.dumps({"instruction": "a" * 200, "output": "b"}).encode() + b","
    jb = d / "json_bomb.json.gz"
    if not jb.exists():
        with open(jb, "wb") as f:
            f.write(gzip.compress(b"[", mtime=0))
            member = gzip.compress(elem * (MiB // len(elem)), compresslevel=9, mtime=0)
            for _ in range(1024):
                f.write(member)
    cases["json_bomb"] = (jb, [])
    cases["junk_lenient"] = (_members(d / "junk.jsonl.gz", b"not json\n" * (MiB // 9), 4 * GiB),
                             ["--lenient", "--format", "prompt_completion"])
    # many one-character chat messages per record: ~20x their bytes in Python objects
    msgs = [{"role": r, "content": "a"} for _ in range(2000) for r in ("user", "assistant")]
    tiny = json.dumps({"messages": msgs}).encode() + b"\n"
    cases["tiny_values"] = (_members(d / "tiny_values.jsonl.gz", tiny * 32, lim.max_bytes), [])
    cases["dev_zero"] = (Path("/dev/zero"), [])
    fifo = d / "fifo.jsonl"
    if not fifo.exists():
        os.mkfifo(fifo)
    cases["fifo"] = (fifo, [])
    cases["app_upload"] = (line, ["<app>"])
    return cases


APP_SNIPPET = """
import sys
from g2is_core.app.kit import save_upload
from g2is_core.data.records import DataError
from g2is_core.data.spec import DataSpec
from g2is_core.workspace import Workspace
ws = Workspace(sys.argv[2])
with open(sys.argv[1], 'rb') as up:   # a file object, as Streamlit's UploadedFile
    path = save_upload('upload.jsonl.gz', up, ws)
try:
    DataSpec(kind='file', name=str(path)).load()
except DataError as exc:
    print(f'app: error: {exc}', file=sys.stderr)
    sys.exit(2)
"""


def run_case(path: Path, extra: list[str], work: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "G2IS_THREADS": "1"}
    if extra == ["<app>"]:
        cmd = [sys.executable, "-c", APP_SNIPPET, str(path), str(work / "app-ws")]
    else:
        cmd = [sys.executable, "-m", "g2is_core.cli", "data", "inspect", str(path), *extra]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=str(PROJECT))
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, usage = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    err = p.stderr.read().decode("utf-8", "replace").strip().splitlines()
    return {"rc": os.waitstatus_to_exitcode(status), "peak_mb": usage.ru_maxrss / 1024, "s": time.monotonic() - t0,
            "message": err[-1] if err else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/g2is-bombs", help="where the inputs are built (kept for reruns)")
    ap.add_argument("--bound-mb", type=float, default=1000.0, help="the documented bound on peak RSS (MB)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--only", nargs="*", help="run only these cases")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    sys.path.insert(0, str(PROJECT))
    from g2is_core.runtime import cpu_model
    from g2is_core.data.limits import InputLimits

    lim = InputLimits()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"caps: {lim.describe('max_bytes')} per load, {lim.describe('max_line_bytes')} per line/JSON file, "
          f"{lim.describe('max_records')} records; bound {args.bound_mb:.0f} MB peak RSS")
    work = Path(args.dir)
    t0 = time.monotonic()
    cases = build(work)
    print(f"inputs built in {time.monotonic() - t0:.0f} s under {work}:")
    for name, (path, _) in cases.items():
        if path.is_file():
            print(f"  {name:13s} {path.stat().st_size / MiB:7.2f} MB on disk")
    base = work / "tiny.jsonl"
    base.write_text('{"prompt": "a", "completion": "b"}\n')
    rows = [{"case": "baseline", **run_case(base, [], work, args.timeout)}]
    for name, (path, extra) in cases.items():
        if args.only and name not in args.only:
            continue
        rows.append({"case": name, **run_case(path, extra, work, args.timeout)})
    print(f"\n{'case':13s} {'rc':>3s} {'peak RSS':>9s} {'time':>6s}  within bound  message")
    ok = True
    for r in rows:
        within = r["peak_mb"] <= args.bound_mb and r["rc"] in (0, 2)
        ok &= within
        print(f"{r['case']:13s} {r['rc']:3d} {r['peak_mb']:7.0f}MB {r['s']:5.1f}s  {'yes' if within else 'NO':12s}  "
              f"{r['message'][:160]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
