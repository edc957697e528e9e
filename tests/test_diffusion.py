import torch
from helpers import exact_denoiser

from tiwbench.diffusion import Precond, heun_sample, karras_sigmas
from tiwbench.evaluate import bias_metrics


def test_karras_sigmas_run_from_max_to_min_then_zero():
    s = karras_sigmas(18)
    assert len(s) == 19 and s[-1] == 0
    assert torch.isclose(s[0], torch.tensor(80.0, dtype=s.dtype))
    assert torch.isclose(s[-2], torch.tensor(0.002, dtype=s.dtype))
    assert (s[:-1].diff() < 0).all()


def test_preconditioning_is_edm_table_1():
    p, s = Precond(0.5), torch.tensor([0.1, 1.0, 10.0])
    # D(x) = c_skip x + c_out F must have unit-variance training target (EDM eq. 8)
    assert torch.allclose(p.c_skip(s) ** 2 * s**2 + (1 - p.c_skip(s)) ** 2 * 0.25, p.c_out(s) ** 2)
    assert torch.allclose(p.loss_weight(s), 1 / p.c_out(s) ** 2)
    assert torch.allclose(p.c_in(s) ** 2 * (s**2 + 0.25), torch.ones(3))


def test_heun_with_exact_score_reproduces_component_shares(gmm2d):
    mix, w = gmm2d.mixture, gmm2d.w_bias.double()
    mix64 = type(mix)(mix.means.double(), mix.std)
    noise = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = heun_sample(exact_denoiser(mix64, w), noise, steps=18)
    shares = torch.tensor(bias_metrics(mix.classify(x), w)["shares"])
    assert (shares - w.float()).abs().max() < 0.02, shares
    # and the samples sit on the modes with the right spread
    resid = x - mix64.means[mix.classify(x)]
    assert abs(resid.std().item() - mix.std) < 0.02
