"""TIW-DSM with the weight r_σ^α clipped at `max_weight`: a common variance-reduction variant."""

from tiwbench.diffusion import append_dims
from tiwbench.methods.base import Method


class TIWDSMClipped(Method):
    """min(r_σ(x_σ)^α, max_weight) · λ(σ)·‖D_θ(x_σ; σ) − x0 − α·σ²·∇ log r_σ(x_σ)‖²."""

    name = "tiw_dsm_clip"
    description = "example plugin: TIW-DSM with importance weights clipped at 5"
    train_on = "obs"
    ratio = "time_dependent"
    max_weight = 5.0

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        x_sigma = batch.x_sigma
        log_r, grad_log_r = ratio.log_r_and_grad(x_sigma, batch.sigma)
        target = batch.x0 + alpha * append_dims(batch.sigma**2, x_sigma.ndim) * grad_log_r
        weight = (alpha * log_r).exp().clamp(max=self.max_weight)
        return weight * batch.dsm_loss(denoiser(x_sigma, batch.sigma), target)
