"""Two processes through torchrun (gloo on the CPU) reproduce the one-process record."""

import json
import os
import subprocess
import sys

import pytest

ARGS = ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--steps", "300",
        "--ratio-steps", "100", "--num-samples", "1000", "--sample-steps", "8", "--device", "cpu"]


def record(folder):
    (path,) = folder.glob("*/metrics.json")
    return path.parent.name, json.loads(path.read_text())


def run(command: list[str], env: dict) -> None:
    """Run a command; on failure, show what it printed (a CalledProcessError alone says nothing)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "tiwbench", *ARGS, "--results", str(tmp_path / "two")], env)
    run([sys.executable, "-m", "tiwbench", *ARGS, "--results", str(tmp_path / "one")], env)
    (id2, r2), (id1, r1) = record(tmp_path / "two"), record(tmp_path / "one")
    assert id1 == id2 and r2["processes"] == 2 and r1["processes"] == 1
    m1, m2 = r1["metrics"], r2["metrics"]
    assert abs(m1["bias_l2"] - m2["bias_l2"]) < 0.01
    assert abs(m1["fd_data"] - m2["fd_data"]) < 0.05 * m1["fd_data"] + 1e-3
    assert abs(m1["ratio_err"] - m2["ratio_err"]) < 1e-6  # the same ratio model (trained on rank 0)


def local_rank_of(pid: int) -> str | None:
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"LOCAL_RANK=")), None)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")
def test_a_killed_process_ends_the_other_with_one_line(tmp_path):
    """SIGKILL one rank mid-run: the other reports it in one line (no gloo traceback) and exits,
    at its next collective, before torchrun's agent (polling every 5 s) would stop it."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results, logs = tmp_path / "runs", tmp_path / "logs"
    launcher = ["--standalone", "--nproc_per_node", "2", "--monitor-interval", "5", "--redirects", "3",
                "--log-dir", str(logs)]
    run_args = ["run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05", "--steps", "1000000",
                "--device", "cpu", "--results", str(results)]
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "tiwbench",
                              *run_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(results.glob("*/config.json")) and time.time() < deadline:  # the group is up
            time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
        (victim,) = [int(p) for p in children if local_rank_of(int(p)) == "1"]
        os.kill(victim, signal.SIGKILL)
        agent.wait(timeout=120)
    finally:
        agent.kill()
    (log,) = logs.glob("**/attempt_0/0/stderr.log")
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert "another process of this run ended" in errors[0]  # before torchrun's SIGTERM (5 s later)
