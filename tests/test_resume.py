"""An interrupted `tiwbench run`, run again, ends with the metrics of an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import pytest


def command(results):
    return [sys.executable, "-m", "tiwbench", "run", "--method", "tiw_dsm", "--dataset", "gmm2d",
            "--ref", "0.05", "--steps", "1500", "--batch-size", "128", "--ratio-steps", "100",
            "--num-samples", "500", "--sample-steps", "8", "--results", str(results)]


def record(results):
    (path,) = results.glob("*/metrics.json")
    return json.loads(path.read_text())


def metrics(results):
    return record(results)["metrics"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_metrics(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(command(a), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(a.glob("*/checkpoint.pt")) and time.time() < deadline:  # step 1000 of 1500 saved
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    (ckpt,) = a.glob("*/checkpoint.pt")
    assert not list(a.glob("*/metrics.json"))
    subprocess.run(command(a), check=True, capture_output=True)
    subprocess.run(command(b), check=True, capture_output=True)
    assert metrics(a) == metrics(b)
    # the resumed record times the whole training, and says it resumed; the other does not
    resumed, whole = record(a)["timing"], record(b)["timing"]
    assert 1000 <= resumed["resumed_at_step"] < 1500 and "resumed_at_step" not in whole
    assert resumed["train_s"] > resumed["earlier_train_s"] > 0
    assert resumed["total_s"] >= resumed["train_s"]
