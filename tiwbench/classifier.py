"""The evaluator's attribute classifier for images: its argmax gives each sample's group (the
bias metrics) and its penultimate layer is the dataset-native Fréchet feature space. Built in: a
small CNN (the procedural and CPU-sized sets) and torchvision's ResNet-18 trained from scratch
with a class-balanced loss (the real datasets, whose imbalanced labels would otherwise skew the
predicted shares toward the majority groups); or a user's TorchScript classifier."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_torchscript
from .console import progress_bar
from .diffusion import to_model_space
from .errors import TiwbenchError


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


class ResNetClassifier(nn.Module):
    """torchvision's ResNet-18 (random init) with the small-image stem of CIFAR ResNets (a 3×3
    stride-1 first convolution, no max-pool); features are the 512-d pooled output."""

    def __init__(self, img_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        body = resnet18(num_classes=num_classes)
        body.conv1 = nn.Conv2d(img_channels, 64, 3, padding=1, bias=False)
        body.maxpool = nn.Identity()
        self.head, body.fc = body.fc, nn.Identity()
        self.body = body

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


# arch -> (network, training): "resnet18" is the stronger classifier of the real datasets.
ARCHS = {"small": (AttributeClassifier, {"lr": 2e-3, "balanced": False, "xflip": False}),
         "resnet18": (ResNetClassifier, {"lr": 1e-3, "balanced": True, "xflip": True})}


def make_classifier(arch: str, img_channels: int, num_classes: int) -> nn.Module:
    if arch not in ARCHS:
        raise TiwbenchError(f"unknown classifier architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[arch][0](img_channels, num_classes)


class ScriptedClassifier(nn.Module):
    """A user's TorchScript classifier (`--dataset-option classifier=FILE`): images (N, C, H, W)
    in [−1, 1] -> (N, K) logits in the recipe's group order. Its exported `features` method, if
    any, is the Fréchet feature space; without one, the logits are."""

    def __init__(self, path: Path, img_channels: int, img_resolution: int, num_classes: int):
        super().__init__()
        path = Path(path)
        try:
            self.net = load_torchscript(path).eval()
        except Exception as e:  # a missing file, or not TorchScript
            raise TiwbenchError(f"cannot load the TorchScript classifier {path}: {e}".splitlines()[0]) from None
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.has_features = hasattr(self.net, "features")
        probe = torch.zeros(2, img_channels, img_resolution, img_resolution)
        with torch.no_grad():
            try:
                shape = tuple(self.net(probe).shape)
            except Exception as e:
                raise TiwbenchError(f"the classifier {path} fails on a batch of shape {tuple(probe.shape)}: "
                                    f"{e}".splitlines()[0]) from None
        if shape != (2, num_classes):
            raise TiwbenchError(f"the classifier {path} returns shape {shape} for 2 images; "
                                f"expected (2, {num_classes}): one logit per group")
        self.requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:
        return self.net.features(x) if self.has_features else self.net(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@torch.no_grad()
def batched(fn, x: Tensor, batch: int = 1000) -> Tensor:
    """Apply `fn` in batches on the device of its parameters; results come back to the CPU."""
    param = next(fn.__self__.parameters(), None) if hasattr(fn, "__self__") else None
    device = param.device if param is not None else "cpu"
    return torch.cat([fn(to_model_space(x[i:i + batch].to(device))).cpu() for i in range(0, len(x), batch)])


def train_classifier(x: Tensor, y: Tensor, num_classes: int, steps: int, seed: int = 0,
                     batch: int = 128, arch: str = "small") -> nn.Module:
    """Cross-entropy training with Adam, on the GPU when there is one; deterministic for a given
    seed and device. The arch's training decides a class-balanced loss (weights ∝ 1/n_k) and
    random mirroring."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_classifier(arch, x.shape[1], num_classes).to(device)
    how = ARCHS[arch][1]
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = (len(y) / (num_classes * counts.clamp(min=1))).to(device) if how["balanced"] else None
    opt = torch.optim.Adam(model.parameters(), lr=how["lr"])
    model.train()
    with progress_bar(f"attribute classifier ({arch})", steps) as update:
        for step in range(steps):
            idx = torch.randint(len(x), (batch,), generator=g)
            xb = to_model_space(x[idx])
            if how["xflip"]:
                flip = torch.rand(len(idx), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update(step + 1)
    return model.cpu().eval().requires_grad_(False)
