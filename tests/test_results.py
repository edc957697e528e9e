"""Aggregation of run records into tables and the commands that reproduce them (no training)."""

from dataclasses import MISSING, fields, replace

from tiwbench.config import RATIO_FIELDS, RunConfig
from tiwbench.estimators.discriminator import Discriminator
from tiwbench.record import Record
from tiwbench.results import long_table, render, reproduce_commands, row_names


def record(method, ref=0.05, seed=0, alpha=1.0, bias=0.1, ratio_error=(), ratio_options=(), **config):
    """A record of today's code: the discriminator's options stored as resolve_config stores them."""
    ratio = config.pop("ratio", "none" if method in ("dsm_obs", "dsm_ref", "dsm_mix") else "discriminator")
    current = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING and (
        (f.name in RATIO_FIELDS and ratio == "discriminator") or (f.name == "ref_share" and method not in (
            "dsm_ref", "dsm_obs")))}
    stored = () if ratio != "discriminator" else Discriminator.normalise(
        "time_dependent", {**{o.name: o.default for o in Discriminator.options}, **dict(ratio_options)})
    cfg = {"method": method, "dataset": "gmm2d", "ref": ref, "seed": seed, "alpha": alpha, "ratio": ratio,
           "steps": 200, **current, "ratio_options": [list(kv) for kv in stored],
           "ratio_steps": 200 if ratio == "discriminator" else 6000, **config}
    return Record.from_dict({"config": cfg, "metrics": {"bias_l2": bias}, "ratio_source": ratio,
                             "ratio_kind": None if ratio == "none" else "time_dependent",
                             "shares": [0.25] * 4, "target_shares": [0.25] * 4, "feature_space": "data",
                             "ratio_error": list(ratio_error),
                             "train_on": "ref" if method == "dsm_ref" else "obs",
                             "stratified_batches": method not in ("dsm_obs", "dsm_ref")})


def bias_rows(records):
    long = long_table(records)
    long = long[long.metric == "bias_l2"].assign(row=lambda d: row_names(d))
    return {(m, r): (mean, n) for m, r, mean, n in long[["row", "ref", "mean", "n"]].itertuples(index=False)}


def test_runs_made_differently_are_not_pooled():
    records = [record("tiw_dsm", seed=s, bias=0.1) for s in (0, 1)] + \
              [record("tiw_dsm", seed=s, bias=0.3, steps=400) for s in (0, 1)] + \
              [record("dsm_obs", seed=s, bias=0.5) for s in (0, 1)]
    rows = bias_rows(records)
    # a row is marked by the settings that differ from what most runs of its dataset have
    assert rows[("tiw_dsm", 0.05)] == (0.1, 2)
    md = render(long_table(records + [record("tiw_dsm", steps=1000)]), "md")
    assert md.index("| tiw_dsm |") < md.index("tiw_dsm (steps=400)") < md.index("tiw_dsm (steps=1000)")
    assert rows[("tiw_dsm (steps=400)", 0.05)] == (0.3, 2)
    assert rows[("dsm_obs", 0.05)] == (0.5, 2)
    long = long_table(records)  # tidy: the method, its estimator and its settings are columns
    assert set(long[long.settings == "steps=400"].method) == {"tiw_dsm"}
    assert set(long[long.method == "tiw_dsm"].ratio) == {"discriminator"}
    assert set(long.settings) == {"", "steps=400"}


def test_one_setting_keeps_plain_labels_and_ratio_fields_of_ratio_free_runs_do_not_split():
    records = [record(m, seed=s) for m in ("dsm_obs", "tiw_dsm") for s in (0, 1)]
    assert set(bias_rows(records)) == {("dsm_obs", 0.05), ("tiw_dsm", 0.05)}
    assert reproduce_commands(records, "gmm2d") == [
        "tiwbench sweep --dataset gmm2d --methods dsm_obs,tiw_dsm --refs 0.05 --seeds 0,1 "
        "--steps 200 --ratio-steps 200"]


