"""IW-DSM: importance weights from a clean-data discriminator (Choi et al. 2020 style)."""

from .base import Method


class IWDSM(Method):
    """r(x0)^α · λ(σ)·‖D_θ(x_σ; σ) − x0‖², with r from the time-independent ratio (no normalisation)."""

    name = "iw_dsm"
    description = "DSM on D_obs weighted by a time-independent (clean-data) density ratio"
    fits = "target"
    train_on = "obs"
    ratio = "time_independent"

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        log_r = ratio.log_r(batch.x0, batch.sigma)  # the time-independent ratio ignores σ
        err = batch.dsm_loss(denoiser(batch.x_sigma, batch.sigma), batch.x0)
        return (alpha * log_r).exp() * err
