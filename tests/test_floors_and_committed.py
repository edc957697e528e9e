"""Floors of the bias metric, and the committed tables against the committed records behind them."""

import io
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tiwbench.cli import app
from tiwbench.record import Record
from tiwbench.results import table_notes
from tiwbench.stats import bias_floors, share_floor

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(p.parent for p in (ROOT / "results").glob("*/table.csv") if (p.parent / "runs").is_dir())


def test_share_floor_is_the_rms_l2_of_iid_shares_and_the_mean_is_below_it():
    target, n = [0.25, 0.25, 0.25, 0.25], 200
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(torch.tensor(target), n * 20_000, replacement=True, generator=g).view(20_000, n)
    shares = torch.stack([(draws == k).double().mean(1) for k in range(4)], 1)
    l2 = (shares - torch.tensor(target).double()).pow(2).sum(1).sqrt()
    assert share_floor(target, n) == pytest.approx(float(l2.pow(2).mean().sqrt()), rel=0.01)
    assert share_floor(target, n) == pytest.approx((0.75 / 200) ** 0.5)
    # what the table note says of the mean: about 0.92 of the floor for four equal shares (a χ with
    # 3 degrees of freedom: E χ₃ / √3 = √(8/(3π)) = 0.921)
    assert float(l2.mean()) / share_floor(target, n) == pytest.approx((8 / (3 * torch.pi)) ** 0.5, abs=0.01)


def record(ref, sizes):
    return Record.from_dict({"config": {"method": "dsm_obs", "dataset": "gmm_hd", "ref": ref, "seed": 0,
                                        "ratio": "none"},
                             "metrics": {"bias_l2": 0.1}, "ratio_source": "none", "ratio_kind": None,
                             "shares": [0.25] * 4, "target_shares": [0.25] * 4, "feature_space": "data",
                             "sizes": sizes})


def test_floors_come_from_the_records_sizes_and_older_records_have_none():
    records = [record(0.05, {"bias": 4000, "ref": 200, "eval": 10000, "samples": 10000}),
               record(0.1, {"bias": 4000, "ref": 400, "eval": 10000, "samples": 10000}), record(0.25, {})]
    floors = {f["ref"]: f for f in bias_floors(records)}
    assert set(floors) == {0.05, 0.1}
    assert floors[0.05]["composition"] == pytest.approx(0.0612, abs=1e-4)
    assert floors[0.05]["sampling"] == pytest.approx(0.00866, abs=1e-5)
    note = table_notes(records)[("gmm_hd", "bias_l2")]
    assert "ref 0.05: sampling 0.00866 (N = 10,000), reference composition 0.0612 (|D_ref| = 200)" in note


def test_a_stratified_reference_set_has_no_composition_floor_and_iid_says_so():
    base = {"bias": 4000, "ref": 200, "eval": 10000, "samples": 10000}
    records = [record(0.05, {**base, "ref_stratified": 1}), record(0.05, {**base, "ref_stratified": 0})]
    floors = {f["stratified"]: f for f in bias_floors(records)}
    assert floors[True]["composition"] is None and floors[False]["composition"] == pytest.approx(0.0612, abs=1e-4)
    note = table_notes(records)[("gmm_hd", "bias_l2")]
    assert "reference composition none (stratified |D_ref| = 200)" in note
    assert "reference composition 0.0612 (i.i.d. |D_ref| = 200)" in note


def test_records_from_before_ref_stratified_join_the_newer_ones():
    base = {"bias": 4000, "ref": 200, "eval": 10000, "samples": 10000}
    (floor,) = bias_floors([record(0.05, base), record(0.05, {**base, "ref_stratified": 0})])
    assert floor["stratified"] is False


def test_settings_a_run_did_not_use_do_not_mark_its_row():
    """iw_dsm's clean-data model has no large-σ term: an old record's ratio_limit_var (read as
    the legacy value) must not set it apart from tiw_dsm's rows."""
    from tiwbench.results import run_setting

    def rec(method, kind, limit_var):
        return Record.from_dict({"config": {"method": method, "dataset": "gmm_hd", "ref": 0.05, "seed": 0,
                                            "ratio": "trained", "ratio_limit": True, "ratio_limit_var": limit_var},
                                 "metrics": {"bias_l2": 0.1}, "ratio_source": "trained", "ratio_kind": kind,
                                 "shares": [0.25] * 4, "target_shares": [0.25] * 4, "feature_space": "data"})

    assert "limit_var" not in run_setting(rec("iw_dsm", "time_independent", "sigma_data"))
    assert run_setting(rec("tiw_dsm", "time_dependent", "delta"))["limit_var"] == "delta"


