"""Paired statistics over seeds: intervals, ties, differences to a baseline (no training)."""

import math

import pandas as pd
import pytest

from tiwbench.stats import best_and_ties, paired_to_baseline, t_interval


def test_t_interval_matches_the_textbook():
    mean, low, high, n = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 * 1.0 / math.sqrt(3)  # t_{0.975, 2} · sd / √n, sd = 1
    assert (mean, n) == (2.0, 3) and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    mean, low, high, n = t_interval([0.5])
    assert mean == 0.5 and n == 1 and math.isnan(low) and math.isnan(high)


def per_seed(values: dict[str, list[float]], ref=0.05, metric="bias_l2"):
    return pd.DataFrame([{"dataset": "d", "method": m, "ref": ref, "alpha": 1.0, "seed": s, "metric": metric,
                          "value": v} for m, vs in values.items() for s, v in enumerate(vs)])


def test_ties_are_shown_and_a_significant_loser_is_not():
    """b is 0.01 above a on every seed (a paired difference with no spread: significant) though
    the seeds' spread (±0.1) dwarfs it; c is above a on some seeds and below on others (a tie)."""
    df = per_seed({"a": [0.10, 0.30, 0.20], "b": [0.11, 0.31, 0.21], "c": [0.05, 0.40, 0.19],
                   "z": [0.9, 0.95, 0.92]})
    best = best_and_ties(df)
    assert best[("d", "bias_l2", 0.05, "a")] and best[("d", "bias_l2", 0.05, "c")]
    assert not best[("d", "bias_l2", 0.05, "b")] and not best[("d", "bias_l2", 0.05, "z")]


def test_one_seed_marks_only_the_lowest_mean():
    best = best_and_ties(per_seed({"a": [0.1], "b": [0.2]}))
    assert best[("d", "bias_l2", 0.05, "a")] and not best[("d", "bias_l2", 0.05, "b")]


def test_differences_to_the_baseline_are_paired_by_seed():
    df = per_seed({"dsm_obs": [0.5, 0.7, 0.6], "tiw_dsm": [0.1, 0.4, 0.2]})
    row = paired_to_baseline(df, "dsm_obs").iloc[0]
    assert row.method == "tiw_dsm" and row.diff_vs == "dsm_obs" and row.diff_n == 3
    assert row.diff_mean == pytest.approx(-0.3667, abs=1e-4)  # mean of −0.4, −0.3, −0.4
    expected = t_interval([-0.4, -0.3, -0.4])
    assert (row.diff_lo, row.diff_hi) == pytest.approx(expected[1:3])
    # a method run on fewer seeds is compared on the seeds it shares with the baseline
    df = pd.concat([df, per_seed({"iw_dsm": [0.2]})])
    row = paired_to_baseline(df, "dsm_obs").set_index("method").loc["iw_dsm"]
    assert row.diff_n == 1 and row.diff_mean == pytest.approx(-0.3)


def test_a_baseline_with_the_same_setting_is_preferred():
    df = per_seed({"dsm_obs [steps=200]": [0.5, 0.5], "dsm_obs [steps=400]": [0.4, 0.4],
                   "tiw_dsm [steps=400]": [0.1, 0.1]})
    row = paired_to_baseline(df, "dsm_obs").set_index("method").loc["tiw_dsm [steps=400]"]
    assert row.diff_vs == "dsm_obs [steps=400]" and row.diff_mean == pytest.approx(-0.3)
