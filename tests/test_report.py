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
            "alpha_tradeoff.png", "ratio_error_vs_sigma.png", "training_curves.png", "samples.png"} <= names
    md = (out_dir / "table.md").read_text()
    options = f"--steps 200 --ratio-steps 200 --sample-steps 8 --num-samples 1000 --results {res}"
    assert f"tiwbench sweep --dataset gmm2d --methods dsm_obs,tiw_dsm --refs 0.05,0.2 --seeds 0 {options}\n" in md
    alphas = "--alphas 0.5,1"
    assert f"tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05,0.2 --seeds 0 {alphas} {options}\n" in md
    assert "| tiw_dsm (α=0.5) |" in md
    assert f"Made by `tiwbench report --dataset gmm2d --results {res} --out {out_dir}`" in md
    page = (out_dir / "report.html").read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 7  # bias_l2_corrected too
    assert "<b>" in page and "torch" in page
    tables = page.index("<h2>Main metrics")  # bias and quality against reference size come first
    assert page.index('alt="bias_l2_vs_ref"') < tables and page.index('alt="fd_data_vs_ref"') < tables
    assert page.index('alt="bias_l2_corrected_vs_ref"') > tables
    out = runner.invoke(app, ["plot", "--dataset", "gmm2d", "--results", str(res), "--out", str(tmp_path / "p")])
    assert out.exit_code == 0 and "alpha_tradeoff.png" in out.output
    # the records behind the tables travel with them: the long table rebuilds from them exactly
    records = sorted((out_dir / "runs").glob("*/metrics.json"))
    assert len(records) == len(list(res.glob("*/metrics.json"))) == 6
    # with the samples of the runs the figure shows (seed 0, α = 1, ref 0.05), so that a report
    # made from the records alone draws it too
    with_samples = {p.parent.name for p in records if p.parent.joinpath("samples.png").exists()}
    assert with_samples == {p.parent.name for p in records if "-ref0.05-a1-s0-" in p.parent.name} != set()
    again = tmp_path / "again"
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(out_dir / "runs"),
                              "--out", str(again), "--no-records"])
    assert out.exit_code == 0 and (again / "samples.png").exists()
    out = runner.invoke(app, ["table", "--results", str(out_dir / "runs"), "--format", "csv"])
    assert out.exit_code == 0 and out.output == (out_dir / "table.csv").read_text()
    # a report over fewer runs removes the records it no longer shows
    (res / records[0].parent.name / "metrics.json").unlink()
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(res), "--out", str(out_dir)])
    assert out.exit_code == 0
    assert len(list((out_dir / "runs").glob("*/metrics.json"))) == 5


def test_report_closes_with_the_summary_file_and_refuses_a_missing_one(tmp_path):
    from tiwbench.record import Record

    runs = tmp_path / "runs"
    for method in ("dsm_obs", "dsm_ref"):
        for seed in (0, 1):
            record = Record.from_dict({"config": {"method": method, "dataset": "gmm2d", "ref": 0.05, "seed": seed,
                                                  "ratio": "none"},
                                       "metrics": {"bias_l2": 0.1 + seed / 100 + (method == "dsm_obs")},
                                       "ratio_source": "none", "ratio_kind": None, "shares": [0.25] * 4,
                                       "target_shares": [0.25] * 4, "feature_space": "data"})
            (runs / f"{method}-{seed}").mkdir(parents=True)
            (runs / f"{method}-{seed}" / "metrics.json").write_text(record.to_json())
    summary = tmp_path / "summary.md"
    summary.write_text("dsm_ref wins by 1.0.\n\nBecause <reasons>.\n")
    out_dir = tmp_path / "out"
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(runs), "--out", str(out_dir),
                              "--summary", str(summary)])
    assert out.exit_code == 0, out.output
    md = (out_dir / "table.md").read_text()
    assert md.endswith("## What the numbers say\n\ndsm_ref wins by 1.0.\n\nBecause <reasons>.\n")
    assert f"--summary {summary}`" in md
    page = (out_dir / "report.html").read_text()
    assert "<p>dsm_ref wins by 1.0.</p>" in page and "Because &lt;reasons&gt;." in page
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(runs), "--out", str(out_dir),
                              "--summary", str(tmp_path / "missing.md")])
    assert out.exit_code == 2 and "--summary" in out.output
    # a report paired to another baseline says so in the command that made it
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(runs), "--out", str(out_dir),
                              "--baseline", "dsm_ref"])
    assert out.exit_code == 0, out.output
    md = (out_dir / "table.md").read_text()
    assert f"Made by `tiwbench report --dataset gmm2d --results {runs} --out {out_dir} --baseline dsm_ref`" in md
    assert "difference to dsm_ref, paired by seed" in md


