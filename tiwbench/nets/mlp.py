"""MLPs for vector data: the raw score network F_θ and the σ-conditioned discriminator."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise input c_noise (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_period: float = 100.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        args = 10.0 * c_noise[:, None].float() * self.freqs[None]
        return torch.cat([args.cos(), args.sin()], dim=1)


class ConditionalMLP(nn.Module):
    """x (B, D) and c_noise (B,) -> (B, out): residual SiLU blocks with an additive noise embedding."""

    def __init__(self, dim: int, out_dim: int | None = None, hidden: int = 256, depth: int = 3,
                 emb_dim: int = 64):
        super().__init__()
        self.embed = nn.Sequential(NoiseEmbedding(emb_dim), nn.Linear(emb_dim, hidden), nn.SiLU(),
                                   nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim if out_dim is None else out_dim))

    @property
    def features(self) -> int:
        return self.inp.out_features

    def encode(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """The last hidden state, (B, hidden): what a frozen-feature discriminator stands on."""
        emb = self.embed(c_noise)
        h = self.inp(x) + emb
        for block in self.blocks:
            h = h + block(h + emb)
        return h

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.out(self.encode(x, c_noise))
