"""σ-conditioned discriminators: a convolutional one trained from scratch for images, and a small
head on a frozen encoder (`--ratio-backbone`: the dsm_obs score network's encoder, or a user's
TorchScript one), as the paper's stands on its pretrained ADM classifier.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import NoiseEmbedding
from .unet import PositionalEmbedding, UNetBlock, group_norm


class ConvEncoder(nn.Module):
    """Residual blocks with the noise embedding, halving the resolution at each level, then
    global average pooling: (B, C, H, W), (B,) -> (B, features)."""

    def __init__(self, img_channels: int, channels: int = 32, channel_mult=(1, 2, 2), dropout: float = 0.0):
        super().__init__()
        emb = 4 * channels
        self.map_noise = PositionalEmbedding(channels)
        self.map = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.conv_in = nn.Conv2d(img_channels, channels, 3, padding=1)
        blocks, c = [], channels
        for level, mult in enumerate(channel_mult):
            blocks.append(UNetBlock(c, channels * mult, emb, dropout, down=level > 0))
            c = channels * mult
        self.blocks = nn.ModuleList(blocks)
        self.norm = group_norm(c)
        self.features = c

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.map(self.map_noise(c_noise))
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x, emb)
        return F.silu(self.norm(x)).mean(dim=(2, 3))


class ConvDiscriminator(nn.Module):
    """logit = head(backbone(x_in, c_noise)); returns (B, 1) as LearnedRatio expects."""

    def __init__(self, img_channels: int, backbone: nn.Module | None = None, **encoder_kwargs):
        super().__init__()
        self.backbone = backbone if backbone is not None else ConvEncoder(img_channels, **encoder_kwargs)
        self.head = nn.Linear(self.backbone.features, 1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.head(self.backbone(x, c_noise))


class FrozenEncoder(nn.Module):
    """A pretrained encoder (x_in, c_noise) -> (B, features), frozen: no parameter trains and it
    stays in eval mode whatever mode its owner is put in; gradients still reach the input."""

    def __init__(self, encoder: nn.Module, features: int):
        super().__init__()
        self.encoder, self.features = encoder.eval(), features
        for p in encoder.parameters():  # (a TorchScript module has no requires_grad_)
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        self.training = mode
        return self

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.encoder(x, c_noise)


class ScoreEncoder(nn.Module):
    """A score network seen through its `encode` (nets.mlp.ConditionalMLP, nets.unet.UNet)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.features = net, net.features

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.net.encode(x, c_noise)


class HeadOnFeatures(nn.Module):
    """logit = MLP(LayerNorm(features) → hidden, + a noise embedding, SiLU → 1) on a frozen
    encoder: the paper's discriminator shape, a small trainable head on a noise-aware encoder."""

    def __init__(self, encoder: FrozenEncoder, hidden: int = 128):
        super().__init__()
        self.encoder = encoder
        self.norm, self.inp = nn.LayerNorm(encoder.features), nn.Linear(encoder.features, hidden)
        self.embed = nn.Sequential(NoiseEmbedding(64), nn.Linear(64, hidden))
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        h = self.inp(self.norm(self.encoder(x, c_noise).float())) + self.embed(c_noise)
        return self.out(F.silu(h))
