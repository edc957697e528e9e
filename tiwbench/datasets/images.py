"""Shared machinery of image datasets: the splits, the cached attribute classifier (the
evaluator's, tiwbench/classifier.py) and the networks that suit the image size."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

from ..checkpoint import load_torch, save_torch
from ..classifier import ScriptedClassifier, batched, make_classifier, train_classifier
from ..nets.discriminator import ConvDiscriminator
from ..nets.unet import PRESETS, UNet, unet_config
from ..streams import digest
from .base import BenchmarkData, DatasetRecipe, Splits


class ImageRecipe(DatasetRecipe):
    """An image dataset: subclasses give the splits and the classifier's labelled data.
    `classifier` (a dataset option) names a user's TorchScript attribute classifier that replaces
    the built-in one (classifier.ScriptedClassifier says what it must do)."""

    img_channels: ClassVar[int]
    img_resolution: ClassVar[int]
    num_groups: ClassVar[int]
    unet_preset: ClassVar[str] = "tiny"
    nets: ClassVar[tuple[str, ...]] = tuple(PRESETS)
    classifier_steps: ClassVar[int] = 1500
    classifier_arch: ClassVar[str] = "small"  # classifier.ARCHS

    def __init__(self, classifier: str = ""):
        self.classifier_file = classifier
        if classifier and Path(classifier).is_dir():
            raise ValueError(f"classifier={classifier} is a folder, not a TorchScript file")
        if classifier and not Path(classifier).is_file():
            raise ValueError(f"classifier={classifier}: no such file")

    def splits(self, ref: float, seed: int, data_root: Path | None,
               cache_dir: Path | None = None) -> Splits:
        raise NotImplementedError

    def classifier_data(self, data_root: Path | None, cache_dir: Path | None = None) -> tuple[Tensor, Tensor]:
        """Labelled images (disjoint from the evaluation set) to train the attribute classifier."""
        raise NotImplementedError

    reads_files: ClassVar[bool] = False  # whether the data come from --data-root

    def signature(self) -> dict:
        """What identifies this recipe's data, for caches."""
        return {"name": self.name, "resolution": self.img_resolution}

    def source(self, data_root: Path | None) -> dict:
        """Where the data come from, for cache keys: two data roots never share a cached file."""
        return {"data_root": str(Path(data_root).resolve())} if self.reads_files and data_root else {}

    def classifier(self, data_root: Path | None, cache_dir: Path | None) -> nn.Module:
        """The attribute classifier: the user's TorchScript file, or the built-in one, trained on
        `classifier_data` once per data and cached."""
        if self.classifier_file:
            return ScriptedClassifier(Path(self.classifier_file), self.img_channels, self.img_resolution,
                                      self.num_groups)
        key = {**self.signature(), **self.source(data_root), "classifier_steps": self.classifier_steps}
        if self.classifier_arch != "small":  # the small CNN's caches keep their names
            key["classifier_arch"] = self.classifier_arch
        path = cache_dir / f"classifier-{key['name']}-{digest(key)}.pt" if cache_dir else None
        if path is not None and path.exists():
            model = make_classifier(self.classifier_arch, self.img_channels, self.num_groups)
            model.load_state_dict(load_torch(path, expect=key)["model"])
            return model.eval().requires_grad_(False)
        x, y = self.classifier_data(data_root, cache_dir)
        model = train_classifier(x, y, self.num_groups, self.classifier_steps, arch=self.classifier_arch)
        if path is not None:
            save_torch(path, {"model": model.state_dict(), "config": key})
        return model

    def build(self, ref: float, seed: int, data_root: Path | None = None,
              cache_dir: Path | None = None) -> BenchmarkData:
        s = self.splits(ref, seed, data_root, cache_dir)
        clf = self.classifier(data_root, cache_dir)
        return BenchmarkData(
            **{f.name: getattr(s, f.name) for f in fields(Splits)}, sigma_data=0.5,
            attribute=lambda x: batched(clf, x).argmax(1),
            features=lambda x: batched(clf.features, x),
            feature_space=f"{self.name}_clf" + (f"_user_{clf.digest}" if self.classifier_file else ""),
            fid_train=(lambda: self.fid_train_images(data_root)) if self.has_fid_train else None)

    def fid_train_images(self, data_root: Path | None) -> Tensor:
        """The balanced training set whose statistics `--fid-ref train` scores against."""
        raise NotImplementedError

    def score_net(self, preset: str = "") -> nn.Module:
        return UNet(unet_config(preset or self.unet_preset, self.img_channels, self.img_resolution))

    def ratio_net(self) -> nn.Module:
        return ConvDiscriminator(self.img_channels, channels=16)
