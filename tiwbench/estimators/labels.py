"""The label-informed ratio: the bound of any dataset whose bias reweights known groups."""

from __future__ import annotations

from ..config import at_least
from .base import RatioEstimator, RatioOption


class LabelInformed(RatioEstimator):
    """w_σ(x) = Σ_g (t_g/b_g)·P_bias,σ(g | x) from a σ-conditioned group classifier trained on
    D_bias's group labels, which no method sees (tiwbench/label_ratio.py): a bound, not an estimate."""

    name = "labels"
    description = ("label-informed bound: Σ_g (t_g/b_g)·P_bias,σ(g|x) from a group classifier trained on "
                   "D_bias's labels, which no method sees")
    shared = ("ratio_steps", "ratio_batch_size", "ratio_lr")
    bound = "label-informed"
    # A bound must be trained to its limit: the noise-conditional classifier spreads its steps over
    # σ from 0.002 to 80 and on shapes16 still told the shapes apart on only 57 % of clean held-out
    # images after the discriminator's 800 steps (100 % after 4,800; docs/design.md §4).
    options = (
        RatioOption("steps_factor", 6, "the noise-conditional group classifier trains for steps_factor × "
                    "--ratio-steps steps (the clean-data one for --ratio-steps)", at_least(1), legacy=1),
    )

    def unused_options(self, kind, values):
        return set() if kind == "time_dependent" else {"steps_factor"}

    def fit(self, request):
        from ..label_ratio import fit_label_ratio

        return fit_label_ratio(request)
