import json
import re

import pytest
import torch
from conftest import FAST
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.datasets.gmm import GMM2D

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_list_shows_methods_and_datasets_with_descriptions():
    out = invoke("list")
    assert out.exit_code == 0
    for name in ("dsm_obs", "dsm_ref", "iw_dsm", "tiw_dsm", "tiw_nocorr", "tiw_corr", "gmm2d", "gmm_hd"):
        assert name in out.output
    assert "score correction" in out.output
    assert "--dataset-option imbalance=100  n_bias=10000  classifier=''" in out.output  # options, defaults
    assert "--dataset-option dim=32  ref_sampling=iid" in out.output


def test_help_shows_the_bracketed_defaults():
    """Help texts are plain text: "[dataset default]" must not vanish as if it were markup."""
    out = invoke("run", "--help")
    assert out.exit_code == 0 and "[dataset default]" in " ".join(out.output.split())
    assert "[results/<dataset>]" in invoke("report", "--help").output


def test_dry_run_prints_the_resolved_config():
    out = invoke("run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--dry-run")
    assert out.exit_code == 0
    cfg = json.loads(out.output)
    assert cfg["steps"] == GMM2D.defaults["steps"] and cfg["ratio"] == "discriminator"
    assert cfg["run_id"].startswith("gmm2d-tiw_dsm-ref0.05-a1-s0-")


@pytest.mark.slow
def test_run_writes_a_record_and_is_not_redone(tmp_path):
    res = tmp_path / "runs"
    args = ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--results", str(res), *FAST]
    out = invoke(*args)
    assert out.exit_code == 0, out.output
    (folder,) = [p for p in res.iterdir() if not p.name.startswith("_")]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["ratio_source"] == "discriminator" and record["feature_space"] == "data"
    assert {"bias_l2", "bias_l1", "bias_kl", "fd_data", "ratio_err", "w_collapse"} <= set(record["metrics"])
    assert json.loads((folder / "config.json").read_text()) == record["config"]
    assert (folder / "samples.png").exists() and not (folder / "checkpoint.pt").exists()
    assert len(record["ratio_error"]) == 13 and record["ratio_kind"] == "time_dependent"
    out = invoke("table", "--results", str(res), "--ratio-error")
    assert out.exit_code == 0 and "### gmm2d — time-dependent ratio: RMSE of log r" in out.output
    assert "| σ | ref 0.05 |" in out.output
    # the ratio model is cached and reused by tiw_nocorr (same dataset, ref, seed)
    out = invoke(*[a if a != "tiw_dsm" else "tiw_nocorr" for a in args])
    assert out.exit_code == 0 and "reusing the cached time_dependent ratio model" in out.output
    mtime = (folder / "metrics.json").stat().st_mtime
    out = invoke(*args)
    assert out.exit_code == 0 and "already finished" in out.output
    assert (folder / "metrics.json").stat().st_mtime == mtime


def test_oracle_ratio_is_recorded(tmp_path):
    out = invoke("run", "--method", "iw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio", "exact",
                 "--results", str(tmp_path), *FAST)
    assert out.exit_code == 0, out.output
    (record,) = tmp_path.glob("*/metrics.json")
    assert json.loads(record.read_text())["ratio_source"] == "exact"
    out = invoke("table", "--results", str(tmp_path), "--format", "csv")
    assert "gmm2d,iw_dsm,exact,," in out.output
    assert "iw_dsm+exact" in invoke("table", "--results", str(tmp_path)).output


def test_table_formats(tmp_path):
    for seed in ("0", "1"):
        out = invoke("run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05", "--seed", seed,
                     "--results", str(tmp_path), *FAST)
        assert out.exit_code == 0, out.output
    csv = invoke("table", "--results", str(tmp_path), "--format", "csv").output.splitlines()
    assert csv[0] == ("dataset,method,ratio,settings,ref,alpha,metric,mean,std,n,best,diff_vs,diff_mean,diff_lo,"
                      "diff_hi,diff_n")
    assert any(line.startswith("gmm2d,dsm_obs,,,0.05,1,bias_l2,") and line.split(",")[9] == "2" for line in csv)
    summary = invoke("table", "--results", str(tmp_path)).output  # the default: one compact table
    assert "gmm2d, ref 0.05 — mean ± std over 2 seeds" in summary and "dsm_obs" in summary
    assert "--format md" in summary  # says where the full tables are
    md = invoke("table", "--results", str(tmp_path), "--format", "md").output
    assert "### gmm2d — bias_l2 (lower is better)" in md and "| method | ref 0.05 |" in md
    assert "**" in md and "(2)" in md
    tex = invoke("table", "--results", str(tmp_path), "--format", "latex").output
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex


class NoExactRatio(GMM2D):
    name = "gmm2d_noexact"
    has_exact_ratio = False


@pytest.fixture
def no_exact_dataset():
    registry.register("dataset", NoExactRatio)
    yield
    registry.unregister("dataset", NoExactRatio.name)


