"""The method contract: capabilities as class attributes, one per-sample loss signature."""

from __future__ import annotations

from collections.abc import Callable
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
    `loss` returns one value per sample, shape (B,); the trainer averages. `guidance` may shift
    the trained denoiser at sampling time (discriminator guidance and the like).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    train_on: ClassVar[TrainOn] = "obs"
    ratio: ClassVar[RatioNeed] = None

    def loss(self, batch: Batch, denoiser: Denoiser, ratio_model: DensityRatio | None = None,
             alpha: float = 1.0) -> Tensor:
        raise NotImplementedError

    def guidance(self, x: Tensor, sigma: Tensor, ratio_model: DensityRatio | None,
                 pi: float, alpha: float = 1.0) -> Tensor | None:
        """A shift of the denoiser's output D(x; σ) while sampling (shape of x), or None for none.

        `pi` is the unbiased share of the data the score network was trained on, so that
        log_r_and_grad(ratio_model, x, sigma, pi) gives the ratio to that training distribution;
        D + α·σ²·∇ log r is then, at α = 1, the denoiser of p_data (discriminator guidance).
        """
        return None


def guided(denoise: Callable[[Tensor, Tensor], Tensor], method: Method,
           ratio_model: DensityRatio | None, pi: float, alpha: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """`denoise` with `method`'s sampling-time guidance added; `denoise` itself if it has none."""
    if type(method).guidance is Method.guidance:
        return denoise

    def shifted(x: Tensor, sigma: Tensor) -> Tensor:
        out = denoise(x, sigma)
        shift = method.guidance(x, sigma, ratio_model, pi, alpha)
        return out if shift is None else out + shift.to(out.dtype)
    return shifted