def test_an_estimator_option_off_its_default_is_marked_even_where_every_row_shares_it():
    """Label-informed records made before steps_factor existed read as steps_factor=1, not the
    default 6: alone in their table they are still marked, and their command says so."""
    def labels(seed, options):
        r = record("tiw_dsm", seed=seed, ratio="labels")
        return replace(r, config=replace(r.config, ratio_options=options))

    old = [labels(s, ()) for s in (0, 1)]
    assert set(bias_rows(old + [record("dsm_obs")])) == {("tiw_dsm+labels (steps_factor=1)", 0.05),
                                                         ("dsm_obs", 0.05)}
    commands = reproduce_commands(old, "gmm2d")
    assert any(c.endswith("--ratio labels --ratio-option steps_factor=1") for c in commands)
    new = [labels(s, (("steps_factor", 6),)) for s in (0, 1)]
    assert set(bias_rows(new)) == {("tiw_dsm+labels", 0.05)}
    assert set(bias_rows(old + new)) == {("tiw_dsm+labels", 0.05), ("tiw_dsm+labels (steps_factor=1)", 0.05)}


def test_ratio_free_runs_join_the_command_with_the_fewest_ratio_options():
    """dsm_obs ignores the ratio options: its runs go with the default discriminator's command,
    not with whichever ratio setting came first."""
    records = [record("iw_dsm", ratio_backbone="score"), record("iw_dsm"), record("dsm_obs")]
    assert reproduce_commands(records, "gmm2d") == [
        "tiwbench sweep --dataset gmm2d --methods dsm_obs,iw_dsm --refs 0.05 --seeds 0 --steps 200 "
        "--ratio-steps 200",
        "tiwbench sweep --dataset gmm2d --methods iw_dsm --refs 0.05 --seeds 0 --steps 200 --ratio-steps 200 "
        "--ratio-backbone score"]


def test_commands_split_by_setting_and_alpha():
    records = [record(m, ref=r) for m in ("dsm_obs", "tiw_dsm") for r in (0.05, 0.1)] + \
              [record("tiw_dsm", alpha=0.5)] + \
              [record("tiw_dsm", precision="bf16", xflip=True, dataset_options=[["n_bias", "100"]])]
    assert reproduce_commands(records, "gmm2d") == [
        "tiwbench sweep --dataset gmm2d --methods dsm_obs,tiw_dsm --refs 0.05,0.1 --seeds 0 "
        "--steps 200 --ratio-steps 200",
        "tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0 --alphas 0.5,1 "
        "--steps 200 --ratio-steps 200",
        "tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0 --steps 200 --ratio-steps 200 "
        "--xflip --precision bf16 --dataset-option n_bias=100"]
    labels = set(long_table(records).method)
    assert labels == {"dsm_obs", "tiw_dsm"}  # the tidy column holds the method alone
    names = set(row_names(long_table(records)))
    assert "tiw_dsm (n_bias=100, precision=bf16, xflip=true)" in names and "tiw_dsm" in names


def test_ratio_error_keeps_ratio_models_trained_differently_apart():
    from tiwbench.results import ratio_error_table

    def with_error(rec, err):
        return replace(rec, ratio_error=[{"sigma": 1.0, "log_r_rmse": err, "grad_rmse": err, "corr_rmse": err}])

    records = [with_error(record("tiw_dsm"), 1.0), with_error(record("tiw_nocorr"), 1.0),
               with_error(record("tiw_dsm", ratio_steps=400), 3.0)]
    table = ratio_error_table(records).set_index("ratio")
    assert table.loc["time_dependent", "log_r_rmse"] == 1.0
    assert table.loc["time_dependent (ratio_steps=400)", "log_r_rmse"] == 3.0
    assert table.loc["time_dependent", "n"] == 1  # one model shared by two methods


def test_oracle_runs_get_their_own_command():
    oracle = record("tiw_dsm", ratio="exact", ratio_steps=6000)
    records = [record("tiw_dsm"), oracle]
    assert reproduce_commands(records, "gmm2d") == [
        "tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0 --steps 200 --ratio-steps 200",
        "tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0 --steps 200 --ratio exact"]
    assert set(row_names(long_table(records))) == {"tiw_dsm", "tiw_dsm+exact"}


