"""Density-ratio models w_σ = p_data,σ / p_bias,σ: trained discriminators and exact oracles.

A ratio model gives log w_σ(x). What a method needs is the ratio to the distribution its score
network trains on, p_train = π·p_data + (1 − π)·p_bias, that is r_σ = w_σ / (π·w_σ + 1 − π)
(docs/design.md §2), and for TIW-DSM its input gradient.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checkpoint as checkpoints
from .bands import BAND_EDGES, N_BANDS, SIGMA_PROPOSALS, TILT_WEIGHTS, VAL_SIGMAS, band_label
from .checkpoint import load_torch, save_torch
from .compiling import compile_module
from .config import RunConfig
from .diffusion import (
    SIGMA_MAX,
    SIGMA_MIN,
    Precond,
    append_dims,
    sample_log_uniform_sigma,
    sample_training_sigma,
    to_model_space,
)
from .errors import Interrupted
from .estimators.discriminator import Discriminator
from .signals import stop_requests
from .streams import generator


class DensityRatio(nn.Module):
    """Base class: subclasses implement `log_ratio(x, sigma) -> (B,)` = log w_σ(x)."""

    time_dependent: bool = True

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def grad_log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        """∇ₓ log w_σ(x), by autograd; the model's parameters get no gradient."""
        return log_r_and_grad(self, x, sigma, pi=0.0)[1]

    def compiled(self) -> DensityRatio:
        """A torch.compile'd view sharing this model's parameters (itself where nothing is to gain)."""
        return self


def mixture_log_r(log_w: Tensor, pi: float) -> Tensor:
    """log r = log w − log(π·w + 1 − π): the ratio to the training mixture, bounded by 1/π."""
    if pi <= 0.0:
        return log_w
    return log_w - torch.logaddexp(log_w + math.log(pi), torch.full_like(log_w, math.log1p(-pi)))


