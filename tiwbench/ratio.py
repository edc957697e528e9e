"""Density-ratio models w_σ = p_data,σ / p_bias,σ: trained discriminators and exact oracles.

A ratio model gives log w_σ(x). What a method needs is the ratio to the distribution its score
network trains on, p_train = π·p_data + (1 − π)·p_bias, that is r_σ = w_σ / (π·w_σ + 1 − π)
(docs/design.md §2), and for TIW-DSM its input gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .diffusion import SIGMA_MIN, Precond, append_dims, sample_log_uniform_sigma, to_model_space
from .errors import Interrupted
from .signals import stop_requests


class DensityRatio(nn.Module):
    """Base class: subclasses implement `log_ratio(x, sigma) -> (B,)` = log w_σ(x)."""

    time_dependent: bool = True

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def grad_log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        """∇ₓ log w_σ(x), by autograd; the model's parameters get no gradient."""
        return log_r_and_grad(self, x, sigma, pi=0.0)[1]

    def compiled(self) -> DensityRatio:
        """A torch.compile'd view sharing this model's parameters (itself where nothing is to gain)."""
        return self


def mixture_log_r(log_w: Tensor, pi: float) -> Tensor:
    """log r = log w − log(π·w + 1 − π): the ratio to the training mixture, bounded by 1/π."""
    if pi <= 0.0:
        return log_w
    return log_w - torch.logaddexp(log_w + math.log(pi), torch.full_like(log_w, math.log1p(-pi)))


def log_r_and_grad(model: DensityRatio, x: Tensor, sigma: Tensor, pi: float) -> tuple[Tensor, Tensor]:
    """log r_σ(x) and ∇ₓ log r_σ(x) from one forward and one backward, both detached.

    Since d log r / d log w = 1 − π·r, the mixture correction costs nothing extra.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_w = model.log_ratio(x, sigma)
        if log_w.dtype in (torch.bfloat16, torch.float16):  # weights in fp32 under autocast
            log_w = log_w.float()
        (grad_w,) = torch.autograd.grad(log_w.sum(), x)
    log_r = mixture_log_r(log_w.detach(), pi)
    grad_r = append_dims(1 - pi * log_r.exp(), x.ndim) * grad_w
    return log_r, grad_r


class TrainingRatio:
    """What a method sees of the density ratio: r_σ = p_data,σ / p_train,σ, the ratio to the
    distribution its score network trains on (π folded in, docs/design.md §2)."""

    def __init__(self, model: DensityRatio, pi: float):
        self.model, self.pi = model, pi

    @property
    def time_dependent(self) -> bool:
        return self.model.time_dependent

    def log_r(self, x: Tensor, sigma: Tensor) -> Tensor:
        """log r_σ(x), detached: a weight, not a path for gradients."""
        return mixture_log_r(self.model.log_ratio(x, sigma).detach(), self.pi)

    def log_r_and_grad(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """log r_σ(x) and ∇ₓ log r_σ(x), both detached, from one forward and one backward."""
        return log_r_and_grad(self.model, x, sigma, self.pi)


class ExactRatio(DensityRatio):
    """The oracle: log w from the exact perturbed log-densities of an analytic dataset."""

    def __init__(self, log_p_data: Callable[[Tensor, Tensor], Tensor],
                 log_p_bias: Callable[[Tensor, Tensor], Tensor], time_dependent: bool = True):
        super().__init__()
        self.log_p_data, self.log_p_bias = log_p_data, log_p_bias
        self.time_dependent = time_dependent

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        if not self.time_dependent:
            sigma = torch.zeros_like(sigma)
        return self.log_p_data(x, sigma) - self.log_p_bias(x, sigma)


class LearnedRatio(DensityRatio):
    """A discriminator logit ℓ_φ(c_in(σ)·x, c_noise(σ)) ≈ log w_σ(x).

    The time-independent variant is trained and evaluated at σ_min only, i.e. on clean data.
    `net(x_in, c_noise)` must return (B, 1); any backbone with that signature plugs in.
    """

    def __init__(self, net: nn.Module, sigma_data: float, time_dependent: bool):
        super().__init__()
        self.net, self.precond, self.time_dependent = net, Precond(sigma_data), time_dependent

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        if not self.time_dependent:
            sigma = torch.full_like(sigma, SIGMA_MIN)
        s = append_dims(sigma, x.ndim)
        return self.net(self.precond.c_in(s) * x, self.precond.c_noise(sigma)).reshape(-1)

    def compiled(self) -> LearnedRatio:
        # autograd.grad in log_r_and_grad breaks a graph around it; the network's forward and
        # its input backward are what compile, so the network alone is wrapped
        return LearnedRatio(torch.compile(self.net), self.precond.sigma_data, self.time_dependent).eval()


@dataclass(frozen=True)
class RatioTrainConfig:
    """How a discriminator is trained: BCE on class-balanced batches (D_ref = 1, D_bias = 0)."""

    steps: int = 6000
    batch_size: int = 512  # half from each set
    lr: float = 1e-3


def train_ratio(model: LearnedRatio, x_bias: Tensor, x_ref: Tensor, cfg: RatioTrainConfig,
                generator: torch.Generator, on_step: Callable[[int], None] = lambda step: None) -> LearnedRatio:
    """Train `model` so that its logit estimates log w_σ; σ is log-uniform over the sampler's range.

    Each class contributes half of every batch, so the Bayes-optimal logit is log p_ref,σ / p_bias,σ.
    """
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    half = cfg.batch_size // 2
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    model.train()
    with stop_requests() as stop:
        for step in range(cfg.steps):
            if stop:
                raise Interrupted(f"interrupted during ratio training at step {step}/{cfg.steps} "
                                  "(ratio models are not checkpointed); run the same command again")
            _ratio_step(model, opt, sched, x_bias, x_ref, half, labels, generator, device)
            on_step(step + 1)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _ratio_step(model, opt, sched, x_bias, x_ref, half, labels, generator, device) -> None:
    """One BCE step on a class-balanced batch of noised samples."""
    i_ref = torch.randint(len(x_ref), (half,), generator=generator)
    i_bias = torch.randint(len(x_bias), (half,), generator=generator)
    x0 = to_model_space(torch.cat([x_ref[i_ref], x_bias[i_bias]]).to(device))
    if model.time_dependent:
        sigma = sample_log_uniform_sigma(2 * half, generator).to(device)
    else:
        sigma = torch.full((2 * half,), SIGMA_MIN, device=device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    logits = model.log_ratio(x0 + append_dims(sigma, x0.ndim) * noise, sigma)
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