@pytest.mark.parametrize("args, message", [
    (["--method", "nope", "--dataset", "gmm2d", "--ref", "0.05"],
     "unknown method 'nope'; available: dsm_mix, dsm_obs"),
    (["--method", "tiw_dsm", "--dataset", "nope", "--ref", "0.05"], "unknown dataset 'nope'; available:"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0"], "--ref must be in (0, 1]"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "1.5"], "--ref must be in (0, 1]"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio", "nope"],
     "unknown ratio estimator 'nope'; available: discriminator, exact, labels, paper"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "nope=1"],
     "ratio estimator 'discriminator' has no option 'nope'; its options: weight_decay, holdout"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "holdout=x"],
     "--ratio-option holdout must be a float, got 'x'"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "holdout=0.7"],
     "--ratio-option holdout must be in [0, 0.5], got 0.7"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "limit=maybe"],
     "--ratio-option limit must be a bool, got 'maybe'"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "patience=5",
      "--ratio-option", "patience=6"], "--ratio-option patience is given twice"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio-option", "holdout=0"],
     "tilt_weights=select chooses on held-out data"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--ratio", "paper", "--ratio-option",
      "holdout=0"], "ratio estimator 'paper' has no option 'holdout'; its options: none"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--dataset-option", "n_bias=100",
      "--dataset-option", "n_bias=200"], "--dataset-option n_bias is given twice"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--steps", "0"], "--steps must be >= 1"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--alpha", "-1"], "--alpha must be >= 0"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--precision", "fp16"],
     "--precision must be one of"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--net", "ddpmpp32"], "does not suit dataset"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--dataset-option", "x"], "takes KEY=VALUE"),
    (["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--dataset-option", "k=1"],
     "does not take the options"),
    pytest.param(["--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.1", "--device", "cuda"],
                 "CUDA is not available", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_bad_input_gives_one_clear_line(args, message):
    out = invoke("run", *args)
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_oracle_on_a_dataset_without_exact_ratio(no_exact_dataset):
    out = invoke("run", "--method", "tiw_dsm", "--dataset", "gmm2d_noexact", "--ref", "0.1", "--ratio", "exact")
    assert out.exit_code == 2
    assert "--ratio exact needs an exact density ratio" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = invoke("run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.1",
                 "--results", str(blocker / "runs"), *FAST)
    assert out.exit_code == 2
    assert "cannot be written" in out.output and "Traceback" not in out.output


def test_table_without_runs(tmp_path):
    out = invoke("table", "--results", str(tmp_path))
    assert out.exit_code == 2 and "no finished runs" in out.output


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    import sys

    out = invoke("run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.05", "--seed", "0",
                 "--results", str(tmp_path), *FAST)
    assert out.exit_code == 0, out.output
    invoke("run", "--method", "dsm_obs", "--dataset", "gmm2d", "--ref", "0.1", "--results", str(tmp_path), *FAST)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    for command in ("plot", "report"):
        out = invoke(command, "--dataset", "gmm2d", "--results", str(tmp_path), "--out", str(tmp_path / "o"))
        assert out.exit_code == 2 and "pip install 'tiwbench[plot]'" in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1


def test_processes_other_than_the_first_print_nothing(monkeypatch):
    """Under torchrun only process 0 shows progress and messages (RANK is set by torchrun)."""
    from tiwbench.console import console, progress_bar, say

    monkeypatch.setenv("RANK", "1")
    with console.capture() as quiet:
        say("hello")
        with progress_bar("bar", 3) as update:
            update(3)
    monkeypatch.setenv("RANK", "0")
    with console.capture() as loud:
        say("hello")
    assert quiet.get() == "" and "hello" in loud.get()


def test_table_reads_records_without_loading_torch(tmp_path):
    """`tiwbench table` and tiwbench.results never import torch (tables are made from JSON)."""
    import subprocess
    import sys

    record = {"config": {"method": "dsm_obs", "dataset": "gmm2d", "ref": 0.05, "ratio": "none"},
              "metrics": {"bias_l2": 0.5}, "shares": [1, 0, 0, 0], "target_shares": [0.25] * 4,
              "feature_space": "data", "ratio_source": "none", "ratio_kind": None}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(record))
    code = ("import sys\nfrom tiwbench.cli import main\n"
            "sys.argv = ['tiwbench', 'table', '--results', sys.argv[1], '--format', sys.argv[2]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), "md"], capture_output=True, text=True)
    assert out.returncode == 0 and "| dsm_obs | **0.5 (1)** |" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), "summary"], capture_output=True, text=True)
    assert out.returncode == 0 and re.search(r"│ dsm_obs │ +0\.5 \* │", out.stdout), out.stdout + out.stderr
    assert "gmm2d, ref 0.05 — mean ± std over 1 seed; *: best or tied" in out.stdout
