"""Figures and the self-contained report from a small real sweep."""

import re

import pytest
from conftest import FAST
from typer.testing import CliRunner

from tiwbench.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_sweep_then_report_writes_tables_figures_and_html(tmp_path):
    res, out_dir = tmp_path / "runs", tmp_path / "gmm2d"
    out = runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,tiw_dsm", "--refs", "0.05,0.2",
                              "--seeds", "0", "--alphas", "0.5,1", "--results", str(res), *FAST])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(res), "--out", str(out_dir)])
    assert out.exit_code == 0, out.output
    names = {p.name for p in out_dir.iterdir()}
    assert {"table.md", "table.csv", "report.html", "bias_l2_vs_ref.png", "fd_data_vs_ref.png",
            "alpha_tradeoff.png", "ratio_error_vs_sigma.png", "samples.png"} <= names
    md = (out_dir / "table.md").read_text()
    options = f"--steps 200 --ratio-steps 200 --sample-steps 8 --num-samples 1000 --results {res}"
    assert f"tiwbench sweep --dataset gmm2d --methods dsm_obs,tiw_dsm --refs 0.05,0.2 --seeds 0 {options}\n" in md
    alphas = "--alphas 0.5,1"
    assert f"tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05,0.2 --seeds 0 {alphas} {options}\n" in md
    assert "| tiw_dsm (α=0.5) |" in md
    assert f"Made by `tiwbench report --dataset gmm2d --results {res} --out {out_dir}`" in md
    page = (out_dir / "report.html").read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 5
    assert "<b>" in page and "torch" in page
    out = runner.invoke(app, ["plot", "--dataset", "gmm2d", "--results", str(res), "--out", str(tmp_path / "p")])
    assert out.exit_code == 0 and "alpha_tradeoff.png" in out.output
    # the records behind the tables travel with them: the long table rebuilds from them exactly
    records = sorted((out_dir / "runs").glob("*/metrics.json"))
    assert len(records) == len(list(res.glob("*/metrics.json"))) == 6
    assert all(not p.parent.joinpath("samples.png").exists() for p in records)
    out = runner.invoke(app, ["table", "--results", str(out_dir / "runs"), "--format", "csv"])
    assert out.exit_code == 0 and out.output == (out_dir / "table.csv").read_text()
    # a report over fewer runs removes the records it no longer shows
    (res / records[0].parent.name / "metrics.json").unlink()
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(res), "--out", str(out_dir)])
    assert out.exit_code == 0
    assert len(list((out_dir / "runs").glob("*/metrics.json"))) == 5