def log_r_and_grad(model: DensityRatio, x: Tensor, sigma: Tensor, pi: float) -> tuple[Tensor, Tensor]:
    """log r_σ(x) and ∇ₓ log r_σ(x) from one forward and one backward, both detached, in fp32
    (fp64 inputs stay fp64).

    Since d log r / d log w = 1 − π·r, the mixture correction costs nothing extra.
    """
    # fp32 even inside a bf16 step: σ² = 6400 times a small slope cancels in low precision
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = _at_least_fp32(x.detach()).requires_grad_(True)
        log_w = model.log_ratio(x, _at_least_fp32(sigma))
        # a constant log w (a PriorNet without the large-σ term: w ≡ 1) has no graph to x
        (grad_w,) = torch.autograd.grad(log_w.sum(), x, allow_unused=True) if log_w.requires_grad else (None,)
    if grad_w is None:
        grad_w = torch.zeros_like(x)
    log_r = mixture_log_r(log_w.detach(), pi)
    grad_r = append_dims(1 - pi * log_r.exp(), x.ndim) * grad_w
    return log_r, grad_r


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class TrainingRatio:
    """What a method sees of the density ratio: r_σ = p_data,σ / p_train,σ, the ratio to the
    distribution its score network trains on (π folded in, docs/design.md §2)."""

    def __init__(self, model: DensityRatio, pi: float):
        self.model, self.pi = model, pi

    @property
    def time_dependent(self) -> bool:
        return self.model.time_dependent

    def log_r(self, x: Tensor, sigma: Tensor) -> Tensor:
        """log r_σ(x), detached: a weight, not a path for gradients."""
        return mixture_log_r(self.model.log_ratio(x, sigma).detach(), self.pi)

    def log_r_and_grad(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """log r_σ(x) and ∇ₓ log r_σ(x), both detached, from one forward and one backward."""
        return log_r_and_grad(self.model, x, sigma, self.pi)

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Deprecated alias (plugin API 1) of `log_r`."""
        import warnings

        warnings.warn("TrainingRatio.log_ratio is deprecated; use ratio.log_r(x, sigma)", DeprecationWarning,
                      stacklevel=2)
        return self.log_r(x, sigma)


class ExactRatio(DensityRatio):
    """The oracle: log w from the exact perturbed log-densities of an analytic dataset."""

    def __init__(self, log_p_data: Callable[[Tensor, Tensor], Tensor],
                 log_p_bias: Callable[[Tensor, Tensor], Tensor], time_dependent: bool = True):
        super().__init__()
        self.log_p_data, self.log_p_bias = log_p_data, log_p_bias
        self.time_dependent = time_dependent

    def log_ratio(self, x: Tensor, sigma: Tensor) -> Tensor:
        if not self.time_dependent:
            sigma = torch.zeros_like(sigma)
        return self.log_p_data(x, sigma) - self.log_p_bias(x, sigma)


LIMIT_VARIANCES = ("delta", "sigma_data")
LIMIT_BASES = ("linear", "tilt")
TILT_CHUNK = 2**22  # entries of the (points × base) kernel matrix computed at once
_EXP_FLOOR = -87.0  # e^-87 ≈ 1.6e-38: the smallest exponent whose exp stays a normal float32
TILT_POINTS = 2048  # at most this many D_bias points in the tilted term's base set (its cost per point)


class LearnedRatio(DensityRatio):
    """A discriminator ℓ_φ(c_in(σ)·x, c_noise(σ)) for log w_σ(x), optionally with the exact
    large-σ behaviour built in (docs/design.md §4):

        log w_σ(x) = δᵀ(x − m) / (σ² + v) + σ_data²·ℓ_φ(c_in·x, c_noise) / (σ² + σ_data²)

    with δ = mean(D_ref) − mean(D_bias) and m their midpoint (`fit_limit`). As σ grows both
    perturbed densities tend to Gaussians of the same spread, so σ²∇log w → δ: the linear term
    gives TIW-DSM's correction that limit from two sample means, and the damped network cannot
    add more than O(1/σ) to it. v is the two sets' pooled variance along δ (`limit_var="delta"`):
    the linear term is then the log-ratio of two Gaussians N(m ± δ/2, v + σ²) along δ, which
    stays of the size the data support at every σ. With v = σ_data² (`"sigma_data"`, the first
    version) the term is that size only for isotropic data: on images, whose pixels vary
    together, v along δ is many times σ_data², and the term claimed tens of nats at small σ
    (held-out BCE 57 on shapes32). `data_shape=None` leaves the plain logit ℓ_φ.

    With `limit_base="tilt"` the linear term is replaced by the exact noised log-ratio of D_bias
    tilted by that term's clean value (`tilt_term`): the same limit at large σ, and where σ is
    small the weights a clean-data ratio gives, instead of a Gaussian term that fades with σ² + v
    long before the sets' modes blur (docs/design.md §4).

    Below `sigma_floor` (time-dependent models) the network sees the floor: the ratio of densities
    smoothed at that scale, where a small reference set carries no finer information. The
    time-independent variant is trained and evaluated at σ_min only, i.e. on clean data.
    `net(x_in, c_noise)` must return (B, 1); any backbone with that signature plugs in.
    """

    def __init__(self, net: nn.Module, sigma_data: float, time_dependent: bool,
                 data_shape: tuple[int, ...] | None = None, sigma_floor: float = 0.0,
                 limit_var: str = "delta", limit_base: str = "linear"):
        super().__init__()
        if limit_var not in LIMIT_VARIANCES:
            raise ValueError(f"limit_var must be one of {LIMIT_VARIANCES}, got {limit_var!r}")
        if limit_base not in LIMIT_BASES:
            raise ValueError(f"limit_base must be one of {LIMIT_BASES}, got {limit_base!r}")
        self.net, self.precond, self.time_dependent = net, Precond(sigma_data), time_dependent
        self.sigma_floor = max(sigma_floor, SIGMA_MIN) if time_dependent else SIGMA_MIN
        self.has_limit, self.limit_var = data_shape is not None, limit_var
        self.limit_base = limit_base if self.has_limit else "linear"
        if self.has_limit:
            self.register_buffer("delta", torch.zeros(data_shape))
            self.register_buffer("centre", torch.zeros(data_shape))
            if limit_var == "delta":  # (a buffer only here: caches of the first version still load)
                self.register_buffer("var_delta", torch.tensor(sigma_data**2))
        if self.limit_base == "tilt":  # rebuilt from the data, not cached (`attach_tilt`)
            for name in ("tilt_points", "tilt_log_w", "tilt_weights", "tilt_half_sq", "tilt_stacked"):
                self.register_buffer(name, torch.zeros(0), persistent=False)
            self.tilt_offset = 0.0

    @torch.no_grad()
    def fit_limit(self, x_ref: Tensor, x_bias: Tensor, clean: CleanLogW | None = None) -> None:
        """δ, m and v from the discriminator's training data (model space): the sample means, and
        the mean of the two sets' variances of the projection on δ/|δ|; then the tilted base with
        the clean weights `clean` (None: the linear term's)."""
        if not self.has_limit:
            return
        x_ref, x_bias = (to_model_space(x).double().flatten(1) for x in (x_ref, x_bias))
        mean_ref, mean_bias = x_ref.mean(0), x_bias.mean(0)
        self.delta.copy_((mean_ref - mean_bias).view_as(self.delta))
        self.centre.copy_(((mean_ref + mean_bias) / 2).view_as(self.centre))
        norm = (mean_ref - mean_bias).norm()
        if self.limit_var == "delta" and norm > 0 and len(x_ref) > 1 and len(x_bias) > 1:
            unit = (mean_ref - mean_bias) / norm
            self.var_delta.fill_(float(((x_ref @ unit).var() + (x_bias @ unit).var()) / 2))
        self.attach_tilt(x_bias, clean)

    @torch.no_grad()
    def linear_log_w(self, x: Tensor) -> Tensor:
        """The large-σ term's clean value δᵀ(x − m)/v at model-space points x: the default tilt."""
        return (x.flatten(1) - self.centre.flatten()) @ self.delta.flatten() / self.limit_variance()

    def base_points(self, x_bias: Tensor) -> Tensor:
        """The tilted term's base set: the first TILT_POINTS of D_bias (a split is shuffled), in
        model space, with this model's dtype and device."""
        return to_model_space(x_bias[:TILT_POINTS]).to(self.delta)

    @torch.no_grad()
    def attach_tilt(self, x_bias: Tensor, clean: CleanLogW | None = None, log_w: Tensor | None = None) -> None:
        """The tilted term's base set: D_bias (the discriminator's training split), each point with
        its clean weight w_0 normalised to mean 1 over the set: `log_w` given (a cache's), else
        `clean` at the points, else the linear term's exp(δᵀ(x0 − m)/v). Called by `fit_limit`,
        and after loading a cached model (the set is data; its weights are cached)."""
        if self.limit_base != "tilt":
            return
        points = self.base_points(x_bias)
        if log_w is None:
            log_w = (clean or self.linear_log_w)(points)
        log_w = log_w.to(self.delta).flatten()
        points = points.flatten(1)
        self.tilt_log_w = log_w
        self.tilt_points, self.tilt_half_sq = points, points.pow(2).sum(1) / 2
        # weights relative to the largest, with the ones of the untilted set: one product sums both
        self.tilt_weights = torch.stack([(log_w - log_w.max()).exp(), torch.ones_like(log_w)], 1)
        # with the sums of both posterior means: one product gives S_w, S_1 and the gradient's sums
        self.tilt_stacked = torch.cat([self.tilt_weights, self.tilt_weights[:, :1] * points, points], 1)
        self.tilt_offset = float(log_w.max() - torch.logsumexp(log_w, 0) + math.log(len(points)))

    def tilt_term(self, x: Tensor, sigma: Tensor) -> Tensor:
        """log E[w_0(x0) | x_σ = x] over the base set: the noised log-ratio of the tilted set to the
        set itself, exact at every σ for that pair (the posterior of x0 is a softmax over the set).
        Its input gradient comes with the value (`_TiltKernel`), not from autograd's graph."""
        flat = x.flatten(1)
        buffers = (self.tilt_points, self.tilt_half_sq, self.tilt_weights, self.tilt_stacked)
        value = _TiltKernel.apply(flat, sigma.to(flat.dtype), *(t.to(flat.dtype) for t in buffers))
        return value + self.tilt_offset

    def limit_variance(self) -> Tensor | float:
        """v of the linear term."""
        return self.var_delta if self.limit_var == "delta" else self.precond.sigma_data**2

    def logit(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The network's output ℓ_φ at (x, σ), (B,): σ below the floor seen as the floor."""
        seen = sigma.clamp(min=self.sigma_floor)
        return self.net(self.precond.c_in(append_dims(seen, x.ndim)) * x, self.precond.c_noise(seen)).reshape(-1)

    def log_ratio(self, x: Tensor, sigma: Tensor, base: Tensor | None = None) -> Tensor:
        """log w_σ(x); `base`, when given, is `base_term(x, sigma)` computed before (it holds no
        trained parameter, so fixed points need it once: HeldOutBCE.fix_base)."""
        if not self.time_dependent:
            sigma = torch.full_like(sigma, SIGMA_MIN)
        logit = self.logit(x, sigma)
        if not self.has_limit:
            return logit
        sd2 = self.precond.sigma_data**2
        base = self.base_term(x, sigma) if base is None else base
        return base + sd2 * logit / (sigma**2 + sd2)

    def base_term(self, x: Tensor, sigma: Tensor) -> Tensor:
        """What the network's damped output adds to (models with the large-σ limit): the tilted or
        the linear term."""
        if self.limit_base == "tilt":
            return self.tilt_term(x, sigma)
        return ((x - self.centre) * self.delta).flatten(1).sum(1) / (sigma**2 + self.limit_variance())

    def compiled(self) -> LearnedRatio:
        # autograd.grad in log_r_and_grad breaks a graph around it; the network's forward and
        # its input backward are what compile, so the network alone is wrapped
        twin = LearnedRatio(compile_module(self.net), self.precond.sigma_data, self.time_dependent,
                            data_shape=tuple(self.delta.shape) if self.has_limit else None,
                            sigma_floor=self.sigma_floor, limit_var=self.limit_var, limit_base=self.limit_base)
        for name, buffer in self.named_buffers(recurse=False):  # shared, not copied
            setattr(twin, name, buffer)
        if self.limit_base == "tilt":
            twin.tilt_offset = self.tilt_offset
        return twin.eval()


CleanLogW = Callable[[Tensor], Tensor]  # model-space points (B, ...) -> log w_0, (B,)


def classifier_log_w(classifier: DensityRatio) -> CleanLogW:
    """A time-independent ratio model as the tilt's clean weights: its log ratio at σ_min."""
    def log_w(x: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([classifier.log_ratio(part, torch.full((len(part),), SIGMA_MIN, device=part.device))
                              for part in x.split(1024)])
    return log_w


@torch.no_grad()
def clean_val_bce(log_w: CleanLogW, base: Tensor, val_ref: Tensor, val_bias: Tensor) -> float:
    """Class-balanced BCE on held-out clean data (model space) of log w_0 normalised to mean 1
    over the base set: what the tilted term with these weights is where σ → 0. Lower is better;
    log w ≡ 0 scores log 2."""
    offset = torch.logsumexp(log_w(base), 0) - math.log(len(base))
    return sum(F.binary_cross_entropy_with_logits(log_w(x) - offset, torch.full_like(offset, label).expand(len(x)))
               .item() for x, label in ((val_ref, 1.0), (val_bias, 0.0))) / 2


def choose_tilt_weights(model: LearnedRatio, candidates: dict[str, CleanLogW | None], x_bias: Tensor,
                        val_ref: Tensor, val_bias: Tensor) -> tuple[str, dict[str, float]]:
    """The candidate clean weights (None: the linear term's) with the lowest `clean_val_bce` on
    the held-out split, and every candidate's score; the first on a tie."""
    base = model.base_points(x_bias)
    val_ref, val_bias = (to_model_space(x).to(model.delta) for x in (val_ref, val_bias))
    scores = {name: clean_val_bce(fn or model.linear_log_w, base, val_ref, val_bias)
              for name, fn in candidates.items()}
    return min(scores, key=scores.get), scores


class _TiltKernel(torch.autograd.Function):
    """The tilted base's value log S_w − log S_1, with S_w = Σ_j w_j·k_j, S_1 = Σ_j k_j and the
    Gaussian kernel k_j = exp((xᵀx_j − |x_j|²/2)/σ²) (|x|² cancels), and, when x needs one, its
    input gradient in the same pass: (E_tilted[x0 | x] − E[x0 | x])/σ², the two posterior means
    being (k·(w⊙X))/S_w and (k·X)/S_1, all four sums from one product with `stacked` = [w, 1, w⊙X, X].
    One (rows × points) matrix per chunk of rows, worked in place, and no autograd graph of it
    (docs/design.md §4)."""

    @staticmethod
    def forward(ctx, x, sigma, points, half_sq, weights, stacked):
        want_grad = ctx.needs_input_grad[0]
        rows = max(1, TILT_CHUNK // max(1, len(points)))
        values, grads = [], []
        for start in range(0, len(x), rows):  # bounded memory: a chunk of rows against the whole set
            xs, s2 = x[start:start + rows], sigma[start:start + rows, None] ** 2
            k = torch.addmm(half_sq, xs, points.T, beta=-1).div_(s2)
            # a kernel value below e^-87 of the row's largest counts as 0: exp is ten times slower
            # where its result leaves float32's normal range, and such a term is lost in any sum
            k = k.sub_(k.amax(1, keepdim=True)).clamp_(min=_EXP_FLOOR).exp_().sub_(math.exp(_EXP_FLOOR))
            # S_w, S_1 (relative to the row's largest kernel value) and, for the gradient, k·(w⊙X), k·X
            sums = k @ (stacked if want_grad else weights)
            values.append(sums[:, 0].log() - sums[:, 1].log())
            if want_grad:
                tilted, plain = sums[:, 2:].chunk(2, dim=1)
                grads.append((tilted / sums[:, :1] - plain / sums[:, 1:2]) / s2)
        if want_grad:
            ctx.save_for_backward(torch.cat(grads))
        return torch.cat(values)

    @staticmethod
    def backward(ctx, grad_value):
        (grad,) = ctx.saved_tensors
        return grad_value[:, None] * grad, None, None, None, None, None


class PriorNet(nn.Module):
    """What the untrained discriminator is, its output layer at zero: the logit 0 for every input,
    so the LearnedRatio is its prior (the large-σ term alone, or w ≡ 1). Kept in place of the network
    in σ bands that chose the untrained state, it makes the network's forward and input gradient
    there free instead of computing an exact zero."""

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return x.new_zeros(len(x), 1)


class BandedNet(nn.Module):
    """One copy of a discriminator network per σ band, each the state that was best on held-out
    data in its band; a sample is routed by its c_noise. Autograd flows to the inputs as usual."""

    def __init__(self, nets: list[nn.Module], c_noise_edges: list[float]):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.register_buffer("edges", torch.tensor(c_noise_edges))

    @classmethod
    def for_bands(cls, nets: list[nn.Module]) -> BandedNet:
        """One network per band of bands.BAND_EDGES (σ), routed by c_noise; on their device."""
        edges = [float(Precond.c_noise(torch.tensor(e))) for e in BAND_EDGES[:len(nets) - 1]]
        device = next(p.device for net in nets for p in net.parameters())  # PriorNets have none
        return cls(nets, edges).to(device)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        band = torch.bucketize(c_noise.float(), self.edges)
        out = x.new_zeros(len(x), 1)
        for k, net in enumerate(self.nets):
            if isinstance(net, PriorNet):  # its rows keep the zero they start with
                continue
            rows = (band == k).nonzero().flatten()
            if len(rows):
                out = out.index_put((rows,), net(x[rows], c_noise[rows]).to(out.dtype))
        return out


def net_layout(net: nn.Module) -> list[str]:
    """What a trained discriminator's network is made of, per σ band ("net" or "prior"; one entry
    for a single network), so that a cache can rebuild it (`from_layout`)."""
    return ["prior" if isinstance(part, PriorNet) else "net" for part in net_parts(net)]


def from_layout(net: nn.Module, layout: list[str]) -> nn.Module:
    """A network of that layout: `net` itself for ["net"], else PriorNets and copies of `net`."""
    if layout == ["net"]:
        return net
    parts = [PriorNet() if kind == "prior" else copy.deepcopy(net) for kind in layout]
    return parts[0] if len(parts) == 1 else BandedNet.for_bands(parts)


def net_parts(net: nn.Module) -> list[nn.Module]:
    """The per-band networks of a layout (one entry for a single network)."""
    return list(net.nets) if isinstance(net, BandedNet) else [net]


SELECTIONS = ("band", "global", "last")


_OPTION = {o.name: o.default for o in Discriminator.options}  # the one declaration of their defaults
_RUN = {f.name: f.default for f in fields(RunConfig)}


@dataclass(frozen=True)
class RatioTrainConfig:
    """How a discriminator is trained: BCE on class-balanced batches (D_ref = 1, D_bias = 0), AdamW,
    a share of each set held out for model selection (docs/design.md §4). The run's shared ratio
    options and the discriminator's own (estimators/discriminator.py, which documents each) fill
    it; the defaults are theirs."""

    steps: int = _RUN["ratio_steps"]  # at most; early stopping may end sooner
    batch_size: int = _RUN["ratio_batch_size"]  # half from each set
    lr: float = _RUN["ratio_lr"]
    weight_decay: float = _OPTION["weight_decay"]
    holdout: float = _OPTION["holdout"]  # 0 = no selection, keep the last state
    patience: int = _OPTION["patience"]
    select: str = _OPTION["select"]
    limit: bool = _OPTION["limit"]  # the model is built with it, as with limit_var, limit_base, sigma_floor
    limit_var: str = _OPTION["limit_var"]
    limit_base: str = _OPTION["limit_base"]
    tilt_weights: str = _OPTION["tilt_weights"]
    refit: bool = _OPTION["refit"]
    sigma_floor: float = _OPTION["sigma_floor"]
    prior: bool = _OPTION["prior"]  # the untrained state (output layer zeroed where the model is built)
    backbone: str = _RUN["ratio_backbone"]  # ratio_cache.ratio_net_for builds it; keys the cache
    sigma: str = _OPTION["sigma"]  # the training σ's distribution (draw_ratio_sigma)
    eval_every: int = 50


@dataclass
class RatioFit:
    """The trained model and its curves: per evaluation step and σ band, the training BCE since
    the previous evaluation and the held-out BCE; per band, the step kept and its held-out BCE."""

    model: LearnedRatio
    curves: list[dict]
    chosen: list[int]
    val_bce: list[float | None]  # None without a holdout
    tilt: dict | None = None  # the tilt's clean weights: {"weights": name, "clean_val_bce": {name: BCE}}

    def summary(self) -> dict:
        """What a run record keeps of the fit (JSON)."""
        bands = [band_label(k) for k in range(N_BANDS)] if len(self.chosen) > 1 else ["clean"]
        out = {"bands": bands, "chosen_step": self.chosen, "val_bce": self.val_bce, "curves": self.curves}
        return out if self.tilt is None else {**out, "tilt": self.tilt}


def split_holdout(x: Tensor, share: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(train, held out): a random `share` of x held out, at least one sample kept for training."""
    n_out = min(len(x) - 1, round(share * len(x))) if share > 0 else 0
    perm = torch.randperm(len(x), generator=generator)
    return x[perm[n_out:]], x[perm[:n_out]]


def ratio_splits(x_ref: Tensor, x_bias: Tensor, share: float,
                 generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The discriminator's (train, held-out) splits of D_ref and D_bias: the first draws of its
    `ratio_batches` stream, so that anything else trained for it (the encoder of
    `--ratio-backbone score`) can avoid its held-out data."""
    x_ref, val_ref = split_holdout(x_ref, share, generator)
    x_bias, val_bias = split_holdout(x_bias, share, generator)
    return x_ref, val_ref, x_bias, val_bias


def bias_training_split(x_ref: Tensor, x_bias: Tensor, share: float, seed: int) -> Tensor:
    """The part of D_bias a run's discriminator trains on (`ratio_splits` on a fresh `ratio_batches`
    stream, as `train_ratio` draws it first), for what else is fitted on it alone."""
    return ratio_splits(x_ref, x_bias, share, generator(seed, "ratio_batches"))[2]


class HeldOutBCE:
    """Class-balanced BCE at each of `sigmas` on held-out samples with fixed noise (at most 512
    samples a class, each with enough noise draws to make about 512 points a class and σ)."""

    def __init__(self, x_ref: Tensor, x_bias: Tensor, sigmas: list[float], generator: torch.Generator, device):
        def points(x):
            x = to_model_space(x[:512])
            reps = max(1, min(16, math.ceil(512 / len(x))))
            x0 = x.repeat((reps,) + (1,) * (x.ndim - 1))
            return [(x0 + s * torch.randn(x0.shape, generator=generator)).to(device) for s in sigmas]
        self.sigmas, self.ref, self.bias = sigmas, points(x_ref), points(x_bias)
        self._base_model, self._bases = None, None

    @torch.no_grad()
    def fix_base(self, model: LearnedRatio) -> None:
        """Compute `model`'s base term on the fixed points once: it does not train, and the tilted
        one costs a (points × base set) kernel per call. Used for `model` only, while it is it."""
        self._base_model = model if model.has_limit else None
        if self._base_model is not None:
            self._bases = [[model.base_term(x, self._sigma(x, s)) for x in (x_ref, x_bias)]
                           for s, x_ref, x_bias in zip(self.sigmas, self.ref, self.bias)]

    @staticmethod
    def _sigma(x: Tensor, s: float) -> Tensor:
        return torch.full((len(x),), s, device=x.device)

    @torch.no_grad()
    def __call__(self, model: DensityRatio) -> list[float]:
        """Per σ, the BCE of `model`'s log-ratio on the held-out points; any ratio model (the
        bench scripts score exact and label-informed ones too), with the fixed base where set."""
        out = []
        for k, (s, x_ref, x_bias) in enumerate(zip(self.sigmas, self.ref, self.bias)):
            bce = []
            for i, (x, label) in enumerate(((x_ref, 1.0), (x_bias, 0.0))):
                sigma = self._sigma(x, s)
                logit = (model.log_ratio(x, sigma, base=self._bases[k][i]) if model is self._base_model
                         else model.log_ratio(x, sigma))
                bce.append(F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, label)).item())
            out.append(sum(bce) / 2)
        return out


# steps between the discriminator's checkpoints (and on SIGINT/SIGTERM), as TrainConfig.checkpoint_every;
# not a RatioTrainConfig field, every one of which keys the cached model (config.ratio_cache_fields)
RATIO_CHECKPOINT_EVERY = 1000


def train_ratio(model: LearnedRatio, x_bias: Tensor, x_ref: Tensor, cfg: RatioTrainConfig,
                generator: torch.Generator, on_step: Callable[[int], None] = lambda step: None,
                checkpoint: Path | None = None, classifier: DensityRatio | None = None) -> RatioFit:
    """Train `model` so that its logit estimates log w_σ; σ is log-uniform over [floor, σ_max].

    Each class contributes half of every batch, so the Bayes-optimal logit is log p_ref,σ / p_bias,σ.
    With a holdout, before training and every `eval_every` steps the held-out BCE per σ band
    decides which state is kept (`select`), and training stops when no band improved for
    `patience` steps: the model is chosen on held-out data only. With `prior`, the untrained state
    is a candidate: with the output layer at zero (`zero_output_layer`) it is the prior — the large-σ
    term alone, or w ≡ 1 — which a band keeps where every trained state is worse on held-out data
    (a few reference images are memorised within 50 steps). The returned model is frozen, in eval
    mode; a time-independent one has a single band (σ_min).

    With `checkpoint`, the training loop's whole state (network, optimiser, schedule, random stream,
    selection so far) is saved there every RATIO_CHECKPOINT_EVERY steps, when it ends and on
    SIGINT/SIGTERM, and a call that finds it resumes from it: an interrupted fit ends as an
    uninterrupted one would, bit for bit. The caller deletes it once the model is kept. A refit is
    not checkpointed: interrupted, it starts again from the end of the selection loop.

    A tilted base takes its clean weights from `cfg.tilt_weights`: the linear term's, those of
    `classifier` (a time-independent model trained on the same split), or, with "select", the one
    of the two with the lower held-out clean BCE (`choose_tilt_weights`), recorded in the fit.
    """
    device = next(model.parameters()).device
    select = cfg.select if cfg.holdout > 0 else "last"
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {cfg.select!r}")
    all_ref, all_bias = x_ref, x_bias
    init = _snapshot(model.net) if cfg.refit else None
    x_ref, val_ref, x_bias, val_bias = ratio_splits(x_ref, x_bias, cfg.holdout, generator)
    model.fit_limit(x_ref, x_bias)
    clean, tilt = _tilt_weights(model, cfg, classifier, x_bias, val_ref, val_bias)
    if clean is not None:
        model.attach_tilt(x_bias, clean)
    bands = N_BANDS if model.time_dependent else 1
    sigmas = VAL_SIGMAS if model.time_dependent else [SIGMA_MIN]
    held_out = HeldOutBCE(val_ref, val_bias, sigmas, generator, device) if select != "last" else None
    if held_out is not None:
        held_out.fix_base(model)  # the base is fitted above and does not train
    opt, sched, half, labels = _optimiser(model, cfg, device)
    edges = torch.tensor(BAND_EDGES, device=device)
    best, best_val, chosen = [math.inf] * bands, [None] * bands, [cfg.steps] * bands
    best_states: list[dict | None] = [None] * bands
    train_sum, train_n = torch.zeros(N_BANDS, device=device), torch.zeros(N_BANDS, device=device)
    curves, last_gain, step = [], 0, 0

    def evaluate(step: int) -> None:
        """Held-out BCE per band now; keep each band's best state (the untrained one included)."""
        nonlocal last_gain
        model.eval()
        per_sigma = held_out(model)
        model.train()
        val = [sum(per_sigma[3 * k:3 * k + 3]) / 3 for k in range(N_BANDS)] if bands > 1 else per_sigma
        if step == 0:  # nothing trained on yet
            train = [None] * bands
        else:
            train = (train_sum / train_n.clamp(min=1)).tolist() if bands > 1 else [
                float(train_sum.sum() / train_n.sum())]
        curves.extend({"step": step, "band": k, "train_bce": train[k], "val_bce": val[k]} for k in range(bands))
        train_sum.zero_(), train_n.zero_()
        scores = val if select == "band" else [sum(val) / len(val)] * bands
        state = None  # one copy for the bands that improved now: bands that chose one step share a network
        for k in range(bands):
            if scores[k] < best[k] - 1e-4:
                best[k], best_val[k], chosen[k], last_gain = scores[k], val[k], step, step
                state = state or _snapshot(model.net)
                best_states[k] = state

    model.train()
    prior_is_zero = False
    if held_out is not None and cfg.prior:
        evaluate(0)
        prior_is_zero = _outputs_zero(model, held_out)

    def save(done: bool) -> None:
        """The loop's state after `step` steps (everything above is recomputed the same way)."""
        unique = list({id(s): s for s in best_states if s is not None}.values())  # shared states once
        index = {id(s): i for i, s in enumerate(unique)}
        save_torch(checkpoint, {
            "config": asdict(cfg), "step": step, "done": done, "net": model.net.state_dict(),
            "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": generator.get_state(),
            "best": best, "best_val": best_val, "chosen": chosen, "last_gain": last_gain, "curves": curves,
            "states": unique, "state_of_band": [None if s is None else index[id(s)] for s in best_states],
            "train_sum": train_sum, "train_n": train_n})

    done = False
    if checkpoint is not None and checkpoint.exists():
        saved = load_torch(checkpoint, expect=asdict(cfg))
        model.net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        generator.set_state(saved["rng"])
        for name, kept in (("best", best), ("best_val", best_val), ("chosen", chosen), ("curves", curves)):
            kept[:] = saved[name]  # in place: `evaluate` holds these lists
        best_states[:] = [None if i is None else saved["states"][i] for i in saved["state_of_band"]]
        train_sum.copy_(saved["train_sum"]), train_n.copy_(saved["train_n"])
        step, last_gain, done = saved["step"], saved["last_gain"], saved["done"]
    first = cfg.steps + 1 if done else step + 1
    saved_at = time.monotonic()
    with stop_requests() as stop:
        for step in range(first, cfg.steps + 1):  # none left: `step` keeps the saved count
            if stop:
                step -= 1  # the steps done
                if checkpoint is not None:
                    save(done=False)
                raise Interrupted(f"interrupted during ratio training after step {step}/{cfg.steps}"
                                  + (f"; checkpoint saved to {checkpoint}" if checkpoint is not None else "")
                                  + "; run the same command again")
            sigma, bce = _ratio_step(model, opt, sched, x_bias, x_ref, half, labels, generator, device, cfg.sigma)
            band = torch.bucketize(sigma, edges)
            train_sum.index_add_(0, band, bce)
            train_n.index_add_(0, band, torch.ones_like(bce))
            on_step(step)
            if held_out is not None and not (step % cfg.eval_every and step != cfg.steps):
                evaluate(step)
                if step - last_gain >= cfg.patience:
                    break
            if checkpoint is not None and (step % RATIO_CHECKPOINT_EVERY == 0
                                           or time.monotonic() - saved_at > checkpoints.CHECKPOINT_SECONDS):
                save(done=False)
                saved_at = time.monotonic()
        if checkpoint is not None and not done:
            save(done=True)  # an interrupted refit starts from here
        if stop:  # a signal during the last step or the final save: honoured, not lost
            raise Interrupted("interrupted after ratio training" + (f"; checkpoint saved to {checkpoint}"
                              if checkpoint is not None else "") + "; run the same command again")
    if select == "last":
        chosen = [step] * bands
    else:
        if cfg.refit:  # the selected lengths, retrained from the same start on all the data
            model.net.load_state_dict(init)
            best_states = _refit(model, all_bias, all_ref, cfg, chosen, generator, on_step, clean)
        # a band that kept the untrained state gets a PriorNet, when that state's output is exactly 0
        prior = [at == 0 for at in chosen] if prior_is_zero else [False] * bands
        model = _restore(model, best_states, prior)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return RatioFit(model, curves, chosen, best_val, tilt)


def _tilt_weights(model: LearnedRatio, cfg: RatioTrainConfig, classifier: DensityRatio | None, x_bias: Tensor,
                  val_ref: Tensor, val_bias: Tensor) -> tuple[CleanLogW | None, dict | None]:
    """The tilted base's clean weights as `cfg.tilt_weights` asks (None: the linear term's, which
    `fit_limit` attached) and what the record says of them (None for the linear ones)."""
    if model.limit_base != "tilt" or cfg.tilt_weights == "linear":
        return None, None
    if cfg.tilt_weights not in TILT_WEIGHTS:
        raise ValueError(f"tilt_weights must be one of {TILT_WEIGHTS}, got {cfg.tilt_weights!r}")
    if classifier is None:
        raise ValueError(f"tilt_weights={cfg.tilt_weights!r} needs the time-independent classifier")
    candidates = {"classifier": classifier_log_w(classifier)}
    held_out = len(val_ref) > 0 and len(val_bias) > 0
    if cfg.tilt_weights == "select":
        if not held_out:
            raise ValueError("tilt_weights='select' needs held-out data (holdout > 0)")
        candidates = {"linear": None, **candidates}
    if not held_out:  # nothing to score on (holdout 0): the classifier's weights, unscored
        return candidates["classifier"], {"weights": "classifier", "clean_val_bce": {}}
    name, scores = choose_tilt_weights(model, candidates, x_bias, val_ref, val_bias)
    return candidates[name], {"weights": name, "clean_val_bce": scores}


def draw_ratio_sigma(n: int, proposal: str, floor: float, generator: torch.Generator) -> Tensor:
    """σ for the time-dependent discriminator's training: log-uniform over [floor, σ_max] (every
    level the sampler visits), "edm": the score network's log-normal clamped to that range — the σ
    at which TIW-DSM's loss weighs the correction's error (evaluate.corr_err) — or "mixed": the
    two interleaved, half each."""
    if proposal == "log_uniform":
        return sample_log_uniform_sigma(n, generator, lo=floor)
    if proposal not in SIGMA_PROPOSALS:
        raise ValueError(f"the σ proposal must be one of {SIGMA_PROPOSALS}, got {proposal!r}")
    edm = sample_training_sigma(n, generator).clamp(floor, SIGMA_MAX)
    if proposal == "edm":
        return edm
    return torch.where(torch.arange(n) % 2 == 0, sample_log_uniform_sigma(n, generator, lo=floor), edm)


def zero_output_layer(net: nn.Module) -> nn.Module:
    """Zero the discriminator's output layer (its last Linear or Conv2d with one output), so that
    its untrained logit is 0 and the untrained LearnedRatio is the prior. A network without such a
    layer is left as it is."""
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear) and m.out_features == 1 or isinstance(m, nn.Conv2d) and m.out_channels == 1:
            last = m
    if last is not None:
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
    return net


def _snapshot(net: nn.Module) -> dict:
    """A copy of the network's state, detached from training."""
    return {n: t.detach().clone() for n, t in net.state_dict().items()}


def _optimiser(model: LearnedRatio, cfg: RatioTrainConfig, device) -> tuple:
    """AdamW with a cosine schedule over cfg.steps, half a batch per class and its labels."""
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    half = cfg.batch_size // 2
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps), half, labels


def _refit(model: LearnedRatio, x_bias: Tensor, x_ref: Tensor, cfg: RatioTrainConfig, chosen: list[int],
           generator: torch.Generator, on_step: Callable[[int], None], clean: CleanLogW | None) -> list[dict]:
    """Train on all of D_ref and D_bias (the held-out share too) for as many steps as selection
    chose, with the same optimiser and schedule and the tilt's chosen clean weights; each band's
    state at its chosen step."""
    device = next(model.parameters()).device
    model.fit_limit(x_ref, x_bias, clean)
    opt, sched, half, labels = _optimiser(model, cfg, device)
    start = _snapshot(model.net) if 0 in chosen else None  # 0: the untrained prior
    states: list[dict | None] = [start if at == 0 else None for at in chosen]
    model.train()
    with stop_requests() as stop:
        for step in range(1, max(chosen) + 1):
            if stop:
                raise Interrupted(f"interrupted during the ratio refit at step {step}/{max(chosen)}; "
                                  "run the same command again")
            _ratio_step(model, opt, sched, x_bias, x_ref, half, labels, generator, device, cfg.sigma)
            on_step(step)
            state = None
            for k, at in enumerate(chosen):
                if at == step:
                    state = state or _snapshot(model.net)
                    states[k] = state  # bands that chose one step share one state
    return states


def _outputs_zero(model: LearnedRatio, held_out: HeldOutBCE) -> bool:
    """Whether the discriminator's network answers exactly 0 on the held-out points (σ_min and
    σ_max): true of an output layer at zero (`zero_output_layer`), which a network without such a
    layer does not have."""
    training, zero = model.training, True
    model.eval()
    with torch.no_grad():
        for points, sigma in ((held_out.ref[0], held_out.sigmas[0]), (held_out.bias[-1], held_out.sigmas[-1])):
            zero = zero and not model.logit(points, torch.full((len(points),), sigma, device=points.device)).any()
    model.train(training)
    return bool(zero)


def _restore(model: LearnedRatio, states: list[dict], prior: list[bool]) -> LearnedRatio:
    """The model with each band's best state (one network when every band chose the same), a
    PriorNet where `prior` says the band kept the untrained zero-output state."""
    if all(prior):
        layout, states = ["prior"], states[:1]
    elif not any(prior) and all(state is states[0] for state in states):
        layout, states = ["net"], states[:1]
    else:
        layout = ["prior" if is_prior else "net" for is_prior in prior]
    model.net = from_layout(model.net, layout)  # edges on the nets' device (a CUDA run found them on the CPU)
    for part, kind, state in zip(net_parts(model.net), layout, states):
        if kind == "net":
            part.load_state_dict(state)
    return model


def _ratio_step(model, opt, sched, x_bias, x_ref, half, labels, generator, device,
                proposal: str) -> tuple[Tensor, Tensor]:
    """One BCE step on a class-balanced batch of noised samples; returns σ and the per-sample BCE."""
    i_ref = torch.randint(len(x_ref), (half,), generator=generator)
    i_bias = torch.randint(len(x_bias), (half,), generator=generator)
    x0 = to_model_space(torch.cat([x_ref[i_ref], x_bias[i_bias]]).to(device))
    if model.time_dependent:
        sigma = draw_ratio_sigma(2 * half, proposal, model.sigma_floor, generator).to(device)
    else:
        sigma = torch.full((2 * half,), SIGMA_MIN, device=device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    logits = model.log_ratio(x0 + append_dims(sigma, x0.ndim) * noise, sigma)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    opt.zero_grad(set_to_none=True)
    bce.mean().backward()
    opt.step()
    sched.step()
    return sigma, bce.detach()