@pytest.mark.parametrize("dataset", ["gmm2d", "gmm_hd"])
def test_stratified_ref_sampling_gives_exactly_the_target_counts(dataset):
    from tiwbench.registry import get_dataset

    iid = get_dataset(dataset).build(0.05, seed=0)
    strat = get_dataset(dataset, ref_sampling="stratified").build(0.05, seed=0)
    counts = torch.bincount(strat.attribute(strat.x_ref), minlength=4)
    n = len(strat.x_ref)
    assert n == len(iid.x_ref) and strat.ref_stratified and not iid.ref_stratified
    # the components overlap a little (gmm_hd: std 1 against distance 5.7), so count the draws' labels
    # through the nearest mean, which is right for all but a few points
    assert (counts - n // 4).abs().max() <= max(2, n // 100)
    assert torch.equal(strat.x_bias, iid.x_bias)  # only D_ref changes
    with pytest.raises(Exception, match="ref_sampling must be one of"):
        get_dataset(dataset, ref_sampling="sometimes")


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_tables_rebuild_from_the_committed_records(folder):
    """What a fresh clone can do: rebuild results/<dataset>/table.csv from its runs/, no training."""
    dataset = next(Record.read(p).config.dataset for p in (folder / "runs").glob("*/metrics.json"))
    committed = (folder / "table.csv").read_text()
    # the baseline its paired differences were taken to (the column diff_vs; a study may pair to another)
    baseline = next(iter(pd.read_csv(io.StringIO(committed))["diff_vs"].dropna()), "dsm_obs")
    out = CliRunner().invoke(app, ["table", "--dataset", dataset, "--results", str(folder / "runs"),
                                   "--format", "csv", "--baseline", baseline])
    assert out.exit_code == 0, out.output
    assert out.output == committed


def test_every_committed_table_has_its_records():
    tables = sorted(p.parent.name for p in (ROOT / "results").glob("*/table.csv"))
    assert tables and tables == [p.name for p in COMMITTED]


def test_the_held_out_bce_table_says_where_chance_is_and_ratio_free_datasets_get_no_note():
    with_ratio = Record.from_dict({"config": {"method": "tiw_dsm", "dataset": "gmm2d", "ref": 0.05, "seed": 0},
                                   "metrics": {"bias_l2": 0.1, "ratio_val_bce": 0.71}, "ratio_source": "trained",
                                   "ratio_kind": "time_dependent", "shares": [0.25] * 4,
                                   "target_shares": [0.25] * 4, "feature_space": "data"})
    notes = table_notes([with_ratio, record(0.05, {})])
    assert "log 2 = 0.693" in notes[("gmm2d", "ratio_val_bce")]
    assert ("gmm_hd", "ratio_val_bce") not in notes
    out = CliRunner().invoke(app, ["table", "--results", str(ROOT / "results" / "digits_lt" / "runs"),
                                   "--format", "md"])
    assert out.exit_code == 0 and "worse than no ratio at all" in out.output


def test_the_held_out_bce_table_names_the_tilt_weights_selection_chose_per_row_and_seed():
    def run(seed, tilt, **config):
        return Record.from_dict({"config": {"method": "tiw_dsm", "dataset": "gmm2d", "ref": 0.05, "seed": seed,
                                            "ratio_limit": True, "ratio_limit_base": "tilt", **config},
                                 "metrics": {"bias_l2": 0.1, "ratio_val_bce": 0.6}, "ratio_source": "trained",
                                 "ratio_kind": "time_dependent", "shares": [0.25] * 4, "target_shares": [0.25] * 4,
                                 "feature_space": "data", "ratio_fit": {"tilt": tilt} if tilt else None})

    def chose(name):
        return {"weights": name, "clean_val_bce": {"linear": 0.61, "classifier": 0.59}}

    records = [run(1, chose("linear"), ratio_tilt_weights="select"), run(0, chose("classifier"),
               ratio_tilt_weights="select"), run(0, None, ratio_tilt_weights="linear")]  # nothing chosen
    note = table_notes(records)[("gmm2d", "ratio_val_bce")]
    # the row is named with the options these old-style records hold off today's defaults
    assert "`--ratio-option tilt_weights=select`): tiw_dsm (holdout=0, " in note
    assert note.endswith("), ref 0.05: classifier (seed 0), linear (seed 1).")
    assert "tilt_weights=select" not in table_notes(records[2:])[("gmm2d", "ratio_val_bce")]
