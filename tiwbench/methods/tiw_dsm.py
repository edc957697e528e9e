"""TIW-DSM (Kim et al. 2024, eq. 8 / Theorem 1): time-dependent weight and score correction."""

from ..diffusion import append_dims
from .base import Method


class TIWDSM(Method):
    """r_σ(x_σ)^α · λ(σ) · ‖D_θ(x_σ; σ) − x0 − α·σ²·∇ log r_σ(x_σ)‖² (per sample, not normalised).

    Its pointwise minimiser is the score of p_train,σ · r_σ^α: p_data,σ's score at α = 1.
    """

    name = "tiw_dsm"
    description = "DSM on D_obs with time-dependent importance weights and score correction"
    fits = "target"
    train_on = "obs"
    ratio = "time_dependent"
    correction = True

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        x_sigma = batch.x_sigma
        if self.correction:
            log_r, grad_log_r = ratio.log_r_and_grad(x_sigma, batch.sigma)
            target = batch.x0 + alpha * append_dims(batch.sigma**2, x_sigma.ndim) * grad_log_r
        else:
            log_r, target = ratio.log_r(x_sigma, batch.sigma), batch.x0
        err = batch.dsm_loss(denoiser(x_sigma, batch.sigma), target)
        return (alpha * log_r).exp() * err
