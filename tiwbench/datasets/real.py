"""The paper's real datasets, read from local files (`--data-root` or TIWBENCH_DATA).

Nothing is downloaded: a missing or partial dataset fails with one message naming the files
expected and where to get them. Images are kept as uint8 (N, C, H, W) and scaled to [−1, 1]
per batch, so CelebA at 64 px fits in memory.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import load_torch, save_torch
from ..console import progress_bar
from ..errors import TiwbenchError
from ..streams import digest, generator
from .base import Splits
from .images import ImageRecipe

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images)"
FFHQ_URL = "https://github.com/NVlabs/ffhq-dataset (images) and a gender label file of your choice"


def require(root: Path | None, dataset: str, files: list[str], source: str) -> Path:
    """The data root, after checking that every expected file is there."""
    if root is None:
        raise TiwbenchError(f"{dataset} reads local files: pass --data-root DIR or set TIWBENCH_DATA "
                            f"(expects {', '.join(files)} under it; get them from {source})")
    missing = [f for f in files if not (Path(root) / f).exists()]
    if missing:
        raise TiwbenchError(f"{dataset}: missing {', '.join(missing)} under {root}; "
                            f"get them from {source} and place them there")
    return Path(root)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a dataset file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset file")


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[Tensor, Tensor]:
    with open(path, "rb") as f:
        try:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise TiwbenchError(f"cannot read the CIFAR batch {path}: {e}") from e
    try:
        data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise TiwbenchError(f"the CIFAR batch {path} is not a dict with b'data' and {label_key!r} "
                            f"({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise TiwbenchError(f"the CIFAR batch {path} has data of shape {data.shape} and {labels.size} labels; "
                            f"expected (N, 3072) and N labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def long_tail_counts(num_classes: int, total: int, imbalance: float) -> list[int]:
    """Class sizes n_k ∝ imbalance^(−k/(K−1)), summing to about `total`."""
    w = imbalance ** (-np.arange(num_classes) / (num_classes - 1))
    return [max(1, int(round(c))) for c in total * w / w.sum()]


def take_per_class(labels: Tensor, counts: list[int], generator: torch.Generator,
                   exclude: Tensor | None = None, dataset: str = "") -> Tensor:
    """Random indices with counts[k] items of class k, avoiding `exclude`."""
    pool = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        pool[exclude] = False
    out = []
    for k, n in enumerate(counts):
        idx = torch.nonzero(pool & (labels == k)).flatten()
        if len(idx) < n:
            raise TiwbenchError(f"{dataset}: class {k} has {len(idx)} images left, {n} needed; "
                                f"use a smaller --ref")
        out.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
    return torch.cat(out)


class CifarLT(ImageRecipe):
    """Long-tailed CIFAR: D_bias of 10,000 training images, balanced D_ref from the rest of the
    training set, the balanced test set as evaluation set."""

    img_channels, img_resolution = 3, 32
    unet_preset = "ddpmpp32"
    reads_files = True
    folder, files, label_key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels"
    test_file = "test_batch"
    has_fid_train = True  # CIFAR's training split is balanced: the paper's FID reference
    classifier_arch, classifier_steps = "resnet18", 5000  # ≈ 13 epochs of the 50k training images
    defaults = {"batch_size": 256, "lr": 1e-3, "steps": 100_000, "ratio_steps": 10_000,
                "fid_ref": "train", "fid_samples": 50_000}

    def __init__(self, imbalance: float = 100.0, n_bias: int = 10_000, classifier: str = ""):
        super().__init__(classifier)
        self.imbalance, self.n_bias = float(imbalance), int(n_bias)
        if not 1 <= self.imbalance < float("inf"):
            raise ValueError(f"imbalance must be a finite number >= 1 (largest class over smallest), "
                             f"got {imbalance}")
        if self.n_bias < self.num_groups:
            raise ValueError(f"n_bias must be at least {self.num_groups} (one image per class), got {n_bias}")

    def signature(self):
        return {**super().signature(), "imbalance": self.imbalance, "n_bias": self.n_bias}

    def read(self, data_root, train: bool) -> tuple[Tensor, Tensor]:
        names = [f"{self.folder}/{f}" for f in self.files + [self.test_file]]
        root = require(data_root, self.name, names, CIFAR_URL + " (python version)")
        parts = [read_cifar_batch(root / self.folder / f, self.label_key)
                 for f in (self.files if train else [self.test_file])]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def splits(self, ref, seed, data_root, cache_dir=None):
        x, y = self.read(data_root, train=True)
        g = generator(seed, "data")
        k = self.num_groups
        bias_idx = take_per_class(y, long_tail_counts(k, self.n_bias, self.imbalance), g, dataset=self.name)
        ref_idx = take_per_class(y, [max(1, round(ref * self.n_bias / k))] * k, g, bias_idx, self.name)
        x_test, y_test = self.read(data_root, train=False)
        return Splits(x[bias_idx], x[ref_idx], x_test, y_test, torch.full((k,), 1 / k), ref_stratified=True,
                      bias_labels=y[bias_idx])

    def classifier_data(self, data_root, cache_dir=None):
        return self.read(data_root, train=True)

    def fid_train_images(self, data_root):
        return self.read(data_root, train=True)[0]


class Cifar10LT(CifarLT):
    name = "cifar10_lt"
    description = "CIFAR-10, long-tailed D_bias of 10k images (imbalance option, default 100); local files"
    num_groups = 10


class Cifar100LT(CifarLT):
    name = "cifar100_lt"
    description = "CIFAR-100, long-tailed D_bias of 10k images (imbalance option, default 100); local files"
    num_groups = 100
    folder, files, label_key, test_file = "cifar-100-python", ["train"], b"fine_labels", "test"


def load_images(paths: list[Path], resolution: int) -> Tensor:
    """Center-square-cropped, resized RGB images as uint8 (N, 3, R, R)."""
    from PIL import Image

    out = torch.empty(len(paths), 3, resolution, resolution, dtype=torch.uint8)
    with progress_bar(f"reading {len(paths)} images", len(paths)) as update:
        for i, p in enumerate(paths):
            with Image.open(p) as im:
                im = im.convert("RGB")
                s = min(im.size)
                left, top = (im.width - s) // 2, (im.height - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((resolution, resolution), Image.BICUBIC)
                out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
            if i % 100 == 0 or i == len(paths) - 1:
                update(i + 1)
    return out


def cached_images(cache_dir: Path | None, key: dict, paths: list[Path], resolution: int) -> Tensor:
    """Decoded images, cached as one tensor file (decoding 160k JPEGs takes minutes)."""
    path = cache_dir / f"images-{key['dataset']}-{digest(key)}.pt" if cache_dir else None
    if path is not None and path.exists():
        return load_torch(path, expect=key)["images"]
    x = load_images(paths, resolution)
    if path is not None:
        save_torch(path, {"images": x, "config": key})
    return x


class GroupImageRecipe(ImageRecipe):
    """A folder of face images with group labels: D_bias is biased, D_ref and the evaluation set
    are balanced and disjoint from it."""

    img_channels, img_resolution = 3, 64
    unet_preset = "ddpmpp64"
    reads_files = True
    defaults = {"batch_size": 256, "lr": 2e-4, "steps": 100_000, "ratio_steps": 10_000}
    n_eval_per_group = 2_500
    classifier_arch, classifier_steps = "resnet18", 5000

    def labelled(self, data_root) -> tuple[list[Path], Tensor, Tensor]:
        """(image paths, group labels, is-candidate-for-D_bias mask)."""
        raise NotImplementedError

    def images(self, data_root, cache_dir) -> tuple[Tensor, Tensor, Tensor]:
        paths, groups, bias_pool = self.labelled(data_root)
        key = {**self.signature(), **self.source(data_root), "dataset": self.name, "n": len(paths)}
        return cached_images(cache_dir, key, paths, self.img_resolution), groups, bias_pool

    def bias_indices(self, groups: Tensor, pool: Tensor, ref: float, g: torch.Generator) -> Tensor:
        """D_bias, drawn from the indices where `pool` is true."""
        raise NotImplementedError

    def splits(self, ref, seed, data_root, cache_dir=None):
        x, groups, bias_pool = self.images(data_root, cache_dir)
        k = self.num_groups
        eval_pool = ~bias_pool if (~bias_pool).any() else torch.ones_like(bias_pool)
        eval_idx = take_per_class(groups, [self.n_eval_per_group] * k, torch.Generator().manual_seed(0),
                                  torch.nonzero(~eval_pool).flatten(), self.name)
        pool = bias_pool.clone()
        pool[eval_idx] = False
        g = generator(seed, "data")
        bias_idx = self.bias_indices(groups, pool, ref, g)
        ref_idx = take_per_class(groups, [max(1, round(ref * len(bias_idx) / k))] * k, g,
                                 torch.cat([bias_idx, eval_idx]), self.name)
        return Splits(x[bias_idx], x[ref_idx], x[eval_idx], groups[eval_idx], torch.full((k,), 1 / k),
                      ref_stratified=True, bias_labels=groups[bias_idx])

    def classifier_data(self, data_root, cache_dir=None):
        """The images outside the evaluation set's pool (CelebA: the train split)."""
        x, groups, bias_pool = self.images(data_root, cache_dir)
        return x[bias_pool], groups[bias_pool]


