"""A ratio-estimator plugin: w_σ(x) as the ratio of two Gaussian kernel density estimates.

Noising a kernel density estimate with bandwidth h by σ gives one with bandwidth √(h² + σ²), so
one estimate serves every σ: log w_σ(x) = log p̂_ref,σ(x) − log p̂_bias,σ(x). No training, exact
gradients by autograd; sensible for low-dimensional data (the kernels cost N points per query).
"""

from __future__ import annotations

import math

import torch

from tiwbench.estimators import RatioEstimator, RatioOption
from tiwbench.ratio import DensityRatio


class KDERatio(DensityRatio):
    """log p̂_ref,σ(x) − log p̂_bias,σ(x) with Gaussian kernels of variance h² + σ²."""

    def __init__(self, x_ref: torch.Tensor, x_bias: torch.Tensor, h: float, time_dependent: bool):
        super().__init__()
        self.register_buffer("x_ref", x_ref.flatten(1).float())
        self.register_buffer("x_bias", x_bias.flatten(1).float())
        self.h, self.time_dependent = h, time_dependent

    def _log_density(self, x: torch.Tensor, points: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(x, points).pow(2)  # (B, N)
        return torch.logsumexp(-sq / (2 * var[:, None]), dim=1) - math.log(len(points))

    def log_ratio(self, x, sigma):
        x = x.flatten(1).float()
        s = sigma.float() if self.time_dependent else torch.zeros_like(sigma.float())
        var = self.h**2 + s**2  # the normalising constants cancel: both sets share the kernel
        return self._log_density(x, self.x_ref, var) - self._log_density(x, self.x_bias, var)


class KernelRatio(RatioEstimator):
    """The ratio of two kernel density estimates, exact under noise (see the module docstring)."""

    name = "kde"
    description = "ratio of two Gaussian kernel density estimates (no training; low-dimensional data)"
    options = (
        RatioOption("bandwidth", 0.0, "Kernel bandwidth h, in units of σ_data; 0: Scott's rule, "
                    "n^(−1/(d+4)) with n the smaller set's size.", lambda v: None if v >= 0 else "must be >= 0"),
        RatioOption("points", 2048, "At most this many points of each set (a random subset).",
                    lambda v: None if v >= 1 else "must be >= 1"),
    )

    def fit(self, request):
        data, opts = request.data, request.options
        g = torch.Generator().manual_seed(request.cfg.seed)

        def subset(x):
            return x[torch.randperm(len(x), generator=g)[:opts["points"]]]

        x_ref, x_bias = subset(data.x_ref), subset(data.x_bias)
        scott = min(len(x_ref), len(x_bias)) ** (-1 / (x_ref[0].numel() + 4))
        h = (opts["bandwidth"] or scott) * data.sigma_data
        return KDERatio(x_ref, x_bias, h, request.time_dependent)
