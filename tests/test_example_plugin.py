"""The example plugin package installs with pip and runs through `tiwbench run` and `table`."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST
from test_contracts import check_method_contract, check_unit_ratio
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_method"
RATIO_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_ratio"
DATASET_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_dataset"


def install(package: Path, tmp_path: Path, monkeypatch) -> None:
    """pip-install a plugin package into a folder of its own, importable for this test only."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(package)], check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))


@pytest.mark.slow
def test_example_plugin_installs_registers_and_runs(tmp_path, monkeypatch):
    install(EXAMPLE, tmp_path, monkeypatch)
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert "tiw_dsm_clip" in out.output and "clipped at 5" in out.output and "dsm_dg" in out.output
    res = tmp_path / "runs"
    for method in ("tiw_dsm_clip", "dsm_dg"):  # a new loss; a sampling-time guidance
        out = runner.invoke(app, ["run", "--method", method, "--dataset", "gmm2d", "--ref", "0.05",
                                  "--results", str(res), *FAST])
        assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--results", str(res), "--format", "md"])
    assert out.exit_code == 0 and "| tiw_dsm_clip |" in out.output and "| dsm_dg |" in out.output
    # the method contracts hold for every method now registered, the plugin's included
    names = registry.available("method")
    assert {"tiw_dsm_clip", "dsm_dg"} <= set(names)
    for name in names:
        check_method_contract(name)
        if registry.load("method", name).ratio:
            check_unit_ratio(name, 0.5)


@pytest.mark.slow
def test_example_ratio_estimator_installs_registers_and_runs(tmp_path, monkeypatch):
    """The outside estimator package: pip-installed, listed with its options, run through run,
    sweep and table, and held to every estimator contract."""
    from test_estimators import check_estimator_declaration, check_estimator_fit

    install(RATIO_EXAMPLE, tmp_path, monkeypatch)
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert "kde" in out.output and "--ratio-option bandwidth=0" in out.output
    res = tmp_path / "runs"
    out = runner.invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--ratio",
                              "kde", "--ratio-option", "bandwidth=0.2", "--results", str(res), *FAST])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["sweep", "--dataset", "gmm2d", "--methods", "dsm_obs,iw_dsm", "--refs", "0.05",
                              "--seeds", "0", "--ratio", "kde", "--results", str(res), *FAST])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--results", str(res), "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "| iw_dsm+kde |" in out.output and "| tiw_dsm+kde (bandwidth=0.2) |" in out.output
    csv = runner.invoke(app, ["table", "--results", str(res), "--format", "csv"]).output
    assert "gmm2d,tiw_dsm,kde,bandwidth=0.2,0.05," in csv
    assert "kde" in registry.available("ratio")
    check_estimator_declaration("kde")
    check_estimator_fit("kde", tmp_path)


@pytest.mark.slow
def test_example_dataset_installs_registers_and_runs(tmp_path, monkeypatch):
    """The outside image dataset: pip-installed, listed, held to the dataset contracts, its option
    checked, and run through run and table with a learned and the label-informed ratio."""
    from test_contracts import test_dataset_class_contract, test_dataset_data_contract

    install(DATASET_EXAMPLE, tmp_path, monkeypatch)
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert "stripes" in out.output and "orientation × thickness" in out.output
    assert "--dataset-option n_bias=3000  classifier=''" in out.output
    test_dataset_class_contract("stripes")
    test_dataset_data_contract("stripes", tmp_path / "contract")
    res = tmp_path / "runs"
    bad = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "stripes", "--ref", "0.05",
                              "--dataset-option", "n_bias=10", "--results", str(res)])
    assert bad.exit_code == 2 and "n_bias=10" in bad.output
    tiny = ["--steps", "50", "--ratio-steps", "50", "--num-samples", "300", "--sample-steps", "4"]
    for method, extra in (("dsm_obs", []), ("tiw_dsm", []), ("tiw_dsm", ["--ratio", "labels"])):
        out = runner.invoke(app, ["run", "--method", method, "--dataset", "stripes", "--ref", "0.05",
                                  "--results", str(res), *extra, *tiny])
        assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--results", str(res), "--format", "md"])
    assert out.exit_code == 0, out.output
    assert all(f"| {row} |" in out.output for row in ("dsm_obs", "tiw_dsm", "tiw_dsm+labels"))
