"""The fit diagnostic: what a perfect fit of each method's objective generates, and fit_gap."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.evaluate import fit_metrics, group_shares, objective_shares
from tiwbench.record import load_records
from tiwbench.results import long_table, main_table, table_notes
from tiwbench.score_nets import training_set

runner = CliRunner()


@pytest.fixture(scope="module")
def data():
    return registry.get_dataset("gmm2d").build(0.05, 0)


def shares_of(data, x):
    return group_shares(data.attribute(x), 4)


def test_each_methods_objective_shares(data):
    def fits(name, alpha=1.0, ref_share=0.5):
        method = registry.get_method(name)
        return objective_shares(method, data, training_set(method, data, ref_share), alpha)

    obs, ref = torch.cat([data.x_bias, data.x_ref]), data.x_ref
    assert torch.equal(fits("dsm_obs"), shares_of(data, obs))  # uniform draws from D_obs
    assert torch.equal(fits("dsm_ref"), shares_of(data, ref))
    mix = 0.3 * shares_of(data, ref) + 0.7 * shares_of(data, data.x_bias)  # 30 % of each batch from D_ref
    assert torch.allclose(fits("dsm_mix", ref_share=0.3), mix, atol=1e-12)
    assert (fits("dsm_mix") - fits("dsm_obs")).norm() > 0.1  # oversampling moves the mixture
    for name in ("iw_dsm", "tiw_dsm", "tiw_corr"):
        assert torch.equal(fits(name), data.target_shares.double())
        assert fits(name, alpha=0.5) is None  # its objective's shares are not known
    assert fits("tiw_nocorr") is None  # neither the training mixture's score nor p_data's
    assert fit_metrics([0.5, 0.5, 0.0, 0.0], torch.tensor([0.25] * 4, dtype=torch.double)) == {"fit_gap": 0.5}
    assert fit_metrics([0.5, 0.5, 0.0, 0.0], None) == {}


@pytest.mark.slow
def test_records_and_tables_carry_fit_gap(tmp_path):
    for method in ("dsm_obs", "tiw_nocorr"):
        out = runner.invoke(app, ["run", "--method", method, "--dataset", "gmm2d", "--ref", "0.05",
                                  "--results", str(tmp_path), "--steps", "30", "--ratio-steps", "30",
                                  "--num-samples", "500", "--sample-steps", "4"])
        assert out.exit_code == 0, out.output
    records = {r.config.method: r for r in load_records(tmp_path)}
    obs = records["dsm_obs"]
    raw = json.loads((obs.folder / "metrics.json").read_text())
    gap = float((torch.tensor(raw["shares"]) - torch.tensor(raw["fit_shares"])).double().norm())
    assert raw["metrics"]["fit_gap"] == pytest.approx(gap, abs=1e-5)
    assert raw["fit_shares"][0] > 0.4  # D_obs's majority group, not the uniform target
    assert records["tiw_nocorr"].fit_shares is None and "fit_gap" not in records["tiw_nocorr"].metrics
    long = long_table(list(records.values()))
    cells, _ = main_table(long, "gmm2d", 0.05)
    assert "fit_gap" in cells.columns and cells.loc["tiw_nocorr", "fit_gap"] == "–"
    note = table_notes(list(records.values()))[("gmm2d", "fit_gap")]
    assert "dsm_obs 0.0" in note and "tiw_nocorr" in note.split("Sampling floors")[0]


def fit_record(config: dict, gap: float, ratio: str = "none") -> dict:
    """A record whose samples are `gap` from uniform fit shares, scored on 1,000 samples."""
    return {"config": config, "metrics": {"bias_l2": gap, "fit_gap": gap}, "ratio_source": ratio,
            "ratio_kind": None if ratio == "none" else "time_dependent", "shares": [0.25] * 4,
            "target_shares": [0.25] * 4, "fit_shares": [0.25] * 4,
            "feature_space": "data", "sizes": {"bias": 20000, "ref": 1000, "eval": 10000, "samples": 1000}}


def test_rows_above_twice_their_fit_floor_are_named_under_the_summary_table(tmp_path):
    """With 1,000 samples at uniform fit shares the floor is √(4·0.25·0.75/1000) = 0.0274: a row at
    0.05 is within twice it, one at 0.06 is not (its mean over seeds is what counts). A learned
    ratio's row is not named (its fit_gap holds the ratio's error); the exact ratio's is."""
    from tiwbench.results import underfit_rows

    rows = [("dsm_ref", 0, 0.05, 1.0, "none"), ("dsm_obs", 0, 0.07, 1.0, "none"),
            ("dsm_obs", 1, 0.05, 1.0, "none"), ("tiw_dsm", 0, 0.2, 0.5, "none"),
            ("iw_dsm", 0, 0.2, 1.0, "discriminator"), ("iw_dsm", 0, 0.08, 1.0, "exact")]
    for i, (method, seed, gap, alpha, ratio) in enumerate(rows):
        config = {"method": method, "dataset": "gmm2d", "ref": 0.05, "seed": seed, "alpha": alpha,
                  **({"ratio": ratio} if ratio != "none" else {})}
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps(fit_record(config, gap, ratio)))
    flagged = ["dsm_obs 0.06 (floor 0.027)", "iw_dsm+exact 0.08 (floor 0.027)"]
    assert underfit_rows(load_records(tmp_path)) == {("gmm2d", 0.05): flagged}
    out = runner.invoke(app, ["table", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert f"fit_gap above twice its sampling floor: {', '.join(flagged)}" in " ".join(out.output.split())
    md = runner.invoke(app, ["table", "--results", str(tmp_path), "--format", "md"]).output
    assert f"(whose fit_gap holds no ratio's error): ref 0.05: {', '.join(flagged)}." in md


def test_a_run_warns_when_its_fit_gap_is_above_twice_its_floor(tmp_path, monkeypatch):
    from tiwbench import run as run_module
    from tiwbench.record import Record

    def fake(gap):
        return lambda cfg, results, **kwargs: Record.from_dict(fit_record(cfg.to_dict(), gap))

    args = ["run", "--method", "dsm_ref", "--dataset", "gmm2d", "--ref", "0.05", "--results", str(tmp_path)]
    monkeypatch.setattr(run_module, "execute", fake(0.06))
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "fit_gap above twice its sampling floor: dsm_ref 0.06 (floor 0.027)" in " ".join(out.output.split())
    monkeypatch.setattr(run_module, "execute", fake(0.05))
    assert "fit_gap above" not in runner.invoke(app, args).output