def test_report_removes_only_stale_records_of_its_own_dataset(tmp_path):
    """OUT/runs may be a results folder in use: a report removes the records of its dataset that
    it no longer shows, and nothing else — other datasets' runs, caches, unfinished runs, links."""
    import json

    from tiwbench.record import Record

    def record(dataset, seed):
        return Record.from_dict({"config": {"method": "dsm_ref", "dataset": dataset, "ref": 0.05, "seed": seed,
                                            "ratio": "none"}, "metrics": {"bias_l2": 0.1}, "ratio_source": "none",
                                 "ratio_kind": None, "shares": [0.25] * 4, "target_shares": [0.25] * 4,
                                 "feature_space": "data"})

    runs, out_dir = tmp_path / "runs", tmp_path / "out"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "metrics.json").write_text(record("gmm2d", 0).to_json())
    kept = out_dir / "runs"
    for name, rec in (("other-dataset", record("gmm_hd", 0)), ("stale", record("gmm2d", 5))):
        (kept / name).mkdir(parents=True)
        (kept / name / "metrics.json").write_text(rec.to_json())
    (kept / "_ratios").mkdir()
    (kept / "_ratios" / "model.pt").write_bytes(b"x")
    (kept / "unfinished").mkdir()
    (kept / "unfinished" / "config.json").write_text(json.dumps({"dataset": "gmm2d"}))
    (kept / "with-checkpoint").mkdir()
    (kept / "with-checkpoint" / "metrics.json").write_text(record("gmm2d", 6).to_json())
    (kept / "with-checkpoint" / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "metrics.json").write_text(record("gmm2d", 7).to_json())
    (kept / "link").symlink_to(tmp_path / "elsewhere")
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(runs), "--out", str(out_dir)])
    assert out.exit_code == 0, out.output
    left = {p.name for p in kept.iterdir()}
    assert "stale" not in left
    assert {"other-dataset", "_ratios", "unfinished", "with-checkpoint", "link"} <= left
    assert (tmp_path / "elsewhere" / "metrics.json").exists()


def synthetic_runs(folder):
    """Two tiny gmm2d records, enough for a report."""
    import json

    for seed in (0, 1):
        run = folder / f"gmm2d-dsm_obs-ref0.05-a1-s{seed}-x"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({
            "config": {"method": "dsm_obs", "dataset": "gmm2d", "ref": 0.05, "seed": seed, "ratio": "none"},
            "metrics": {"bias_l2": 0.4 + seed / 10}, "shares": [1, 0, 0, 0], "target_shares": [0.25] * 4,
            "feature_space": "data", "ratio_source": "none", "ratio_kind": None}))


@pytest.mark.parametrize("summary, message", [
    ("/dev/zero", "is not a regular file"), ("binary", "is not a UTF-8 text file"),
    ("large", "is larger than 1,000,000 bytes")])
def test_report_refuses_a_summary_that_is_no_text_file_at_once(tmp_path, summary, message):
    synthetic_runs(tmp_path / "runs")
    if summary == "binary":
        summary = tmp_path / "s.bin"
        summary.write_bytes(b"\x00\x01\xff")
    elif summary == "large":
        summary = tmp_path / "s.md"
        summary.write_text("x" * 1_000_001)
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(tmp_path / "runs"),
                              "--out", str(tmp_path / "out"), "--summary", str(summary)])
    assert out.exit_code == 2 and message in out.output, out.output
    assert not (tmp_path / "out").exists()


def test_report_writes_everything_or_nothing(tmp_path, monkeypatch):
    synthetic_runs(tmp_path / "runs")
    args = ["report", "--dataset", "gmm2d", "--results", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert runner.invoke(app, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    (tmp_path / "runs" / "gmm2d-dsm_obs-ref0.05-a1-s1-x").rename(tmp_path / "elsewhere")  # the table changes

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tiwbench.report.write_records", full_disk)
    out = runner.invoke(app, args)
    assert out.exit_code == 2 and "No space left on device" in out.output and "Traceback" not in out.output
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before  # the page and its tables still agree with the records beside them
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    (tmp_path / "file").write_text("")
    out = runner.invoke(app, ["report", "--dataset", "gmm2d", "--results", str(tmp_path / "runs"),
                              "--out", str(tmp_path / "file")])
    assert out.exit_code == 2 and "is a file, not a folder" in out.output