def test_records_of_older_runs_read_as_what_they_ran():
    """A record written before the held-out discriminator existed lacks its fields: it reads as
    the old behaviour, and its reproducing command says so."""
    old = Record.from_dict({"config": {"method": "tiw_dsm", "dataset": "gmm2d", "ref": 0.05, "seed": 0,
                                       "ratio": "trained", "steps": 200, "ratio_steps": 200},
                            "metrics": {"bias_l2": 0.1}, "ratio_source": "trained", "ratio_kind": "time_dependent",
                            "shares": [0.25] * 4, "target_shares": [0.25] * 4, "feature_space": "data"})
    cfg = old.config
    values = cfg.ratio_values()
    assert cfg.ratio == "discriminator" and old.ratio_source == "discriminator"
    assert (values["holdout"], values["weight_decay"], values["limit"], cfg.ref_share, values["prior"]) == (
        0.0, 0.0, False, 0.0, False)
    assert cfg.run_id != record("tiw_dsm").config.run_id  # the new default never reuses an old run
    assert reproduce_commands([old], "gmm2d") == [
        "tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05 --seeds 0 --steps 200 --ref-share 0 "
        "--ratio-steps 200 --ratio-option weight_decay=0 --ratio-option holdout=0 --ratio-option limit=false "
        "--ratio-option prior=false"]


def test_reference_only_runs_do_not_split_on_the_batch_share_they_do_not_use():
    records = [record("dsm_ref"), record("dsm_mix"), record("dsm_mix", ref_share=0.25), record("dsm_obs")]
    assert records[0].config.ref_share == 0.0 and records[1].config.ref_share == 0.5
    assert set(row_names(long_table(records))) == {"dsm_ref", "dsm_mix", "dsm_mix (ref_share=0.25)", "dsm_obs"}


def test_a_baseline_must_name_a_row_but_the_default_may_be_absent():
    import pytest

    from tiwbench.errors import TiwbenchError

    records = [record(m, seed=s, bias=0.1 + s / 100) for m in ("dsm_ref", "tiw_dsm") for s in (0, 1)]
    records += [record("tiw_dsm", seed=s, ratio="exact", bias=0.05 + s / 50) for s in (0, 1)]
    long = long_table(records)  # no dsm_obs: no paired differences, no error
    assert long.diff_vs.isna().all()
    paired = long_table(records, baseline="tiw_dsm+exact")
    bias = paired[(paired.metric == "bias_l2") & (paired.method == "dsm_ref")]
    assert bias.diff_vs.tolist() == ["tiw_dsm+exact"] and round(float(bias.diff_mean.iloc[0]), 6) == 0.045
    with pytest.raises(TiwbenchError, match=r"'tiw_dsm_oracle' is no row.*dsm_ref, tiw_dsm, tiw_dsm\+exact"):
        long_table(records, baseline="tiw_dsm_oracle")


def test_commands_make_only_the_runs_shown_when_methods_ran_at_different_sizes():
    """Four methods at ref 0.05, two of them also at 0.1 and 0.25, seed 1 of one size missing:
    one sweep per grid of cells, none that would train runs the table does not hold."""
    records = [record(m, ref=r, ratio="exact", ratio_steps=6000) for m in ("iw_dsm", "tiw_dsm")
               for r in (0.05, 0.1, 0.25)] + \
              [record(m, ratio="exact", ratio_steps=6000) for m in ("tiw_corr", "tiw_nocorr")] + \
              [record("tiw_dsm", ref=r, seed=1, ratio="exact", ratio_steps=6000) for r in (0.05, 0.1)]
    exact = "--steps 200 --ratio exact"
    assert reproduce_commands(records, "gmm2d") == [
        f"tiwbench sweep --dataset gmm2d --methods iw_dsm --refs 0.05,0.1,0.25 --seeds 0 {exact}",
        f"tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.05,0.1 --seeds 0,1 {exact}",
        f"tiwbench sweep --dataset gmm2d --methods tiw_dsm --refs 0.25 --seeds 0 {exact}",
        f"tiwbench sweep --dataset gmm2d --methods tiw_corr,tiw_nocorr --refs 0.05 --seeds 0 {exact}"]
