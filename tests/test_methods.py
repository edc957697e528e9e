"""The TIW-DSM loss's pointwise minimiser is the data score (Theorem 1), checked in closed form."""

import pytest
import torch

from tiwbench.diffusion import Batch, Precond
from tiwbench.methods.tiw_corr import TIWCorr
from tiwbench.methods.tiw_dsm import TIWDSM
from tiwbench.methods.tiw_nocorr import TIWNoCorr
from tiwbench.ratio import TrainingRatio


class ConstantDenoiser(torch.nn.Module):
    """Outputs a free tensor D (one row per query point, repeated over its posterior draws)."""

    def __init__(self, d, m):
        super().__init__()
        self.d, self.m = d, m

    def forward(self, x, sigma):
        return self.d.repeat_interleave(self.m, dim=0)


def loss_minimiser(method, ratio, x, sigma, x0_post, pi):
    """argmin_D of the method's summed loss over x0 ~ p_train(x0 | x_σ = x): the loss is quadratic
    in D per coordinate, so one Newton step from two gradient evaluations is exact."""
    p, m, dim = x.shape[0], x0_post.shape[1], x.shape[1]
    x0 = x0_post.reshape(p * m, dim)
    xs = x.repeat_interleave(m, dim=0)
    s = torch.full((p * m,), sigma, dtype=x.dtype)
    batch = Batch(x0, s, (xs - x0) / sigma, Precond(2.0))

    def grad_at(d0):
        d = d0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(method.loss(batch, ConstantDenoiser(d, m), TrainingRatio(ratio, pi)).sum(), d)
        return g

    d0, d1 = torch.zeros_like(x), torch.ones_like(x)
    g0, g1 = grad_at(d0), grad_at(d1)
    return d0 - g0 / (g1 - g0)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0, 8.0])
def test_tiw_dsm_minimiser_is_the_data_score(gmm2d, gmm2d_data, sigma):
    mix = type(gmm2d.mixture)(gmm2d.mixture.means.double(), gmm2d.mixture.std)
    pi = 0.05
    w_train = (pi * gmm2d.w_data + (1 - pi) * gmm2d.w_bias).double()
    g = torch.Generator().manual_seed(0)
    x = mix.sample(16, gmm2d.w_data.double(), g)[0].double() + sigma * torch.randn(16, 2, generator=g)
    x0_post = mix.sample_posterior(x, sigma, w_train, 40_000, g).double()
    ratio = gmm2d_data.exact_ratio(True)

    d_star = loss_minimiser(TIWDSM(), ratio, x, sigma, x0_post, pi)
    d_corr = loss_minimiser(TIWCorr(), ratio, x, sigma, x0_post, pi)  # unit weights, same minimiser
    s = torch.full((16,), sigma, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (score_data,) = torch.autograd.grad(mix.log_prob(xg, gmm2d.w_data.double(), s).sum(), xg)
    d_data = x + sigma**2 * score_data  # the denoiser of p_data,σ
    (score_train,) = torch.autograd.grad(mix.log_prob(xg, w_train, s).sum(), xg)
    d_train = x + sigma**2 * score_train
    tol = 0.03 + 0.02 * sigma  # Monte-Carlo error of the posterior mean
    assert (d_star - d_data).abs().max() < tol
    assert (d_corr - d_data).abs().max() < tol
    # the ablation without correction learns the biased (training) score instead
    d_nocorr = loss_minimiser(TIWNoCorr(), ratio, x, sigma, x0_post, pi)
    assert (d_nocorr - d_train).abs().max() < tol
    if sigma >= 2.0:  # where the modes merge, the two targets differ clearly
        assert (d_data - d_train).abs().max() > 5 * tol


@pytest.mark.slow
def test_short_tiw_dsm_run_with_the_oracle_ratio_is_unbiased(tmp_path):
    from tiwbench.config import resolve_config
    from tiwbench.run import execute

    # uniform draws from D_obs (π = 1/21): the weights and the correction do all the debiasing
    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="exact", steps=1500, num_samples=5000, ref_share=0.0)
    record = execute(cfg, tmp_path)
    assert record.ratio_source == "exact"
    assert record.metrics["bias_l2"] <= 0.05, record.shares
    # the same budget without debiasing stays biased, so the bound above can fail
    biased = execute(resolve_config("dsm_obs", "gmm2d", 0.05, steps=1500, num_samples=5000, ref_share=0.0),
                     tmp_path)
    assert biased.metrics["bias_l2"] >= 0.3, biased.shares


class ExactGuidance(TIWDSM):
    """Discriminator guidance: D + σ²·∇ log r_σ at sampling time (only `guidance` is used here)."""

    name = "guidance_test"

    def guidance(self, x, sigma, ratio, alpha=1.0):
        from tiwbench.diffusion import append_dims

        return append_dims(sigma**2, x.ndim) * ratio.log_r_and_grad(x, sigma)[1]


@pytest.mark.parametrize("pi", [0.0, 0.3])
def test_sampling_guidance_with_the_exact_ratio_recovers_the_data_shares(gmm2d, gmm2d_data, pi):
    """The trained-on distribution's exact denoiser (p_bias for π = 0, the D_obs mixture for
    π = 0.3), shifted by the method's guidance with the exact ratio, samples p_data; without the
    guidance it samples the training distribution (the test can tell the two apart)."""
    from helpers import exact_denoiser

    from tiwbench.diffusion import heun_sample
    from tiwbench.evaluate import bias_metrics
    from tiwbench.methods.base import guided
    from tiwbench.methods.dsm_obs import DSMObs

    mix = gmm2d.mixture
    w_data, w_bias = gmm2d.w_data.double(), gmm2d.w_bias.double()
    w_train = pi * w_data + (1 - pi) * w_bias
    denoise = exact_denoiser(type(mix)(mix.means.double(), mix.std), w_train)
    ratio = gmm2d_data.exact_ratio(True)
    noise = torch.randn(8000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for method, target in ((ExactGuidance(), w_data), (DSMObs(), w_train)):
        x = heun_sample(guided(denoise, method, TrainingRatio(ratio, pi)), noise, steps=18)
        shares = torch.tensor(bias_metrics(mix.classify(x), w_data.float())["shares"], dtype=torch.float64)
        assert (shares - target).abs().max() < 0.02, (type(method).__name__, shares, target)
    assert guided(denoise, DSMObs(), TrainingRatio(ratio, pi)) is denoise
