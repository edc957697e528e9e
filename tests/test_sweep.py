import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.methods.dsm_obs import DSMObs

runner = CliRunner()


class Failing(DSMObs):
    name = "failing"
    description = "test method whose loss raises"

    def loss(self, batch, denoiser, ratio_model=None, alpha=1.0):
        raise RuntimeError("this method always fails")


@pytest.fixture
def failing_method():
    registry.register("method", Failing)
    yield
    registry.unregister("method", Failing.name)


def sweep(results, methods, *extra):
    return runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", methods, "--refs", "0.05",
                               "--seeds", "0,1", "--results", str(results), *FAST, *extra])


@pytest.mark.slow
def test_sweep_runs_everything_once_and_shares_ratio_models(tmp_path):
    out = sweep(tmp_path, "dsm_obs,tiw_dsm,tiw_nocorr")
    assert out.exit_code == 0, out.output
    assert "6 runs, 6 run now, 0 already finished, 0 failed" in out.output
    assert len(list(tmp_path.glob("*/metrics.json"))) == 6
    # per seed one time-dependent model, shared by two methods, and the classifier its tilt's
    # weights were chosen against (--ratio-tilt-weights select)
    assert len(list((tmp_path / "_ratios").glob("*time_dependent*.pt"))) == 2
    assert len(list((tmp_path / "_ratios").glob("*time_independent*.pt"))) == 2
    out = sweep(tmp_path, "dsm_obs,tiw_dsm,tiw_nocorr")
    assert "6 runs, 0 run now, 6 already finished" in out.output


def test_alpha_sweep_runs_ratio_free_methods_once(tmp_path):
    out = runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,tiw_dsm", "--refs", "0.05",
                              "--seeds", "0", "--alphas", "0.5,1", "--results", str(tmp_path), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.count("gmm2d-dsm_obs-") == 1 and out.output.count("gmm2d-tiw_dsm-") == 2


def test_a_failing_run_does_not_stop_the_sweep(tmp_path, failing_method):
    out = sweep(tmp_path, "failing,dsm_obs")
    assert out.exit_code == 1
    assert "2 run now, 0 already finished, 2 failed" in out.output
    assert "this method always fails" in out.output
    assert len(list(tmp_path.glob("gmm2d-dsm_obs-*/metrics.json"))) == 2


@pytest.mark.slow
def test_killed_sweep_restarts_without_losing_runs(tmp_path):
    cmd = [sys.executable, "-m", "tiwbench", "sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,dsm_ref",
           "--refs", "0.05", "--seeds", "0,1", "--results", str(tmp_path / "a"), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "a").glob("*/metrics.json")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    finished = {p: p.read_text() for p in (tmp_path / "a").glob("*/metrics.json")}
    assert 1 <= len(finished) < 4
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p, text in finished.items():
        assert p.read_text() == text  # not redone
    subprocess.run(cmd[:-len(FAST) - 2] + ["--results", str(tmp_path / "b"), *FAST], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def table(folder):
        return runner.invoke(app, ["table", "--results", str(folder), "--format", "csv"]).output

    assert table(tmp_path / "a") == table(tmp_path / "b")


def test_submitit_jobs_group_runs_by_ref_and_seed(tmp_path):
    """One job per (ref, seed); with submitit's debug cluster the jobs run here, no Slurm needed."""
    from tiwbench.sweep import group_by_data, plan, submit

    configs = plan("gmm2d", ["dsm_obs", "tiw_dsm"], [0.05, 0.1], [0], [1.0], steps=50, ratio_steps=50,
                   num_samples=200, sample_steps=4)
    groups = group_by_data(configs)
    assert [len(g) for g in groups] == [2, 2] and {g[0].ref for g in groups} == {0.05, 0.1}
    jobs = submit(configs, tmp_path, device="cpu", slurm={"timeout_min": 5}, cluster="debug")
    assert len(jobs) == 2
    assert [j.result()["done"] for j in jobs] == [2, 2]
    assert len(list(tmp_path.glob("*/metrics.json"))) == 4
    assert submit(configs, tmp_path, cluster="debug") == []  # nothing left to do


def test_slurm_asks_for_gpus_only_when_told_and_its_refusal_is_one_line(tmp_path, monkeypatch):
    import submitit
    from submitit.core.utils import FailedJobError

    asked = {}

    def refuse(self, *args):
        asked.update(self.parameters)
        raise FailedJobError("sbatch: error: Invalid generic resource (gres) specification\n")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", refuse)
    out = runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs", "--refs", "0.05",
                              "--seeds", "0", "--results", str(tmp_path), "--launcher", "submitit"])
    assert "gpus_per_node" not in asked  # the default asks a partition for no GPU
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "Slurm refused the jobs: sbatch: error: Invalid generic resource (gres) specification" in out.output
    assert "--slurm-gpus 0" in out.output
    runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs", "--refs", "0.05", "--seeds", "0",
                        "--results", str(tmp_path), "--launcher", "submitit", "--slurm-gpus", "2"])
    assert asked["gpus_per_node"] == 2


