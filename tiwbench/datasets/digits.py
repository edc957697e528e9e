"""`digits_lt`: scikit-learn's bundled 8×8 digits, long-tailed D_bias, balanced D_ref and eval set."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import TiwbenchError
from ..streams import generator
from .base import Splits
from .images import ImageRecipe

EVAL_PER_CLASS = 30
SPLIT_SEED = 12345  # the evaluation set is the same for every run seed


def load_digits_images() -> tuple[Tensor, Tensor]:
    """All 1,797 images scaled to [−1, 1], shape (N, 1, 8, 8), and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.tensor(d.target)


def eval_split(y: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the balanced evaluation set and of the rest, fixed for all seeds."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(y), generator=g)
    eval_idx = torch.cat([perm[y[perm] == k][:EVAL_PER_CLASS] for k in range(10)])
    rest = perm[~torch.isin(perm, eval_idx)]
    return eval_idx, rest


class DigitsLT(ImageRecipe):
    name = "digits_lt"
    description = ("scikit-learn 8×8 digits: D_bias long-tailed over 10 classes (imbalance 10, "
                   "~490 images), balanced D_ref and eval set; CPU-sized")
    img_channels, img_resolution, num_groups = 1, 8, 10
    classifier_steps = 800
    imbalance, n_max = 10.0, 120
    defaults = {"steps": 1500, "batch_size": 64, "lr": 2e-3, "ratio_steps": 800,
                "ratio_batch_size": 128, "num_samples": 1000, "ema_decay": 0.995}

    def bias_counts(self) -> list[int]:
        return [round(self.n_max * self.imbalance ** (-k / 9)) for k in range(10)]

    def splits(self, ref: float, seed: int, data_root: Path | None, cache_dir=None) -> Splits:
        x, y = load_digits_images()
        eval_idx, rest = eval_split(y)
        counts = self.bias_counts()
        n_ref_per_class = max(1, round(ref * sum(counts) / 10))
        g = generator(seed, "data")
        bias_idx, ref_idx = [], []
        for k in range(10):
            pool = rest[y[rest] == k]
            pool = pool[torch.randperm(len(pool), generator=g)]
            if counts[k] + n_ref_per_class > len(pool):
                most = (len(pool) - counts[k]) * 10 / sum(counts)
                raise TiwbenchError(f"digits_lt has too few images of class {k} for ref {ref}: "
                                    f"use --ref <= {most:.2f}")
            bias_idx.append(pool[:counts[k]])
            ref_idx.append(pool[counts[k]:counts[k] + n_ref_per_class])
        bias_idx = torch.cat(bias_idx)
        return Splits(x[bias_idx], x[torch.cat(ref_idx)], x[eval_idx], y[eval_idx],
                      torch.full((10,), 0.1), ref_stratified=True, bias_labels=y[bias_idx])

    def classifier_data(self, data_root, cache_dir=None):
        x, y = load_digits_images()
        _, rest = eval_split(y)
        return x[rest], y[rest]
