"""The method contract: capabilities as class attributes, one per-sample loss, an optional
sampling-time guidance (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..diffusion import Batch
from ..errors import TiwbenchError
from ..ratio import TrainingRatio

TrainOn = Literal["bias", "ref", "obs"]
Fits = Literal[None, "training", "target"]
RatioNeed = Literal[None, "time_dependent", "time_independent"]
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


class Method:
    """Base class of a debiasing method; the trainer owns everything else.

    `train_on`: which data the score network sees (D_bias, D_ref, or D_obs = D_bias ∪ D_ref).
    `ratio`: which density-ratio model the method needs, if any; it then receives `ratio`, the
    ratio r_σ of p_data to the training distribution (a TrainingRatio), in `loss` and `guidance`.
    `stratified_batches`: a method on D_obs draws `--ref-share` of every batch from D_ref (π is
    that share); False: uniform draws from D_obs, π = |D_ref|/|D_obs| (the paper's DSM(obs)).
    `fits`: what a perfect fit of the objective generates, for the fit diagnostic (`fit_gap`):
    "training" (the training mixture), "target" (p_data, at α = 1), or None (not known: no fit_gap).
    `loss` returns one value per sample, shape (B,); the trainer averages. `guidance` may shift
    the trained denoiser's output at sampling time (discriminator guidance and the like).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    train_on: ClassVar[TrainOn] = "obs"
    ratio: ClassVar[RatioNeed] = None
    stratified_batches: ClassVar[bool] = True
    fits: ClassVar[Fits] = None

    def loss(self, batch: Batch, denoiser: DenoiseFn, ratio: TrainingRatio | None = None,
             alpha: float = 1.0) -> Tensor:
        raise NotImplementedError

    def guidance(self, x: Tensor, sigma: Tensor, ratio: TrainingRatio | None,
                 alpha: float = 1.0) -> Tensor | None:
        """A shift of D(x; σ) while sampling (shape of x), or None. With r the ratio to the
        training distribution, D + α·σ²·∇ log r is the denoiser of p_data at α = 1."""
        return None


def guided(denoise: DenoiseFn, method: Method, ratio: TrainingRatio | None, alpha: float = 1.0) -> DenoiseFn:
    """`denoise` with `method`'s sampling-time guidance added; `denoise` itself if it has none."""
    if type(method).guidance is Method.guidance:
        return denoise

    checked = []  # the first call's shift is checked for finiteness (a host sync); later ones only for shape

    def shifted(x: Tensor, sigma: Tensor) -> Tensor:
        out = denoise(x, sigma)
        shift = method.guidance(x, sigma, ratio, alpha)
        if shift is None:
            return out
        if not isinstance(shift, Tensor) or shift.shape != x.shape:  # no silent broadcasting
            got = tuple(shift.shape) if isinstance(shift, Tensor) else type(shift).__name__
            raise TiwbenchError(f"method {method.name!r}: guidance must have the shape of x, "
                                f"{tuple(x.shape)}; got {got}")
        if not checked:
            if not bool(torch.isfinite(shift).all()):
                raise TiwbenchError(f"method {method.name!r}: guidance is not finite at "
                                    f"σ = {float(sigma.max()):.3g}")
            checked.append(True)
        return out + shift.to(out.dtype)
    return shifted