@pytest.mark.slow
def test_two_sweeps_sharing_a_results_folder(tmp_path):
    """Run concurrently, they compute each run once (the other skips it as busy or finished) and
    leave only complete records."""
    cmd = [sys.executable, "-m", "tiwbench", "sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,dsm_ref",
           "--refs", "0.05", "--seeds", "0,1", "--results", str(tmp_path), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    records = list(tmp_path.glob("*/metrics.json"))
    assert len(records) == 4 and not list(tmp_path.glob("*/.lock"))
    for r in records:
        json.loads(r.read_text())
    out = runner.invoke(app, ["table", "--results", str(tmp_path), "--format", "csv"])
    assert out.exit_code == 0 and ",2\n" in out.output  # two seeds per method


def test_a_run_another_sweep_finished_meanwhile_is_not_counted_as_run_now(tmp_path, monkeypatch):
    """The sweep lists its unfinished runs once; one that another sweep finishes after that is
    reported as already finished, not as run now."""
    from tiwbench import sweep
    from tiwbench.sweep import plan, run_local

    configs = plan("gmm2d", ["dsm_obs"], [0.05], [0], [1.0], steps=20, num_samples=200, sample_steps=2)
    assert run_local(configs, tmp_path).done == 1
    monkeypatch.setattr(sweep, "unfinished", lambda configs, results: list(configs))  # listed before
    out = run_local(configs, tmp_path)
    assert (out.done, out.skipped) == (0, 1)


HOLDER = """
import sys
from pathlib import Path
from tiwbench.locks import run_lock
with run_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin (or kills us)
"""


def hold(folder, name=".lock"):
    """A process that holds the lock, returned once it does (no sleeping on the machine's speed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    from tiwbench.locks import RunInProgress, run_lock

    lock = tmp_path / ".lock"
    holder = hold(tmp_path)
    try:
        with pytest.raises(RunInProgress, match=f"being computed by .*:{holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up; its lock file stays behind
        holder.wait()
    assert lock.exists()
    with run_lock(tmp_path):  # its process is gone: the kernel released the lock
        assert lock.read_text().endswith(f":{os.getpid()}")
    assert not lock.exists()


@pytest.mark.parametrize("content", ["", "host:abc", "\x00garbage"])
def test_an_empty_or_corrupt_lock_file_blocks_nobody(tmp_path, content):
    """What a full disk or a crash can leave: a lock file that nobody holds."""
    from tiwbench.locks import run_lock

    (tmp_path / "m.pt.lock").write_text(content)
    with run_lock(tmp_path, "m.pt.lock", wait=True):
        pass


def test_a_waiting_lock_waits_for_a_live_holder(tmp_path):
    """Ratio models use a waiting lock: a second sweep needing the model another one is training
    waits, then reuses it, instead of training it again or failing."""
    import threading

    from tiwbench.locks import run_lock

    holder = hold(tmp_path, "model.pt.lock")
    release = threading.Timer(0.5, holder.stdin.close)  # the holder finishes while we wait
    release.start()
    try:
        with run_lock(tmp_path, "model.pt.lock", wait=True, poll_s=0.05):
            assert holder.wait(30) == 0  # taken only once the holder had let go
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
    assert not (tmp_path / "model.pt.lock").exists()


RACER = """
import sys, time
from pathlib import Path
from tiwbench.locks import RunInProgress, run_lock
folder, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
try:
    with run_lock(folder):
        with (folder / "holders").open("a") as f:
            f.write("<")
        time.sleep(0.2)  # a second holder now would write "<" before our ">"
        with (folder / "holders").open("a") as f:
            f.write(">")
    print("took")
except RunInProgress:
    print("busy")
"""


def test_simultaneous_takeovers_of_a_stale_lock_leave_one_holder(tmp_path):
    """Many processes start at once on a folder whose lock a crashed process left behind."""
    import time

    (tmp_path / ".lock").write_text("somehost:12345")
    start = time.time() + 3.0  # all of them are ready by then, then they race
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(12)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert (tmp_path / "holders").read_text() == "<>" * outs.count("took")  # never two at once
    assert outs.count("took") >= 1 and set(outs) <= {"took", "busy"}


def test_many_simultaneous_starts_have_no_spurious_failure(tmp_path):
    """The writability probe has a unique name: concurrent starts do not trip over each other."""
    from concurrent.futures import ThreadPoolExecutor

    from tiwbench.locks import check_writable

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: check_writable(tmp_path / "run"), range(500)))


@pytest.mark.slow
def test_parallel_sweep_runs_each_group_once_with_logs(tmp_path):
    out = sweep(tmp_path, "dsm_obs,iw_dsm", "--jobs", "2")
    assert out.exit_code == 0, out.output
    assert "4 runs, 4 run now, 0 already finished, 0 failed" in out.output
    assert "2 processes of 1 thread" in out.output
    assert len(list(tmp_path.glob("*/metrics.json"))) == 4
    assert len(list((tmp_path / "_ratios").glob("*time_independent*.pt"))) == 2  # one per seed
    logs = sorted(p.name for p in (tmp_path / "_logs").iterdir())
    assert logs == ["gmm2d-ref0.05-s0.log", "gmm2d-ref0.05-s1.log"]
    assert "gmm2d-iw_dsm-ref0.05-a1-s0" in (tmp_path / "_logs" / logs[0]).read_text()
    out = sweep(tmp_path, "dsm_obs,iw_dsm", "--jobs", "2")
    assert "4 runs, 0 run now, 4 already finished" in out.output
    bad = sweep(tmp_path, "dsm_obs", "--jobs", "2", "--launcher", "submitit")
    assert bad.exit_code == 2 and "--jobs is for the local launcher" in bad.output


class FakeJob:
    """What follow() reads of a submitit job."""

    def __init__(self, job_id, ends_after, failed_runs=(), error=None):
        self.job_id, self.polls, self.ends_after = job_id, 0, ends_after
        self.failed_runs, self.error, self.cancelled = list(failed_runs), error, False
        self.state = "COMPLETED" if error is None else "FAILED"

        class Paths:
            stderr = None
        self.paths = Paths()

    def done(self):
        self.polls += 1
        return self.polls > self.ends_after

    def exception(self):
        return self.error

    def results(self):
        return [{"done": 1, "busy": [], "failed": self.failed_runs}]

    def cancel(self, check=True):
        self.cancelled = True


def test_following_jobs_reports_failures_with_their_logs_and_leaves_them_on_ctrl_c(tmp_path, monkeypatch, capsys):
    from tiwbench.errors import Interrupted
    from tiwbench.sweep import follow

    log = tmp_path / "0_log.err"
    log.write_text("line 1\nTraceback\nRuntimeError: out of memory\n")
    good, bad = FakeJob("7_0", 1), FakeJob("7_1", 2, failed_runs=[("gmm2d-x", "RuntimeError: out of memory")])
    bad.paths.stderr = log
    failed = follow([good, bad], [], tmp_path, poll=0)
    assert failed == [bad]
    said = " ".join(capsys.readouterr().err.split())
    assert "job 7_0 done" in said and "job 7_1 failed (gmm2d-x: RuntimeError: out of memory)" in said
    assert str(log) in said.replace(" ", "") or "0_log.err" in said
    assert "RuntimeError: out of memory" in said.split("0_log.err")[-1]  # the log's last lines

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("tiwbench.sweep.time.sleep", interrupt)
    jobs = [FakeJob("8_0", 99)]
    with pytest.raises(Interrupted, match="the jobs go on"):
        follow(jobs, [], tmp_path, poll=1)
    assert not jobs[0].cancelled
    with pytest.raises(Interrupted, match="cancelled jobs 8_0"):
        follow(jobs, [], tmp_path, cancel_on_interrupt=True, poll=1)
    assert jobs[0].cancelled


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "target"), [(signal.SIGINT, "sweep"), (signal.SIGTERM, "sweep"),
                                             (signal.SIGINT, "worker")])
def test_a_signal_to_the_parallel_sweep_alone_stops_its_workers(tmp_path, sig, target):
    """`kill` or a scheduler signals the sweep's own process, not its workers: they must stop too,
    at their next step, with a checkpoint to resume from. A signal to one worker alone (Ctrl-C in
    `top`, an OOM guard) stops the whole sweep the same way rather than letting it take the next group."""
    cmd = [sys.executable, "-m", "tiwbench", "sweep", "--dataset", "gmm2d", "--methods", "dsm_obs",
           "--refs", "0.05", "--seeds", "0,1", "--results", str(tmp_path), "--jobs", "2",
           "--steps", "200000", "--num-samples", "200", "--sample-steps", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(tmp_path.glob("*/checkpoint.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    # the workers, not the resource tracker
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(p) for p in children if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
    assert len(list(tmp_path.glob("*/checkpoint.pt"))) == 2 and len(workers) == 2
    os.kill(proc.pid if target == "sweep" else workers[0], sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:  # a failure leaves no process training on
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "sweep interrupted" in err and "Traceback" not in err
    for pid in workers:  # gone, or a zombie nobody reaps (the container's init)
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert not list(tmp_path.glob("*/metrics.json"))
