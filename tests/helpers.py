"""Shared test helpers."""

import torch


def exact_denoiser(mixture, weights):
    """D(x; σ) = x + σ²·∇ log p_σ(x), the exact denoiser of a Gaussian mixture."""
    def denoise(x, sigma):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(mixture.log_prob(x, weights, sigma).sum(), x)
        return x.detach() + sigma[:, None] ** 2 * g
    return denoise
