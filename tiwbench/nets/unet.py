"""A DDPM++-style U-Net (Song et al. 2021, as configured in EDM's SongUNet), written from the paper.

Residual blocks with an additive noise-level embedding, self-attention at the 16×16 level,
dropout, skip scaling by √½, average-pool down- and nearest up-sampling. Presets:
`ddpmpp32` is the paper's CIFAR network (≈55.7M parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    img_channels: int = 3
    img_resolution: int = 32
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.13
    channel_mult_emb: int = 4


PRESETS = {
    "tiny": dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(), dropout=0.0),
    "ddpmpp32": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)),
    "ddpmpp64": dict(model_channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4, attn_resolutions=(16,)),
}


def unet_config(preset: str, img_channels: int, img_resolution: int, **overrides) -> UNetConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown U-Net preset {preset!r}; available: {', '.join(PRESETS)}")
    return UNetConfig(img_channels=img_channels, img_resolution=img_resolution,
                      **{**PRESETS[preset], **overrides})


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class PositionalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of c_noise (B,) -> (B, channels)."""

    def __init__(self, channels: int, max_positions: int = 10_000):
        super().__init__()
        freqs = (1 / max_positions) ** (torch.arange(channels // 2) / (channels // 2 - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        x = c_noise.float()[:, None] * self.freqs[None]
        return torch.cat([x.cos(), x.sin()], dim=1)


class UNetBlock(nn.Module):
    """GN-SiLU-conv, + embedding, GN-SiLU-dropout-conv, skip, ×√½; optional attention after."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float, up=False, down=False,
                 attention=False):
        super().__init__()
        self.up, self.down = up, down
        self.norm0, self.conv0 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, cout)
        self.norm1, self.conv1 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if (cin != cout or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = group_norm(cout)
            self.qkv, self.proj = nn.Conv2d(cout, 3 * cout, 1), nn.Conv2d(cout, cout, 1)

    def resample(self, x: Tensor) -> Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        orig = x
        x = self.conv0(self.resample(F.silu(self.norm0(x))))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None]))
        x = self.conv1(self.dropout(x))
        skip = self.resample(orig)
        x = (x + (self.skip(skip) if self.skip is not None else skip)) * math.sqrt(0.5)
        if self.attention:
            b, c, h, w = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, 3, c, h * w).unbind(1)  # (B, C, HW) each
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = (self.proj(a.transpose(1, 2).reshape(b, c, h, w)) + x) * math.sqrt(0.5)
        return x


class UNet(nn.Module):
    """F_θ(x_in, c_noise) for images (B, C, H, W); preconditioning lives in diffusion.Denoiser."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb = cfg.model_channels, cfg.model_channels * cfg.channel_mult_emb
        self.map_noise = PositionalEmbedding(mc)
        self.map0, self.map1 = nn.Linear(mc, emb), nn.Linear(emb, emb)
        block = lambda cin, cout, **kw: UNetBlock(cin, cout, emb, cfg.dropout, **kw)  # noqa: E731

        self.enc = nn.ModuleList()
        cout = cfg.img_channels
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                self.enc.append(nn.Conv2d(cout, mc, 3, padding=1))
                cout = mc
            else:
                self.enc.append(block(cout, cout, down=True))
            for _ in range(cfg.num_blocks):
                self.enc.append(block(cout, mc * mult, attention=res in cfg.attn_resolutions))
                cout = mc * mult
        skips = [m.conv1.out_channels if isinstance(m, UNetBlock) else m.out_channels for m in self.enc]
        self.features = sum(skips[i] for i in self._level_ends())  # of `encode`

        self.dec = nn.ModuleList()
        self.dec_takes_skip: list[bool] = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            if level == len(cfg.channel_mult) - 1:
                self.dec.extend([block(cout, cout, attention=True), block(cout, cout)])
                self.dec_takes_skip += [False, False]
            else:
                self.dec.append(block(cout, cout, up=True))
                self.dec_takes_skip.append(False)
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), mc * mult
                attn = idx == cfg.num_blocks and res in cfg.attn_resolutions
                self.dec.append(block(cin, cout, attention=attn))
                self.dec_takes_skip.append(True)
        self.out_norm, self.out_conv = group_norm(cout), nn.Conv2d(cout, cfg.img_channels, 3, padding=1)

    def _level_ends(self) -> list[int]:
        """Index in `enc` of each resolution level's last module."""
        per_level = self.cfg.num_blocks + 1
        return [per_level * (level + 1) - 1 for level in range(len(self.cfg.channel_mult))]

    def _embed(self, c_noise: Tensor) -> Tensor:
        return F.silu(self.map1(F.silu(self.map0(self.map_noise(c_noise)))))

    def _encoder_path(self, x: Tensor, emb: Tensor) -> list[Tensor]:
        skips = []
        for m in self.enc:
            x = m(x, emb) if isinstance(m, UNetBlock) else m(x)
            skips.append(x)
        return skips

    def encode(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """The encoder path's output at every resolution, averaged over space and concatenated,
        (B, features): what a frozen-feature discriminator stands on."""
        skips = self._encoder_path(x, self._embed(c_noise))
        return torch.cat([skips[i].mean(dim=(2, 3)) for i in self._level_ends()], dim=1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self._embed(c_noise)
        skips = self._encoder_path(x, emb)
        x = skips[-1]
        for m, takes_skip in zip(self.dec, self.dec_takes_skip):
            if takes_skip:
                x = torch.cat([x, skips.pop()], dim=1)
            x = m(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
