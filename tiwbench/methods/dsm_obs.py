"""DSM on the observed data D_obs = D_bias ∪ D_ref: the biased baseline."""

from .base import Method


class DSMObs(Method):
    """Plain EDM denoising score matching (Karras et al. 2022, eq. 2) on D_obs, no weights."""

    name = "dsm_obs"
    description = "DSM on D_bias ∪ D_ref, unweighted (biased baseline)"
    train_on = "obs"

    def loss(self, batch, denoiser, ratio=None, alpha=1.0):
        return batch.dsm_loss(denoiser(batch.x_sigma, batch.sigma), batch.x0)
