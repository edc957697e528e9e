"""DSM on D_obs, debiased at sampling time only: discriminator guidance (Kim et al. 2023)."""

from tiwbench.diffusion import append_dims
from tiwbench.methods.dsm_obs import DSMObs


class DSMGuided(DSMObs):
    """Plain DSM on D_obs; while sampling, D(x; σ) + α·σ²·∇ log r_σ(x) with the time-dependent ratio
    to the training mixture, which at α = 1 and an exact ratio is the denoiser of p_data."""

    name = "dsm_dg"
    description = "example plugin: DSM on D_obs with discriminator guidance at sampling time"
    train_on = "obs"
    ratio = "time_dependent"

    def guidance(self, x, sigma, ratio, alpha=1.0):
        return alpha * append_dims(sigma**2, x.ndim) * ratio.log_r_and_grad(x, sigma)[1]