class CelebA(GroupImageRecipe):
    name = "celeba"
    description = ("CelebA 64 px, groups Male × Black_Hair; D_bias = the train split "
                   "(46.5/29.6/11.5/12.4 %), balanced D_ref/eval from valid+test; local files")
    num_groups = 4
    files = ["celeba/list_attr_celeba.txt", "celeba/list_eval_partition.txt", "celeba/img_align_celeba"]

    def labelled(self, data_root):
        import pandas as pd

        root = require(data_root, self.name, self.files, CELEBA_URL)
        attrs = pd.read_csv(root / self.files[0], sep=r"\s+", skiprows=1)
        part = pd.read_csv(root / self.files[1], sep=r"\s+", header=None, index_col=0).iloc[:, 0]
        try:
            groups = (attrs["Male"] > 0).astype(int) + 2 * (attrs["Black_Hair"] > 0).astype(int)
            split = part.loc[attrs.index]
        except KeyError as e:
            raise TiwbenchError(f"celeba: {root / self.files[0]} or {self.files[1]} lacks {e}") from e
        paths = [root / self.files[2] / f for f in attrs.index]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise TiwbenchError(f"celeba: {len(missing)} images listed in list_attr_celeba.txt are missing "
                                f"from {root / self.files[2]} (first: {missing[0]}); get them from {CELEBA_URL}")
        return paths, torch.tensor(groups.to_numpy()), torch.tensor((split == 0).to_numpy())

    def bias_indices(self, groups, pool, ref, g):
        return torch.nonzero(pool).flatten()  # the train split as it is: the paper's bias


