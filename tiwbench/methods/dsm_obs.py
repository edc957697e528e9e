"""DSM on the observed data D_obs = D_bias ∪ D_ref: the biased baseline, the paper's DSM(obs)."""

from .base import Method


class DSMObs(Method):
    """Plain EDM denoising score matching (Karras et al. 2022, eq. 2) on uniform draws from D_obs."""

    name = "dsm_obs"
    description = "DSM on uniform draws from D_bias ∪ D_ref (the paper's biased baseline)"
    fits = "training"
    train_on = "obs"
    stratified_batches = False

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        return batch.dsm_loss(denoiser(batch.x_sigma, batch.sigma), batch.x0)
