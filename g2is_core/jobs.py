"""Background jobs: ``g2is`` commands run as OS processes, with all their state on disk.

Why processes and files, not threads in the app: a Streamlit rerun, a browser reload or an app
restart must neither kill nor forget a run that takes minutes. Each job lives in its own
directory::

    <workspace>/jobs/<job_id>/
        job.json        what was asked and the last known state: argv, status, pid, times, returncode
        log.txt         stdout + stderr of the command
        progress.json   {"fraction", "message", "time"}, written by the CLI (G2IS_PROGRESS_FILE)
        returncode.json written once, atomically, by the runner when the command ends

The process tree is ``python -m g2is_core.jobs _run <job_dir>`` (the runner, leader of its own
process group) -> ``python -m g2is_core.cli <argv>``. The runner records the exit code in a file,
so any later process (the app after a restart, another browser session) can tell "finished" from
"crashed": a job whose runner is gone without a ``returncode.json`` died (killed, out of memory).
Cancelling signals the whole process group (SIGTERM, then SIGKILL after a grace period).

Status: queued -> running -> done | failed | cancelled. Ids are "<UTC time>-<random hex>" and
directories are created with ``exist_ok=False``, so two jobs never share a directory; every JSON
write is atomic (:func:`g2is_core.workspace.write_json`).

This module only runs argv as processes: it knows no command of the CLI. The Runs page's forms
that build such argv are :mod:`g2is_core.app.forms`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .progress import read_progress_file
from .workspace import PROJECT_ROOT, Workspace, read_json, write_json

KIND = "jobs"
JOB_FILE = "job.json"
LOG_FILE = "log.txt"
PROGRESS_FILE = "progress.json"
RC_FILE = "returncode.json"

CLI_MODULE = "g2is_core.cli"
ACTIVE = ("queued", "running")
QUEUED_TIMEOUT = 120.0  # seconds a job may stay "queued" (no process yet) before it counts as failed


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _age_seconds(iso: str) -> float:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(iso)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


def _new_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


# ----------------------------------------------------------------------------- process identity
def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), None if unknown or gone.

    Stored with the pid so a recycled pid is never mistaken for the job's runner.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses) start after the last ")".
    rest = stat[stat.rfind(")") + 2:].split()
    if rest and rest[0] == "Z":   # a zombie has finished; it only waits to be reaped
        return None
    try:
        return int(rest[19])      # field 22 (starttime) of proc(5); rest starts at field 3
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    if not pid:
        return False
    if Path("/proc").is_dir():
        ticks = _proc_start_ticks(pid)
        if ticks is None:
            return False
        return start_ticks is None or ticks == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- the job record
@dataclass
class Job:
    """One background run of a ``g2is`` command; :meth:`refresh` re-reads and settles its state."""

    id: str
    dir: Path
    name: str
    argv: list[str]
    status: str = "queued"
    pid: int | None = None
    pid_start: int | None = None
    created: str = ""
    started: str | None = None
    ended: str | None = None
    returncode: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    workspace: str = ""
    module: str = CLI_MODULE

    # ---- files
    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def progress_path(self) -> Path:
        return self.dir / PROGRESS_FILE

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def command(self) -> str:
        """The equivalent shell command, for display and for running it by hand."""
        prog = "g2is" if self.module == CLI_MODULE else f"python -m {self.module}"
        return " ".join([prog, *(_quote(a) for a in self.argv)])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Job":
        directory = Path(directory)
        d = read_json(directory / JOB_FILE)
        known = {f for f in cls.__dataclass_fields__ if f != "dir"}
        return cls(dir=directory, **{k: v for k, v in d.items() if k in known})

    def save(self) -> None:
        write_json(self.dir / JOB_FILE, self.to_json())

    # ---- state
    def refresh(self) -> "Job":
        """Re-read job.json and settle a finished or crashed process into a final status."""
        fresh = Job.load(self.dir)
        self.__dict__.update(fresh.__dict__)
        if not self.is_active:
            return self
        rc = _read_rc(self.dir)
        if rc is not None:
            self._finish(rc.get("returncode"), rc.get("ended"))
        elif self.status == "queued" and not self.pid and _age_seconds(self.created) > QUEUED_TIMEOUT:
            # The launching process died between writing job.json and starting the runner.
            self.status, self.ended = "failed", _now()
            self.error = "the job never started (the app stopped while launching it); launch it again"
            self.save()
        elif self.status == "running" and not _pid_alive(self.pid, self.pid_start):
            # The runner is gone and left no exit code: it was killed (SIGKILL, out of memory, reboot).
            if self.cancel_requested:
                self._finish(None, None)
            else:
                self.status, self.ended = "failed", _now()
                self.error = "the process ended without recording an exit code (killed, or out of memory?)"
                self.save()
        return self

    def _finish(self, returncode: int | None, ended: str | None) -> None:
        self.returncode = returncode
        self.ended = ended or _now()
        if self.cancel_requested:
            self.status = "cancelled"
        elif returncode == 0:
            self.status = "done"
        else:
            self.status = "failed"
            self.error = self.error or f"the command exited with code {returncode}; see the log"
        self.save()

    def progress(self) -> dict[str, Any] | None:
        """The last progress the command reported: {"fraction", "message", "time"} or None."""
        return read_progress_file(self.progress_path)

    def tail(self, n: int = 20) -> list[str]:
        return tail_file(self.log_path, n)


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def _read_rc(directory: Path) -> dict[str, Any] | None:
    p = directory / RC_FILE
    if not p.exists():
        return None
    with contextlib.suppress(ValueError, OSError):
        return read_json(p)
    return None


# ----------------------------------------------------------------------------- API
def _jobs_root(workspace: Workspace | str | Path | None) -> tuple[Workspace, Path]:
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    return ws, ws.dir(KIND)


def start_job(argv: Sequence[str], name: str | None = None, workspace: Workspace | str | Path | None = None,
              env: dict[str, str] | None = None, module: str = CLI_MODULE) -> Job:
    """Start ``g2is <argv>`` in the background; return its :class:`Job` (status "running").

    ``argv`` are the CLI arguments after ``g2is`` (e.g. ``["model", "fetch"]``). The command runs
    with ``G2IS_WORKSPACE`` set to the job's workspace and ``G2IS_PROGRESS_FILE`` to its progress file;
    ``env`` adds variables. ``module`` runs another ``python -m`` module instead of the CLI (tests).
    """
    argv = [str(a) for a in argv]
    ws, root = _jobs_root(workspace)
    while True:
        job_id = _new_id()
        d = root / job_id
        try:
            d.mkdir(parents=True, exist_ok=False)
            break
        except FileExistsError:   # same second and same random suffix: draw again
            continue
    job = Job(id=job_id, dir=d, name=name or " ".join(argv[:2]) or "g2is", argv=argv, created=_now(),
              workspace=str(ws.root), module=module)
    job.save()
    child_env = {**os.environ, **(env or {}), "G2IS_WORKSPACE": str(ws.root),
                 "G2IS_PROGRESS_FILE": str(job.progress_path), "PYTHONUNBUFFERED": "1"}
    try:
        with open(job.log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "g2is_core.jobs", "_run", str(d)],
                                    cwd=str(PROJECT_ROOT), env=child_env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        job.status, job.ended, job.error = "failed", _now(), f"could not start the process: {exc}"
        job.save()
        return job
    # Reap the runner when it ends so it never lingers as a zombie of this process.
    threading.Thread(target=proc.wait, daemon=True, name=f"g2is-job-{job_id}").start()
    job.pid, job.pid_start, job.status, job.started = proc.pid, _proc_start_ticks(proc.pid), "running", _now()
    # The runner may already have finished (a very short command): keep its result, add the pid.
    job.save()
    return job.refresh()


def get_job(job_id: str, workspace: Workspace | str | Path | None = None) -> Job:
    """The job with this id, refreshed. Raises FileNotFoundError with a readable message."""
    _, root = _jobs_root(workspace)
    d = root / job_id
    if not job_id or "/" in job_id or job_id.startswith(".") or not (d / JOB_FILE).exists():
        raise FileNotFoundError(f"no job {job_id!r} in {root}; the Runs page lists the existing jobs")
    return Job.load(d).refresh()


def list_jobs(workspace: Workspace | str | Path | None = None) -> list[Job]:
    """All jobs of the workspace, newest first, each refreshed."""
    _, root = _jobs_root(workspace)
    out = []
    for d in root.iterdir():
        if d.is_dir() and (d / JOB_FILE).exists():
            with contextlib.suppress(ValueError, OSError, TypeError):
                out.append(Job.load(d).refresh())
    out.sort(key=lambda j: (j.created, j.id), reverse=True)
    return out


def cancel_job(job_id: str, workspace: Workspace | str | Path | None = None, grace: float = 5.0) -> Job:
    """Stop a job: SIGTERM to its process group, SIGKILL after ``grace`` seconds. Status -> cancelled."""
    job = get_job(job_id, workspace)
    if not job.is_active:
        return job
    job.cancel_requested = True
    job.save()
    if job.pid and _pid_alive(job.pid, job.pid_start):
        _signal_group(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _pid_alive(job.pid, job.pid_start):
            time.sleep(0.05)
        if _pid_alive(job.pid, job.pid_start):
            _signal_group(job.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _pid_alive(job.pid, job.pid_start):
                time.sleep(0.05)
    rc = _read_rc(job.dir)
    job._finish(rc.get("returncode") if rc else -int(signal.SIGKILL), rc.get("ended") if rc else None)
    return job


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)   # the runner leads its own session, so its pgid is its pid


def tail_file(path: str | Path, n: int = 20, max_bytes: int = 256 * 1024) -> list[str]:
    """Last ``n`` lines of a text file, reading at most ``max_bytes`` from its end.

    tqdm redraws a bar with carriage returns; each line keeps only its last redraw.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = []
    for raw in data.decode("utf-8", "replace").split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        lines.append(parts[-1].rstrip() if parts else "")
    while lines and not lines[-1]:
        lines.pop()
    return lines[-n:] if n > 0 else []


# ----------------------------------------------------------------------------- the runner
def _run(job_dir: str) -> int:
    """Run the job's command, stream its output to log.txt, then record the exit code atomically.

    Invoked as ``python -m g2is_core.jobs _run <job_dir>`` by :func:`start_job`; stdout/stderr are
    already the log file. SIGTERM is passed on to the command (same process group) and we wait for it.
    """
    d = Path(job_dir)
    job = Job.load(d)
    cmd = [sys.executable, "-m", job.module, *job.argv]
    print(f"$ {job.command}", flush=True)
    child = subprocess.Popen(cmd, cwd=str(PROJECT_ROOT), stdin=subprocess.DEVNULL)
    stop = {"sig": None}

    def on_term(signum, _frame):
        stop["sig"] = signum
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    write_json(d / RC_FILE, {"returncode": rc, "ended": _now(), "signal": stop["sig"]})
    print(f"[g2is job] exit code {rc}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_run":
        sys.exit(_run(sys.argv[2]))
    print("usage: python -m g2is_core.jobs _run <job_dir>  (started by g2is_core.jobs.start_job)", file=sys.stderr)
    sys.exit(2)