class FFHQGender(GroupImageRecipe):
    name = "ffhq_gender"
    description = ("FFHQ 64 px with a gender label file; D_bias majority option (0.8 or 0.9 "
                   "female), balanced D_ref/eval; local files")
    num_groups = 2
    files = ["ffhq/images", "ffhq/gender.csv"]
    n_eval_per_group = 2_000

    def __init__(self, majority: float = 0.8, classifier: str = ""):
        super().__init__(classifier)
        self.majority = float(majority)
        if not 0.5 <= self.majority < 1:
            raise TiwbenchError(f"ffhq_gender: majority must be in [0.5, 1), got {majority}")

    def signature(self):
        return {**super().signature(), "majority": self.majority}

    def labelled(self, data_root):
        import pandas as pd

        root = require(data_root, self.name, self.files, FFHQ_URL)
        table = pd.read_csv(root / self.files[1])
        if not {"file", "gender"} <= set(table.columns):
            raise TiwbenchError(f"ffhq_gender: {root / self.files[1]} needs columns file,gender "
                                f"(gender: female|male or 0|1)")
        gender = table["gender"].map({"female": 0, "male": 1, 0: 0, 1: 1, "0": 0, "1": 1})
        if gender.isna().any():
            raise TiwbenchError(f"ffhq_gender: unknown gender values in {root / self.files[1]}")
        paths = [root / self.files[0] / f for f in table["file"]]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise TiwbenchError(f"ffhq_gender: {len(missing)} listed images missing from "
                                f"{root / self.files[0]} (first: {missing[0]})")
        return paths, torch.tensor(gender.to_numpy(dtype=np.int64)), torch.ones(len(paths), dtype=torch.bool)

    def bias_indices(self, groups, pool, ref, g):
        """As many images as the pool allows with `majority` female, leaving room for D_ref."""
        avail = [int((pool & (groups == k)).sum()) for k in (0, 1)]
        share = (self.majority, 1 - self.majority)
        total = int(min(a / (w + ref / 2) for a, w in zip(avail, share)))
        counts = [int(total * share[0]), total - int(total * share[0])]
        return take_per_class(groups, counts, g, torch.nonzero(~pool).flatten(), self.name)
