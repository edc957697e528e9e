"""A sweep through a real Slurm cluster (`.ci/slurm-up.sh` starts a single-node one; CI runs it and
sets TIWBENCH_REQUIRE_SLURM=1, so that there the test cannot be skipped)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import FAST


def slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


REQUIRED = os.environ.get("TIWBENCH_REQUIRE_SLURM") == "1"


def sweep(results, *extra):
    cmd = [sys.executable, "-m", "tiwbench", "sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,iw_dsm",
           "--refs", "0.05", "--seeds", "0", "--results", str(results), "--launcher", "submitit",
           "--slurm-partition", "debug", "--slurm-time", "15", *FAST, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(not REQUIRED and not slurm_answers(),
                    reason="no Slurm answers here (.ci/slurm-up.sh starts one)")
def test_a_sweep_through_a_real_slurm_cluster(tmp_path):
    assert slurm_answers(), "TIWBENCH_REQUIRE_SLURM=1 but sinfo does not answer"
    out = sweep(tmp_path, "--wait")  # the defaults ask the CPU partition for no GPU
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 1 jobs for the unfinished runs of 2" in out.stdout
    assert "done" in out.stderr
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
    table = subprocess.run([sys.executable, "-m", "tiwbench", "table", "--results", str(tmp_path),
                            "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "gmm2d,iw_dsm," in table.stdout
    again = sweep(tmp_path)
    assert again.returncode == 0 and "submitted 0 jobs" in again.stdout  # nothing left to do


DDP_ARGS = ["--dataset", "gmm2d", "--methods", "tiw_dsm", "--refs", "0.05", "--seeds", "0", "--steps", "300",
            "--ratio-steps", "100", "--num-samples", "1000", "--sample-steps", "8", "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.skipif(not REQUIRED and not slurm_answers(),
                    reason="no Slurm answers here (.ci/slurm-up.sh starts one)")
def test_a_two_task_slurm_job_is_one_ddp_group_matching_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "tiwbench", "sweep", *DDP_ARGS, "--results", str(tmp_path / "two"),
                          "--launcher", "submitit", "--slurm-partition", "debug", "--slurm-tasks", "2", "--wait"],
                         capture_output=True, text=True, timeout=900, env=env)
    assert two.returncode == 0, two.stdout + two.stderr
    one = subprocess.run([sys.executable, "-m", "tiwbench", "sweep", *DDP_ARGS,
                          "--results", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=900, env=env)
    assert one.returncode == 0, one.stdout + one.stderr
    (r2,), (r1,) = ([json.loads(p.read_text()) for p in (tmp_path / d).glob("*/metrics.json")]
                    for d in ("two", "one"))
    assert r2["processes"] == 2 and r1["processes"] == 1  # as test_ddp's torchrun pair, within its tolerances
    m1, m2 = r1["metrics"], r2["metrics"]
    assert abs(m1["bias_l2"] - m2["bias_l2"]) < 0.01
    assert abs(m1["fd_data"] - m2["fd_data"]) < 0.05 * m1["fd_data"] + 1e-3
    assert abs(m1["ratio_err"] - m2["ratio_err"]) < 1e-6
