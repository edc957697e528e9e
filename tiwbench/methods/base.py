"""The method contract: capabilities as class attributes, one per-sample loss signature."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor

from ..diffusion import Batch, Denoiser
from ..ratio import DensityRatio

TrainOn = Literal["bias", "ref", "obs"]
RatioNeed = Literal[None, "time_dependent", "time_independent"]


class Method:
    """Base class of a debiasing method (DESIGN.md §3); the trainer owns everything else.

    `train_on`: which data the score network sees (D_bias, D_ref, or D_obs = D_bias ∪ D_ref).
    `ratio`: which density-ratio model the loss needs, if any.
    `loss` returns one value per sample, shape (B,); the trainer averages.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    train_on: ClassVar[TrainOn] = "obs"
    ratio: ClassVar[RatioNeed] = None

    def loss(self, batch: Batch, denoiser: Denoiser, ratio_model: DensityRatio | None = None,
             alpha: float = 1.0) -> Tensor:
        raise NotImplementedError
