import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.methods.dsm_obs import DSMObs

from conftest import FAST

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


def test_sweep_runs_everything_once_and_shares_ratio_models(tmp_path):
    out = sweep(tmp_path, "dsm_obs,tiw_dsm,tiw_nocorr")
    assert out.exit_code == 0, out.output
    assert "6 runs, 6 run now, 0 already finished, 0 failed" in out.output
    assert len(list(tmp_path.glob("*/metrics.json"))) == 6
    assert len(list((tmp_path / "_ratios").glob("*.pt"))) == 2  # one per seed, shared by two methods
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


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    import socket

    from tiwbench.run import RunInProgress, run_lock

    lock = tmp_path / ".lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(f"{socket.gethostname()}:{sleeper.pid}")
        with pytest.raises(RunInProgress, match=f"being computed by .*:{sleeper.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path):  # its process is gone: the lock is stale
        assert lock.read_text().endswith(f":{os.getpid()}")
    assert not lock.exists()


def test_a_waiting_lock_waits_for_a_live_holder(tmp_path):
    """Ratio models use a waiting lock: a second sweep needing the model another one is training
    waits, then reuses it, instead of training it again or failing."""
    import socket
    import time

    from tiwbench.run import run_lock

    lock = tmp_path / "model.pt.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        lock.write_text(f"{socket.gethostname()}:{holder.pid}")
        t0 = time.monotonic()
        with run_lock(tmp_path, "model.pt.lock", wait=True):
            assert holder.poll() is not None  # taken once the holder had ended (not yet reaped: a zombie)
        assert time.monotonic() - t0 > 1.0
    finally:
        holder.kill()
        holder.wait()
    assert not lock.exists()
