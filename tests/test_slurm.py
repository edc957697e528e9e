"""A sweep through a real Slurm cluster (`.ci/slurm-up.sh` starts a single-node one; CI runs it and
sets TIWBENCH_REQUIRE_SLURM=1, so that there the test cannot be skipped)."""

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
