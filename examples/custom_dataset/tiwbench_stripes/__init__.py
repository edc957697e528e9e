"""A dataset plugin: 8×8 grey images of stripes, four groups (orientation × thickness).

D_bias over-represents thin horizontal stripes; D_ref and the evaluation set are uniform over the
groups. The recipe knows each D_bias image's group, so `--ratio labels` (the label-informed bound)
works on it. Only tiwbench's public API is imported (docs/plugins.md).
"""

from __future__ import annotations

import torch

from tiwbench.datasets.base import Splits
from tiwbench.datasets.images import ImageRecipe

BIAS_SHARES = (0.6, 0.2, 0.15, 0.05)  # group g = vertical + 2·thick
TARGET_SHARES = (0.25, 0.25, 0.25, 0.25)


def render_stripes(groups: torch.Tensor, generator: torch.Generator, size: int = 8) -> torch.Tensor:
    """One image per group label: stripes of period 2 (thin) or 4 (thick), horizontal or vertical,
    at a random phase and contrast, with pixel noise; values in [−1, 1], shape (N, 1, size, size)."""
    n = len(groups)
    vertical, thick = (groups % 2 == 1), (groups >= 2)
    coords = torch.arange(size, dtype=torch.float32)
    along = torch.where(vertical[:, None, None], coords[None, None, :], coords[None, :, None])  # (N, size, size)
    period = torch.where(thick, 4.0, 2.0)[:, None, None]
    phase = torch.floor(torch.rand(n, generator=generator) * 4)[:, None, None]
    on = torch.remainder(along + phase, period) < period / 2
    contrast = (0.6 + 0.4 * torch.rand(n, generator=generator))[:, None, None]
    img = torch.where(on, contrast, -contrast) + 0.1 * torch.randn(n, size, size, generator=generator)
    return img.clamp(-1, 1)[:, None]


class Stripes(ImageRecipe):
    name = "stripes"
    description = "8×8 stripes, groups orientation × thickness; D_bias 3,000 skewed 60/20/15/5 %, uniform target"
    img_channels, img_resolution, num_groups = 1, 8, 4
    classifier_steps = 400  # the groups are easy to tell apart
    # Score training long enough that dsm_obs's samples reproduce its training mixture's group
    # shares (fit_gap 0.031 against a sampling floor of 0.024 at ref 0.05, seed 0; 1,500 steps of
    # 64 left 0.103): a bias number should be the method's, not the network's under-fitting.
    defaults = {"steps": 3000, "batch_size": 128, "lr": 2e-3, "ratio_steps": 800, "num_samples": 1000}

    def __init__(self, n_bias: int = 3000, classifier: str = ""):
        """`--dataset-option n_bias=N` sets D_bias's size."""
        super().__init__(classifier)
        if n_bias < 100:
            raise ValueError(f"n_bias={n_bias}: give at least 100 images")
        self.n_bias = n_bias

    def signature(self) -> dict:
        return {**super().signature(), "n_bias": self.n_bias}

    def _draw(self, n: int, shares, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        groups = torch.multinomial(torch.tensor(shares), n, replacement=True, generator=generator)
        return render_stripes(groups, generator, self.img_resolution), groups

    def splits(self, ref, seed, data_root, cache_dir=None) -> Splits:
        g = torch.Generator().manual_seed(seed)
        x_bias, bias_labels = self._draw(self.n_bias, BIAS_SHARES, g)
        x_ref, _ = self._draw(max(1, round(ref * self.n_bias)), TARGET_SHARES, g)
        x_eval, eval_labels = self._draw(2000, TARGET_SHARES, torch.Generator().manual_seed(10_000))
        return Splits(x_bias, x_ref, x_eval, eval_labels, torch.tensor(TARGET_SHARES), bias_labels=bias_labels)

    def classifier_data(self, data_root, cache_dir=None):
        """Labelled images for the evaluator's attribute classifier, disjoint from the evaluation set."""
        return self._draw(4000, TARGET_SHARES, torch.Generator().manual_seed(20_000))
