"""σ-conditioned convolutional discriminator for images: a pluggable backbone and a linear head.

The backbone maps (x_in, c_noise) to a feature vector; a frozen pretrained extractor (as in the
paper's ADM classifier) can replace the default one without touching the methods.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

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
