"""EDM (Karras et al. 2022) noise levels, preconditioning, loss weight and Heun sampler."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .bands import SIGMA_MAX, SIGMA_MIN  # noqa: F401 - the sampler's range, re-exported

P_MEAN, P_STD = -1.2, 1.2
RHO = 7.0


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) tensor so that it broadcasts against a (B, ...) tensor of `ndim` dims."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def to_model_space(x: Tensor) -> Tensor:
    """uint8 images (stored compactly by real datasets) to floats in [−1, 1]; floats pass through."""
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x


def sample_training_sigma(n: int, generator: torch.Generator, device=None) -> Tensor:
    """ln σ ~ N(P_mean, P_std²), EDM Table 1."""
    z = torch.randn(n, generator=generator, device=device)
    return (P_MEAN + P_STD * z).exp()


def sample_log_uniform_sigma(n: int, generator: torch.Generator, device=None,
                             lo: float = SIGMA_MIN, hi: float = SIGMA_MAX) -> Tensor:
    """σ log-uniform over [lo, hi]: covers every noise level the sampler visits."""
    u = torch.rand(n, generator=generator, device=device)
    return (math.log(lo) + u * (math.log(hi) - math.log(lo))).exp()


@dataclass(frozen=True)
class Precond:
    """EDM preconditioning coefficients for a given σ_data (EDM Table 1)."""

    sigma_data: float

    def c_skip(self, sigma: Tensor) -> Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: Tensor) -> Tensor:
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1 / (sigma**2 + self.sigma_data**2).sqrt()

    @staticmethod
    def c_noise(sigma: Tensor) -> Tensor:
        return sigma.log() / 4

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_data²) / (σ·σ_data)²."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class Denoiser(nn.Module):
    """D_θ(x; σ) = c_skip·x + c_out·F_θ(c_in·x, c_noise); `net` is the raw network F_θ."""

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.net = net
        self.precond = Precond(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        p, s = self.precond, append_dims(sigma, x.ndim)
        f = self.net(p.c_in(s) * x, p.c_noise(sigma))
        return p.c_skip(s) * x + p.c_out(s) * f


@dataclass
class Batch:
    """One draw shared by every method: clean x0, noise levels σ (B,), noise ε and x_σ = x0 + σ·ε,
    with the preconditioning whose loss weight λ(σ) the DSM loss uses."""

    x0: Tensor
    sigma: Tensor
    noise: Tensor
    precond: Precond

    @property
    def x_sigma(self) -> Tensor:
        return self.x0 + append_dims(self.sigma, self.x0.ndim) * self.noise

    def dsm_loss(self, denoised: Tensor, target: Tensor) -> Tensor:
        """Per-sample λ(σ)·‖D − target‖², averaged over data dimensions; shape (B,)."""
        err = (denoised - target).flatten(1).pow(2).mean(1)
        return self.precond.loss_weight(self.sigma) * err


def dsm_loss(denoised: Tensor, target: Tensor, sigma: Tensor, precond: Precond) -> Tensor:
    """Deprecated alias (plugin API 1) of `Batch.dsm_loss`: per-sample λ(σ)·‖D − target‖²."""
    import warnings

    warnings.warn("tiwbench.diffusion.dsm_loss is deprecated; use batch.dsm_loss(denoised, target)",
                  DeprecationWarning, stacklevel=2)
    return precond.loss_weight(sigma) * (denoised - target).flatten(1).pow(2).mean(1)


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO, device=None) -> Tensor:
    """EDM eq. 5: σ_i from σ_max down to σ_min with ρ-spacing, then a final 0."""
    if steps < 2:
        raise ValueError("the Heun sampler needs at least 2 steps")
    i = torch.arange(steps, dtype=torch.float64, device=device)
    t = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=t.dtype, device=device)])


DenoiseFn = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def heun_sample(denoise: DenoiseFn, noise: Tensor, steps: int = 18,
                sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> Tensor:
    """EDM Algorithm 1 (deterministic): Euler step, then a 2nd-order correction except at σ = 0.

    `noise` is a standard normal draw; `denoise(x, sigma)` takes σ of shape (B,).
    """
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, device=noise.device)
    x = noise.to(torch.float64) * sigmas[0]
    ones = torch.ones(x.shape[0], dtype=noise.dtype, device=noise.device)

    def d(x_: Tensor, s: Tensor) -> Tensor:  # dx/dσ = (x − D(x; σ)) / σ
        den = denoise(x_.to(noise.dtype), ones * s.to(noise.dtype)).to(torch.float64)
        return (x_ - den) / s

    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        d_cur = d(x, s_cur)
        x_next = x + (s_next - s_cur) * d_cur  # Euler step
        if s_next > 0:  # Heun correction
            x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d(x_next, s_next))
        x = x_next
    return x.to(noise.dtype)
