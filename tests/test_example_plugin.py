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


@pytest.mark.slow
def test_example_plugin_installs_registers_and_runs(tmp_path, monkeypatch):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert "tiw_dsm_clip" in out.output and "clipped at 5" in out.output and "dsm_dg" in out.output
    res = tmp_path / "runs"
    for method in ("tiw_dsm_clip", "dsm_dg"):  # a new loss; a sampling-time guidance
        out = runner.invoke(app, ["run", "--method", method, "--dataset", "gmm2d", "--ref", "0.05",
                                  "--results", str(res), *FAST])
        assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--results", str(res)])
    assert out.exit_code == 0 and "| tiw_dsm_clip |" in out.output and "| dsm_dg |" in out.output
    # the method contracts hold for every method now registered, the plugin's included
    names = registry.available("method")
    assert {"tiw_dsm_clip", "dsm_dg"} <= set(names)
    for name in names:
        check_method_contract(name)
        if registry.load("method", name).ratio:
            check_unit_ratio(name, 0.5)
