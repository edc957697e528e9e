"""Correction only (the paper's ablation): unit weights, TIW-DSM's corrected target."""

from ..diffusion import append_dims
from .tiw_dsm import TIWDSM


class TIWCorr(TIWDSM):
    """λ(σ)·‖D_θ(x_σ; σ) − x0 − α·σ²·∇ log r_σ(x_σ)‖² on D_obs, every sample weighted 1.

    Its pointwise minimiser is E_train[x0 | x_σ] + α·σ²·∇log r_σ(x_σ). By Tweedie,
    E_train[x0 | x_σ] = x_σ + σ²·∇log p_train,σ(x_σ), so the minimiser is
    x_σ + σ²·∇log(p_train,σ · r_σ^α)(x_σ): at α = 1, with r = p_data,σ / p_train,σ, the denoiser
    of p_data,σ — the same minimiser as TIW-DSM, without the variance of the weights (but with the
    target's: the whole debiasing rests on the ratio's gradient).
    """

    name = "tiw_corr"
    description = "DSM on D_obs with TIW-DSM's score correction and unit weights (ablation)"

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        x_sigma = batch.x_sigma
        _, grad_log_r = ratio.log_r_and_grad(x_sigma, batch.sigma)
        target = batch.x0 + alpha * append_dims(batch.sigma**2, x_sigma.ndim) * grad_log_r
        return batch.dsm_loss(denoiser(x_sigma, batch.sigma), target)
