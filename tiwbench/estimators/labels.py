"""The label-informed ratio: the bound of any dataset whose bias reweights known groups."""

from __future__ import annotations

from .base import RatioEstimator


class LabelInformed(RatioEstimator):
    """w_σ(x) = Σ_g (t_g/b_g)·P_bias,σ(g | x) from a σ-conditioned group classifier trained on
    D_bias's group labels, which no method sees (tiwbench/label_ratio.py): a bound, not an estimate."""

    name = "labels"
    description = ("label-informed bound: Σ_g (t_g/b_g)·P_bias,σ(g|x) from a group classifier trained on "
                   "D_bias's labels, which no method sees")
    shared = ("ratio_steps", "ratio_batch_size", "ratio_lr")
    bound = "label-informed"

    def fit(self, request):
        from ..label_ratio import fit_label_ratio

        return fit_label_ratio(request)
