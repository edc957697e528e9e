"""Shared machinery of image datasets: the attribute classifier (bias metric and Fréchet feature
space), its on-disk cache, and the networks that suit the image size."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_torch, save_torch
from ..diffusion import to_model_space
from ..nets.discriminator import ConvDiscriminator
from ..nets.unet import PRESETS, UNet, unet_config
from .base import BenchmarkData, DatasetRecipe


class AttributeClassifier(nn.Module):
    """A small CNN, images in [−1, 1] -> K logits; its penultimate layer is the feature space of
    the dataset-native Fréchet distance."""

    def __init__(self, img_channels: int, num_classes: int, width: int = 32, features: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(img_channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, features), nn.SiLU())
        self.head = nn.Linear(features, num_classes)
        self.num_features = features

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def batched(fn, x: Tensor, batch: int = 1000) -> Tensor:
    """Apply `fn` in batches on the device of its parameters; results come back to the CPU."""
    device = next(fn.__self__.parameters()).device if hasattr(fn, "__self__") else "cpu"
    return torch.cat([fn(to_model_space(x[i:i + batch].to(device))).cpu() for i in range(0, len(x), batch)])


def train_classifier(x: Tensor, y: Tensor, num_classes: int, steps: int, seed: int = 0,
                     batch: int = 128) -> AttributeClassifier:
    """Cross-entropy training with Adam; deterministic for a given seed."""
    from ..run import progress_bar  # the shared progress display

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AttributeClassifier(x.shape[1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with progress_bar("attribute classifier", steps) as update:
        for step in range(steps):
            idx = torch.randint(len(x), (batch,), generator=g)
            loss = F.cross_entropy(model(to_model_space(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update(step + 1)
    return model.eval().requires_grad_(False)


@dataclass
class ImageSplits:
    x_bias: Tensor
    x_ref: Tensor
    x_eval: Tensor
    eval_labels: Tensor
    target_shares: Tensor


class ImageRecipe(DatasetRecipe):
    """An image dataset: subclasses give the splits and the classifier's labelled data."""

    img_channels: ClassVar[int]
    img_resolution: ClassVar[int]
    num_groups: ClassVar[int]
    unet_preset: ClassVar[str] = "tiny"
    nets: ClassVar[tuple[str, ...]] = tuple(PRESETS)
    classifier_steps: ClassVar[int] = 1500

    def splits(self, ref: float, seed: int, data_root: Path | None,
               cache_dir: Path | None = None) -> ImageSplits:
        raise NotImplementedError

    def classifier_data(self, data_root: Path | None, cache_dir: Path | None = None) -> tuple[Tensor, Tensor]:
        """Labelled images (disjoint from the evaluation set) to train the attribute classifier."""
        raise NotImplementedError

    def signature(self) -> dict:
        """What identifies this recipe's data, for caches."""
        return {"name": self.name, "resolution": self.img_resolution}

    def classifier(self, data_root: Path | None, cache_dir: Path | None) -> AttributeClassifier:
        key = {**self.signature(), "classifier_steps": self.classifier_steps}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        path = cache_dir / f"classifier-{self.name}-{digest}.pt" if cache_dir else None
        if path is not None and path.exists():
            model = AttributeClassifier(self.img_channels, self.num_groups)
            model.load_state_dict(load_torch(path, expect=key)["model"])
            return model.eval().requires_grad_(False)
        x, y = self.classifier_data(data_root, cache_dir)
        model = train_classifier(x, y, self.num_groups, self.classifier_steps)
        if path is not None:
            save_torch(path, {"model": model.state_dict(), "config": key})
        return model

    def build(self, ref: float, seed: int, data_root: Path | None = None,
              cache_dir: Path | None = None) -> BenchmarkData:
        s = self.splits(ref, seed, data_root, cache_dir)
        clf = self.classifier(data_root, cache_dir)
        return BenchmarkData(
            x_bias=s.x_bias, x_ref=s.x_ref, x_eval=s.x_eval, eval_labels=s.eval_labels,
            target_shares=s.target_shares, sigma_data=0.5,
            attribute=lambda x: batched(clf, x).argmax(1),
            features=lambda x: batched(clf.features, x),
            feature_space=f"{self.name}_clf", info={"images": True})

    def score_net(self, preset: str = "") -> nn.Module:
        return UNet(unet_config(preset or self.unet_preset, self.img_channels, self.img_resolution))

    def ratio_net(self) -> nn.Module:
        return ConvDiscriminator(self.img_channels, channels=16)
