"""The evaluator's attribute classifier for images: a small CNN whose argmax gives each sample's
group (the bias metrics) and whose penultimate layer is the dataset-native Fréchet feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .console import progress_bar
from .diffusion import to_model_space


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
