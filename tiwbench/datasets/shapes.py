"""`shapes32` and `shapes16`: procedural RGB images with two binary attributes (four subgroups),
the offline stand-in for CelebA's gender × black-hair benchmark. Fresh samples are unlimited.
shapes16 is the CPU-sized one: 16×16, a reference set of exactly the target shares."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..streams import fixed_generator, generator
from .base import Splits
from .images import ImageRecipe

# Subgroup g = square + 2·dark, in CelebA's order (female-other, male-other, female-black, male-black).
BIAS_SHARES = (0.465, 0.296, 0.115, 0.124)


def render_shapes(groups: Tensor, generator: torch.Generator, size: int = 32) -> Tensor:
    """One image per group label: a circle (g % 2 = 0) or square (g % 2 = 1), light (g < 2) or
    dark (g >= 2), at a random place, size and hue, on a noisy mid-grey gradient; in [−1, 1]."""
    n, scale = len(groups), size / 32  # places and radii scale with the size; edges stay a pixel wide
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    square, dark = (groups % 2 == 1)[:, None, None], (groups >= 2)[:, None, None]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = coords[None, :, None], coords[None, None, :]
    cx, cy = (scale * (10 + 12 * rand(n)))[:, None, None], (scale * (10 + 12 * rand(n)))[:, None, None]
    r = (scale * (6 + 4 * rand(n)))[:, None, None]
    dist = torch.where(square, torch.maximum((xx - cx).abs(), (yy - cy).abs()) / 0.85,
                       ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt())
    mask = torch.sigmoid(2.0 * (r - dist))[:, None]  # soft edge, (n, 1, H, W)
    hue = rand(n, 3)
    light = 0.75 + 0.25 * hue / hue.max(1, keepdim=True).values
    color = torch.where(dark[:, :, 0], 0.05 + 0.2 * hue, light)[:, :, None, None]  # (n, 3, 1, 1)
    ramp = (xx * rand(n)[:, None, None] + yy * rand(n)[:, None, None]) / size  # (n, H, W)
    background = (0.4 + 0.15 * ramp)[:, None] + 0.04 * torch.randn(n, 3, size, size, generator=generator)
    img = mask * color + (1 - mask) * background
    return (img.clamp(0, 1) * 2 - 1).float()


class Shapes32(ImageRecipe):
    name = "shapes32"
    description = ("procedural 32×32 RGB shapes, attributes shape × darkness; D_bias 20k with "
                   "subgroups 46.5/29.6/11.5/12.4 %, uniform target")
    img_channels, img_resolution, num_groups = 3, 32, 4
    n_bias, n_eval = 20_000, 10_000
    defaults = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "ratio_steps": 800,
                "ratio_batch_size": 128, "num_samples": 1000, "ema_decay": 0.995}

    def sample(self, n: int, shares, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        groups = torch.multinomial(torch.tensor(shares), n, replacement=True, generator=generator)
        return render_shapes(groups, generator, self.img_resolution), groups

    def splits(self, ref: float, seed: int, data_root: Path | None, cache_dir=None) -> Splits:
        g = generator(seed, "data")
        uniform = (0.25,) * 4
        x_bias, bias_labels = self.sample(self.n_bias, BIAS_SHARES, g)
        x_ref, _ = self.sample(max(1, round(ref * self.n_bias)), uniform, g)
        x_eval, labels = self.sample(self.n_eval, uniform, fixed_generator("eval"))
        return Splits(x_bias, x_ref, x_eval, labels, torch.tensor(uniform), bias_labels=bias_labels)

    def classifier_data(self, data_root, cache_dir=None):
        return self.sample(20_000, (0.25,) * 4, fixed_generator("classifier_data"))


class Shapes32DDPMPP(Shapes32):
    """shapes32's data with run defaults sized for one GPU: the paper's CIFAR network (ddpmpp32,
    55.7M parameters), bf16 (the `auto` precision on a GPU). 1,500 steps of 256 (384k images) are
    about five minutes at the 1,262 img/s bench/NOTES.md measured for its bf16 training step on an
    H200; the learning rate ramps up over the first 200 steps (EDM ramps this network's too).
    Fixed in advance, not yet run on a GPU: the fit_gap column of its first runs says whether
    1,500 steps reproduce the training mixture."""

    name = "shapes32_ddpmpp"
    description = "shapes32's data (the same images and caches), run defaults for one GPU: ddpmpp32, bf16"
    unet_preset = "ddpmpp32"
    defaults = {"steps": 1500, "batch_size": 256, "lr": 1e-3, "warmup": 200, "grad_clip": 1.0,
                "ema_decay": 0.998, "ratio_steps": 800, "ratio_batch_size": 128, "num_samples": 5000,
                "net": "ddpmpp32"}

    def signature(self) -> dict:
        return {**super().signature(), "name": Shapes32.name}  # shapes32's classifier and caches


def stratified_groups(n: int, k: int, generator: torch.Generator) -> Tensor:
    """n group labels, as equal a count of each of the k groups as n allows, in random order."""
    return torch.arange(n)[torch.randperm(n, generator=generator)] % k


class Shapes16(Shapes32):
    name = "shapes16"
    description = ("procedural 16×16 RGB shapes, attributes shape × darkness; D_bias 12k with "
                   "CelebA's subgroup shares 46.5/29.6/11.5/12.4 %, D_ref of exactly the uniform "
                   "target (ref 0.01 = 120 images); CPU-sized")
    img_resolution = 16
    n_bias, n_eval = 12_000, 4_000
    # 2,000 steps of 128: the fewest measured after which dsm_obs's samples reproduce its training
    # mixture's shares to the sampling floor (2,000 and 3,000 steps of 64 stayed 4.5x and 1.6x above it)
    defaults = {"steps": 2000, "batch_size": 128, "lr": 2e-3, "ratio_steps": 800,
                "ratio_batch_size": 128, "num_samples": 2000, "ema_decay": 0.995}

    def splits(self, ref: float, seed: int, data_root: Path | None, cache_dir=None) -> Splits:
        g = generator(seed, "data")
        uniform = (0.25,) * 4
        x_bias, bias_labels = self.sample(self.n_bias, BIAS_SHARES, g)
        ref_groups = stratified_groups(max(4, round(ref * self.n_bias)), 4, g)
        x_ref = render_shapes(ref_groups, g, self.img_resolution)
        eval_gen = fixed_generator("eval")
        eval_labels = stratified_groups(self.n_eval, 4, eval_gen)
        x_eval = render_shapes(eval_labels, eval_gen, self.img_resolution)
        return Splits(x_bias, x_ref, x_eval, eval_labels, torch.tensor(uniform), ref_stratified=True,
                      bias_labels=bias_labels)
