"""The benchmark scripts run (tiny settings on the CPU), so they do not rot between GPU sessions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run_script(name: str, *args: str, env: dict | None = None) -> str:
    return subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], check=True,
                          capture_output=True, text=True, env=env).stdout


def test_throughput_script_prints_its_table():
    out = _run_script("throughput.py", "--device", "cpu", "--net", "tiny", "--batch", "4", "--iters", "1",
                      "--warmup", "1", "--precisions", "fp32,bf16", "--sample-steps", "3")
    assert "| fp32 | tiw_dsm step |" in out and "| bf16 | heun 3 steps |" in out


@pytest.mark.slow
def test_throughput_script_compiles_in_channels_last():
    """The GPU defaults (compiled score and ratio networks and sampler) and the other memory
    layout, exercised on the CPU so that a GPU session finds them working: graph capture with
    inductor's decompositions and partitioner, without inductor's C++ code (minutes here, and not
    the GPU's code; test_train's compiled TIW step runs inductor itself)."""
    backend = "aot_eager_decomp_partition"  # the graphs captured, forward and backward; no C++ built
    out = _run_script("throughput.py", "--device", "cpu", "--net", "tiny", "--batch", "4", "--iters", "1",
                      "--warmup", "1", "--precisions", "bf16", "--sample-steps", "3", "--compile",
                      "--channels-last", env={**os.environ, "TIWBENCH_COMPILE_BACKEND": backend})
    assert f"compile={backend}, channels-last" in out and "| bf16 | tiw_dsm step |" in out


def test_tilt_composition_script_weighs_the_split_and_sums_to_one():
    out = _run_script("tilt_composition.py", "--dataset", "gmm2d", "--seeds", "0")
    row = next(line for line in out.splitlines() if line.startswith("| 0 |"))
    plain, tilted = ([float(v) for v in cell.split(" / ")] for cell in row.split("|")[2:4])
    assert abs(sum(plain) - 1) < 2e-3 and abs(sum(tilted) - 1) < 2e-3
    assert plain[0] > 0.6 and tilted[3] > tilted[1]  # D_bias's majority; the tilt's corner opposite it


def test_ref_composition_scores_each_seeds_reference_set_and_runs_against_it(tmp_path):
    """D_ref's own shares per seed, and a run whose samples have exactly those shares is 0 from its
    seed's D_ref and as far from the target as D_ref itself."""
    from tiwbench.record import Record
    from tiwbench.registry import get_dataset

    data = get_dataset("gmm2d").build(0.05, 1)
    shares = (torch.bincount(data.attribute(data.x_ref), minlength=4).double() / len(data.x_ref)).tolist()
    record = Record.from_dict({"config": {"method": "dsm_ref", "dataset": "gmm2d", "ref": 0.05, "seed": 1},
                               "metrics": {"bias_l2": 0.1}, "ratio_source": "none", "ratio_kind": None,
                               "shares": shares, "target_shares": [0.25] * 4, "feature_space": "data"})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(record.to_json())
    out = _run_script("ref_composition.py", "--dataset", "gmm2d", "--seeds", "1", "--results", str(tmp_path))
    seed_row = next(line for line in out.splitlines() if line.startswith("| 1 |"))
    own = float(seed_row.split("|")[3])
    expected = sum((s - 0.25) ** 2 for s in shares) ** 0.5
    assert own == pytest.approx(expected, abs=1e-4) and own > 0.005  # an i.i.d. draw is off the target
    run_row = next(line for line in out.splitlines() if line.startswith("| dsm_ref |"))
    runs, to_target, to_ref = (float(v) for v in run_row.split("|")[2:5])
    assert runs == 1 and to_target == pytest.approx(own, abs=1e-4) and to_ref == 0


