"""The exact density ratio of the analytic datasets: the upper bound of every ratio method."""

from __future__ import annotations

from ..errors import TiwbenchError
from .base import RatioEstimator


class Exact(RatioEstimator):
    """w_σ = p_data,σ / p_bias,σ from the dataset's closed-form perturbed densities."""

    name = "exact"
    description = "the exact ratio of the analytic datasets (an upper bound, not an estimate)"
    bound = "exact"
    needs_exact = True

    def fit(self, request):
        if request.data.exact_ratio is None:
            raise TiwbenchError(f"--ratio exact needs an exact density ratio, which dataset "
                                f"{request.cfg.dataset!r} does not have")
        return request.data.exact_ratio(request.time_dependent)
