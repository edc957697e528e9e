"""The σ bands in which discriminators are selected and losses are tracked (torch-free: tables
and plots name them without loading torch)."""

from __future__ import annotations

import math

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # the sampler's range (EDM), also every σ grid's
SIGMA_PROPOSALS = ("log_uniform", "edm", "mixed")  # where the time-dependent discriminator trains
# the tilted base's clean weights w_0: the large-σ term's clean value, the time-independent
# discriminator's ratio, or whichever of the two held-out clean data prefer (ratio.choose_tilt_weights)
TILT_WEIGHTS = ("linear", "classifier", "select")

# Held-out evaluation grid: 12 log-spaced σ in 4 bands of 3 (the first bands are where a
# memorising discriminator does its damage, the last where TIW-DSM's correction is largest).
VAL_SIGMAS = [float(SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** (i / 11)) for i in range(12)]
N_BANDS = 4
BAND_EDGES = [math.sqrt(VAL_SIGMAS[3 * k + 2] * VAL_SIGMAS[3 * k + 3]) for k in range(N_BANDS - 1)]


def band_label(k: int) -> str:
    """σ range of band k, e.g. '0.4-7.2'."""
    lo = SIGMA_MIN if k == 0 else BAND_EDGES[k - 1]
    hi = SIGMA_MAX if k == N_BANDS - 1 else BAND_EDGES[k]
    return f"{lo:.2g}-{hi:.2g}"