def test_ratio_families_scores_the_exact_ratio_at_zero_error_and_the_linear_term_above_it():
    out = _run_script("ratio_families.py", "--dataset", "gmm2d", "--steps", "5")
    rows = {line.split()[0]: line for line in out.splitlines() if "held-out BCE per band" in line}
    assert {"exact", "linear", "rescaled", "gauss", "tilt"} <= rows.keys()

    def corr_err(row: str) -> float:
        return float(row.split("corr_err")[1].split("|")[0])

    def bce(row: str) -> list[float]:
        return [float(v) for v in row.split("per band")[1].split("|")[0].split()]

    assert corr_err(rows["exact"]) == 0 and corr_err(rows["linear"]) > 0.005
    assert bce(rows["exact"])[0] < bce(rows["linear"])[0]  # the exact ratio separates best where it can
    assert any(line.startswith("step 5 α 1.0") for line in out.splitlines())


def test_ratio_probe_prints_the_selected_steps_and_the_error_per_sigma():
    out = _run_script("ratio_probe.py", "--dataset", "gmm2d", "--variants", "today", "--steps", "20")
    assert "## today (" in out and "chosen steps" in out
    logr = next(line for line in out.splitlines() if line.startswith("logr"))
    errors = [float(v) for v in logr.split()[1:]]
    assert len(errors) > 5 and all(0 <= e < 5 for e in errors)


def test_step_time_script_times_every_step_kind():
    out = _run_script("step_time.py", "--steps", "2")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms/step" not in line]
    assert len(rows) == 6 and rows[0].startswith("| dsm_obs |")
    assert all(float(r.split("|")[2]) > 0 for r in rows)


def test_tilt_limit_script_reports_consistent_shifts():
    out = _run_script("tilt_limit.py", "--datasets", "gmm2d", "--seeds", "0")
    line = next(line for line in out.splitlines() if line.startswith("gmm2d seed 0"))
    delta, s, gap = (float(line.split(f"{key} ")[1].split(",")[0]) for key in ("|δ|", "|s|", "|s − δ|"))
    assert abs(s - delta) <= gap + 1e-3 <= s + delta + 2e-3  # the triangle inequality


def test_ratio_backbones_script_fits_both_backbones_on_held_out_data(tmp_path):
    out = _run_script("ratio_backbones.py", "--dataset", "gmm2d", "--results", str(tmp_path),
                      "--steps", "30", "--ratio-steps", "30")
    rows = {tuple(line.split()[:2]): line for line in out.splitlines() if "held-out BCE" in line}
    assert set(rows) == {(b, m) for b in ("scratch", "score") for m in ("iw_dsm", "tiw_dsm")}
    bce = {key: [float(v) for v in line.split("held-out BCE ")[1].split("  tilt")[0].split()]
           for key, line in rows.items()}
    assert len(bce["score", "tiw_dsm"]) == 4 and len(bce["score", "iw_dsm"]) == 1
    assert all(0 < b < 0.75 for values in bce.values() for b in values)
    assert bce["score", "iw_dsm"] != bce["scratch", "iw_dsm"]  # the head sees the encoder's features


@pytest.mark.slow
def test_engine_script_times_each_method_and_tables_them(tmp_path):
    out = _run_script("engine.py", "--seeds", "0", "--results", str(tmp_path / "runs"),
                      "--run-option=--steps=20", "--run-option=--ratio-steps=20",
                      "--run-option=--num-samples=200", "--run-option=--sample-steps=4")
    timed = [line for line in out.splitlines() if line.startswith("seed 0 ") and line.endswith(" s")]
    assert [line.split()[2] for line in timed] == ["dsm_obs", "dsm_ref", "iw_dsm", "tiw_dsm", "tiw_nocorr"]
    assert "seed 0: five methods in" in out
    table = out.split("five methods in")[1]
    assert "bias_l2" in table and all(f" {m} " in table for m in ("dsm_obs", "tiw_dsm", "tiw_nocorr"))
    assert len(list((tmp_path / "runs").glob("*/metrics.json"))) == 5


def test_lock_race_script_finds_no_overlap_and_no_spurious_failure():
    out = _run_script("lock_race.py", "--takeovers", "6", "--starts", "12", "--rounds", "1")
    assert "overlapping holders: False" in out and " 0 errors" in out
    assert "12 processes" in out and " 0 spurious failures" in out
    took = int(out.split("starts round 0: 12 processes, ")[1].split(" took")[0])
    assert took >= 1  # someone got the free lock
