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
