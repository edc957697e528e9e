"""Analytic Gaussian mixtures: exact perturbed densities, hence exact scores and ratios."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..nets.mlp import ConditionalMLP
from ..ratio import ExactRatio
from ..streams import fixed_generator, generator
from .base import BenchmarkData, DatasetRecipe


@dataclass(frozen=True)
class GaussianMixture:
    """Isotropic components N(μ_k, s²I) shared by p_data and p_bias, which differ in weights."""

    means: Tensor  # (K, D)
    std: float

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_prob(self, x: Tensor, weights: Tensor, sigma: Tensor) -> Tensor:
        """log p_σ(x) of the mixture convolved with N(0, σ²I); x (B, D), σ (B,) -> (B,)."""
        var = (self.std**2 + sigma.to(x.dtype) ** 2)[:, None]  # (B, 1)
        sq = (x[:, None, :] - self.means.to(x)[None]).pow(2).sum(-1)  # (B, K)
        log_n = -0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.logsumexp(log_n + weights.to(x).log()[None], dim=1)

    def sample(self, n: int, weights: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n draws and their component labels."""
        labels = torch.multinomial(weights, n, replacement=True, generator=generator)
        return self.draw(labels, generator), labels

    def draw(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One point of component labels[i] for each i."""
        return self.means[labels] + self.std * torch.randn(len(labels), self.dim, generator=generator)

    def sample_exact_shares(self, n: int, weights: Tensor, generator: torch.Generator) -> Tensor:
        """n draws whose component counts are the weights' largest-remainder rounding of n·w
        (a stratified draw: its composition is exactly the weights, up to rounding), shuffled."""
        quota = weights.double() * n
        counts = quota.floor().long()
        counts[torch.argsort(quota - counts, descending=True)[:n - int(counts.sum())]] += 1
        labels = torch.repeat_interleave(torch.arange(len(weights)), counts)
        return self.draw(labels[torch.randperm(n, generator=generator)], generator)

    def sample_posterior(self, x: Tensor, sigma: float, weights: Tensor, m: int,
                         generator: torch.Generator) -> Tensor:
        """m draws of x0 ~ p(x0 | x_σ = x) for each row of x; returns (B, m, D)."""
        var = self.std**2 + sigma**2
        sq = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        post = torch.softmax(-0.5 * sq / var + weights.log()[None], dim=1)  # (B, K)
        k = torch.multinomial(post, m, replacement=True, generator=generator)  # (B, m)
        mu = self.means[k]  # (B, m, D)
        mean = mu + self.std**2 / var * (x[:, None, :] - mu)
        return mean + self.std * sigma / math.sqrt(var) * torch.randn(mean.shape, generator=generator)

    def classify(self, x: Tensor) -> Tensor:
        """The nearest component: the Bayes classifier for equal weights."""
        return torch.cdist(x.float(), self.means.float()).argmin(1)

    def variance(self, weights: Tensor) -> float:
        """Mean per-dimension variance of the mixture: its σ_data²."""
        mean = (weights[:, None] * self.means).sum(0)
        spread = (weights[:, None] * (self.means - mean).pow(2)).sum(0).mean()
        return float(self.std**2 + spread)


REF_SAMPLING = ("iid", "stratified")


class MixtureRecipe(DatasetRecipe):
    """A biased and an unbiased weighting of one Gaussian mixture. `ref_sampling` draws D_ref
    i.i.d. from p_data (the default, as in real life: its composition is off the target by the
    reference-composition floor) or `stratified`, with exactly the target's component counts."""

    has_exact_ratio = True
    nets = ("mlp",)
    n_bias: int
    n_eval: int = 20_000
    hidden: int = 128

    def __init__(self, mixture: GaussianMixture, w_data: Tensor, w_bias: Tensor, ref_sampling: str = "iid"):
        if ref_sampling not in REF_SAMPLING:
            raise ValueError(f"ref_sampling must be one of {', '.join(REF_SAMPLING)}, got {ref_sampling!r}")
        self.mixture, self.w_data, self.w_bias = mixture, w_data, w_bias
        self.ref_sampling = ref_sampling

    def build(self, ref: float, seed: int, data_root: Path | None = None,
              cache_dir: Path | None = None) -> BenchmarkData:
        g = generator(seed, "data")
        x_bias, bias_labels = self.mixture.sample(self.n_bias, self.w_bias, g)
        n_ref = max(1, round(ref * self.n_bias))
        stratified = self.ref_sampling == "stratified"
        x_ref = (self.mixture.sample_exact_shares(n_ref, self.w_data, g) if stratified
                 else self.mixture.sample(n_ref, self.w_data, g)[0])
        x_eval, eval_labels = self.mixture.sample(self.n_eval, self.w_data,
                                                  fixed_generator("eval"))
        mix = self.mixture

        def exact_ratio(time_dependent: bool) -> ExactRatio:
            return ExactRatio(lambda x, s: mix.log_prob(x, self.w_data, s),
                              lambda x, s: mix.log_prob(x, self.w_bias, s), time_dependent)

        return BenchmarkData(
            x_bias=x_bias, x_ref=x_ref, x_eval=x_eval, eval_labels=eval_labels,
            target_shares=self.w_data.clone(), sigma_data=math.sqrt(mix.variance(self.w_data)),
            attribute=mix.classify, features=lambda x: x, feature_space="data",
            exact_ratio=exact_ratio, ref_stratified=stratified, bias_labels=bias_labels,
            sample_bias=lambda n, gen: mix.sample(n, self.w_bias, gen)[0])

    def score_net(self, preset: str = ""):
        return ConditionalMLP(self.mixture.dim, hidden=self.hidden, depth=3)

    def ratio_net(self):
        return ConditionalMLP(self.mixture.dim, out_dim=1, hidden=self.hidden, depth=2)


class GMM2D(MixtureRecipe):
    name = "gmm2d"
    description = "4 Gaussians at (±2, ±2), std 0.3; D_bias 20k with 70% on (−2, −2); uniform target"
    n_bias = 20_000
    defaults = {"steps": 4000, "batch_size": 512, "ratio_steps": 6000, "num_samples": 10_000}

    def __init__(self, ref_sampling: str = "iid"):
        means = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
        super().__init__(GaussianMixture(means, 0.3), torch.full((4,), 0.25),
                         torch.tensor([0.7, 0.1, 0.1, 0.1]), ref_sampling)


class GMMHighDim(MixtureRecipe):
    name = "gmm_hd"
    description = ("32-d mixture of 4 Gaussians, D_bias 4k (70/10/10/10); a clean-data "
                   "discriminator memorises the small reference set")
    n_bias = 4_000
    n_eval = 10_000
    defaults = {"steps": 4000, "batch_size": 512, "ratio_steps": 6000, "num_samples": 10_000}

    def __init__(self, dim: int = 32, ref_sampling: str = "iid"):
        dim = int(dim)
        if dim < 4:
            raise ValueError(f"dim must be an integer >= 4 (four orthogonal means), got {dim}")
        g = torch.Generator().manual_seed(0)
        means = 4.0 * torch.linalg.qr(torch.randn(dim, 4, generator=g))[0].T  # orthogonal, |μ_k| = 4
        super().__init__(GaussianMixture(means, 1.0), torch.full((4,), 0.25),
                         torch.tensor([0.7, 0.1, 0.1, 0.1]), ref_sampling)
