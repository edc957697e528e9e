import math

import pytest
import torch

from tiwbench.diffusion import Batch, Denoiser
from tiwbench.evaluate import ratio_error
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.methods.iw_dsm import IWDSM
from tiwbench.methods.tiw_dsm import TIWDSM
from tiwbench.methods.tiw_nocorr import TIWNoCorr
from tiwbench.nets.mlp import ConditionalMLP
from tiwbench.ratio import DensityRatio, LearnedRatio, RatioTrainConfig, TrainingRatio, log_r_and_grad, train_ratio


@pytest.mark.parametrize("pi", [0.0, 0.05, 0.5])
@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0, 40.0])
def test_mixture_correction_matches_exact_densities(gmm2d, pi, sigma):
    mix, wd, wb = gmm2d.mixture, gmm2d.w_data.double(), gmm2d.w_bias.double()
    mix64 = type(mix)(mix.means.double(), mix.std)
    exact = gmm2d.build(0.05, 0).exact_ratio(True)
    x = 3 * torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = torch.full((256,), sigma, dtype=torch.float64)
    log_r, grad = log_r_and_grad(exact, x, s, pi)
    # direct: r = p_data / (π p_data + (1 − π) p_bias)
    xg = x.clone().requires_grad_(True)
    lp_d, lp_b = mix64.log_prob(xg, wd, s), mix64.log_prob(xg, wb, s)
    direct = lp_d - torch.log(pi * lp_d.exp() + (1 - pi) * lp_b.exp())
    (direct_grad,) = torch.autograd.grad(direct.sum(), xg)
    assert torch.allclose(log_r, direct.detach(), atol=1e-9, rtol=1e-9)
    if pi == 0:  # the protocol's grad_log_ratio is ∇ log w, i.e. the π = 0 case
        assert torch.allclose(exact.grad_log_ratio(x, s), direct_grad, atol=1e-8, rtol=1e-7)
    assert torch.allclose(grad, direct_grad, atol=1e-8, rtol=1e-7)
    if pi > 0:
        assert log_r.exp().max() <= 1 / pi + 1e-9


class UnitRatio(DensityRatio):
    def log_ratio(self, x, sigma):
        return (0 * x).flatten(1).sum(1)


@pytest.mark.parametrize("method", [IWDSM(), TIWDSM(), TIWNoCorr()])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_unit_ratio_turns_weighted_methods_into_plain_dsm(method, alpha):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    den = Denoiser(ConditionalMLP(2, hidden=32, depth=1), 1.0)
    batch = Batch(torch.randn(64, 2, generator=g), torch.rand(64, generator=g) * 5 + 0.01,
                  torch.randn(64, 2, generator=g), den.precond)
    expected = DSMObs().loss(batch, den)
    assert expected.shape == (64,)
    assert torch.allclose(method.loss(batch, den, TrainingRatio(UnitRatio(), 0.3), alpha), expected, rtol=1e-6)


def test_time_dependent_discriminator_learns_the_ratio(gmm2d_data):
    data = gmm2d_data
    torch.manual_seed(0)
    model = LearnedRatio(ConditionalMLP(2, out_dim=1, hidden=64, depth=2), data.sigma_data, True)
    x0 = data.sample_bias(2000, torch.Generator().manual_seed(5))
    exact = data.exact_ratio(True)
    before = ratio_error(model, exact, x0, 0.05, 0, [0.5, 2.0])
    train_ratio(model, data.x_bias, data.x_ref, RatioTrainConfig(steps=600, lr=2e-3),
                torch.Generator().manual_seed(0))
    after = ratio_error(model, exact, x0, 0.05, 0, [0.5, 2.0])
    assert not any(p.requires_grad for p in model.parameters())
    for b, a in zip(before, after):
        # exact |log r| reaches log(0.25/0.7) ≈ −1.03 on the majority mode
        assert a["log_r_rmse"] < 0.35 and a["log_r_rmse"] < b["log_r_rmse"], (b, a)
    assert math.isfinite(after[0]["grad_rmse"])
