"""What a dataset recipe provides: the data splits, the target, and how samples are scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

from ..ratio import ExactRatio


@dataclass
class Splits:
    """D_bias, D_ref (|D_ref| = ref·|D_bias|), an unbiased evaluation set with its group labels,
    and the target share of each of the K groups. Image recipes return these from `splits`.
    `ref_stratified`: D_ref holds exactly the target shares (no reference-composition floor).
    `bias_labels`: the group of each D_bias sample, where the recipe knows it — no method sees it;
    the label-informed ratio (`--ratio labels`, an upper bound) does."""

    x_bias: Tensor
    x_ref: Tensor
    x_eval: Tensor
    eval_labels: Tensor
    target_shares: Tensor
    ref_stratified: bool = field(default=False, kw_only=True)
    bias_labels: Tensor | None = field(default=None, kw_only=True)


@dataclass
class BenchmarkData(Splits):
    """The splits and how to score samples: what a run needs from a dataset.

    `attribute(x) -> (N,)` gives the sensitive-attribute group of each sample (K groups);
    `features(x) -> (N, F)` embeds samples for the Fréchet distance named `feature_space`;
    analytic datasets add their exact ratio and fresh D_bias draws.
    """

    sigma_data: float
    attribute: Callable[[Tensor], Tensor]
    features: Callable[[Tensor], Tensor]
    feature_space: str
    exact_ratio: Callable[[bool], ExactRatio] | None = None  # time_dependent -> oracle
    sample_bias: Callable[[int, object], Tensor] | None = None  # fresh D_bias-distributed draws
    fid_train: Callable[[], Tensor] | None = None  # the balanced training set, for `--fid-ref train`

    @property
    def is_image(self) -> bool:
        """Images are (N, C, H, W); vectors (N, D)."""
        return self.x_bias.ndim == 4


class DatasetRecipe:
    """Base class of a dataset plugin: class attributes describe it, `build` makes the data.

    `defaults` holds the run settings that suit this dataset (steps, batch size, ...); the CLI
    overrides them. `score_net`/`ratio_net` return the raw networks for data of this shape.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    has_exact_ratio: ClassVar[bool] = False
    has_fid_train: ClassVar[bool] = False  # whether `build` gives `fid_train` (`--fid-ref train`)
    defaults: ClassVar[dict] = {}
    nets: ClassVar[tuple[str, ...]] = ()  # the score-network presets `--net` accepts

    def __init_subclass__(cls, **kwargs):
        """`defaults` are RunConfig values: checked when the class is defined, so a plugin with a
        bad default shows as broken in `tiwbench list` instead of failing a run later."""
        super().__init_subclass__(**kwargs)
        from ..config import check_defaults

        check_defaults(cls.__name__, cls.defaults)

    def build(self, ref: float, seed: int, data_root: Path | None = None,
              cache_dir: Path | None = None) -> BenchmarkData:
        """The splits for this reference size and seed; `cache_dir` may hold derived files
        (classifiers, feature statistics) that are costly to recompute."""
        raise NotImplementedError

    def score_net(self, preset: str = "") -> nn.Module:
        raise NotImplementedError

    def ratio_net(self) -> nn.Module:
        raise NotImplementedError
