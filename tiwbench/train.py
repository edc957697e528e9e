"""The one trainer every method shares: data draws, noise, optimiser, EMA, checkpoints, signals."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import checkpoint as checkpoints
from . import dist
from .checkpoint import load_torch, save_torch
from .compiling import compile_module
from .diffusion import Batch, Denoiser, sample_training_sigma, to_model_space
from .errors import Interrupted, TiwbenchError
from .methods.base import Method
from .ratio import BAND_EDGES, N_BANDS, DensityRatio, TrainingRatio
from .signals import stop_requests
from .streams import generator


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int  # the global batch, over all processes
    lr: float = 1e-3
    ema_decay: float = 0.999
    warmup: int = 0  # linear learning-rate warm-up, in steps
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    checkpoint_every: int = 1000
    accum: int = 1  # micro-batches per process and step (gradient accumulation)
    xflip: bool = False  # augmentation: mirror each training image with probability 1/2
    strata: tuple[int, int] = ()  # (n_ref, per batch): the last n_ref rows of x_train are D_ref and
    # each batch draws exactly `per batch` of its rows from them (stratified batches); () = uniform


def autocast(device: torch.device, precision: str):
    """bf16 autocast (fp32 master weights) or nothing; TF32 is a global switch set by the caller."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class TrainStep:
    """One optimisation step of `method.loss` on this process's part of a batch: forward under
    autocast, backward (DDP-synchronised, optionally accumulated), clipping, Adam, EMA.
    Shared by the trainer and bench/throughput.py."""

    def __init__(self, method: Method, denoiser: Denoiser, ratio_model: DensityRatio | None,
                 alpha: float, pi: float, cfg: TrainConfig, precision: str = "fp32", compile: bool = False):
        self.device = next(denoiser.parameters()).device
        self.method, self.denoiser = method, denoiser
        self.alpha, self.cfg, self.precision = alpha, cfg, precision
        self.ema = AveragedModel(denoiser, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.opt = torch.optim.Adam(denoiser.parameters(), lr=cfg.lr, fused=self.device.type == "cuda")
        model = DistributedDataParallel(denoiser) if dist.world() > 1 else denoiser
        self.model = compile_module(model) if compile else model
        if compile and ratio_model is not None:  # the whole TIW step: score and ratio networks
            ratio_model = ratio_model.compiled()
        self.ratio = TrainingRatio(ratio_model, pi) if ratio_model is not None else None
        # the loss per σ band since the last `band_losses()` (sums and counts, on the device)
        self.edges = torch.tensor(BAND_EDGES, device=self.device)
        self.band_sum = torch.zeros(N_BANDS, device=self.device)
        self.band_n = torch.zeros(N_BANDS, device=self.device)

    def __call__(self, x0: Tensor, sigma: Tensor, noise: Tensor, lr: float) -> Tensor:
        """Returns the (detached) mean loss without waiting for it: the caller checks it (a
        non-finite loss makes a non-finite update, which train_score never saves)."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        accum, total = self.cfg.accum, torch.zeros((), device=self.device)
        ddp = isinstance(self.model, DistributedDataParallel)
        for k, micro in enumerate(torch.arange(len(x0)).chunk(accum)):
            with (self.model.no_sync() if ddp and k < accum - 1 else nullcontext()), \
                    autocast(self.device, self.precision):
                batch = Batch(x0[micro], sigma[micro], noise[micro], self.denoiser.precond)
                per_sample = checked_loss(self.method, self.method.loss(batch, self.model, self.ratio, self.alpha),
                                          len(micro))
                loss = per_sample.mean() / accum
            loss.backward()
            total += loss.detach()
            band = torch.bucketize(sigma[micro], self.edges)
            self.band_sum.index_add_(0, band, per_sample.detach())
            self.band_n.index_add_(0, band, torch.ones_like(per_sample))
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.ema.update_parameters(self.denoiser)
        return total

    def band_losses(self) -> list[float | None]:
        """Mean loss per σ band since the last call (None for a band no sample fell in); resets."""
        means = [float(s / n) if n > 0 else None for s, n in zip(self.band_sum.tolist(), self.band_n.tolist())]
        self.band_sum.zero_(), self.band_n.zero_()
        return means


def checked_loss(method, loss, batch: int) -> Tensor:
    """A method's per-sample loss as the trainer needs it: a tensor of shape (B,) that gradients
    reach (a plugin returning a scalar, (B, 2) or a detached loss would train nothing or the
    wrong thing, silently). Finiteness is checked every LOSS_CHECK_EVERY steps."""
    if not isinstance(loss, Tensor) or loss.shape != (batch,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TiwbenchError(f"method {method.name!r}: loss must be one value per sample, shape ({batch},); "
                            f"got {shape}")
    if torch.is_grad_enabled() and not loss.requires_grad:
        raise TiwbenchError(f"method {method.name!r}: its loss does not depend on the network "
                            "(detached, or computed without the denoiser)")
    return loss.float()


def upload(t: Tensor, device: torch.device) -> Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory without waiting, since a plain
    copy from pageable memory would make the CPU wait for the GPU's queued work."""
    if device.type != "cuda":
        return t.to(device)
    return t.contiguous().pin_memory().to(device, non_blocking=True)


def draw_indices(n: int, batch: int, strata: tuple[int, int] | tuple, gen: torch.Generator) -> Tensor:
    """A batch of row indices: uniform over n rows, or, with strata (n_ref, k), k from the last
    n_ref rows (D_ref) and batch − k from the others, in random order."""
    if not strata:
        return torch.randint(n, (batch,), generator=gen)
    n_ref, k = strata
    idx = torch.cat([torch.randint(n - n_ref, (batch - k,), generator=gen),
                     n - n_ref + torch.randint(n_ref, (k,), generator=gen)])
    return idx[torch.randperm(batch, generator=gen)]


# Losses are checked on the host every this many steps (and before every save), not after each
# step: a per-step check would make the CPU wait for the GPU at every step.
LOSS_CHECK_EVERY = 50


CURVE_POINTS = 50  # points of the loss curve a run records


def train_score(method: Method, denoiser: Denoiser, x_train: Tensor, pi: float,
                ratio_model: DensityRatio | None, alpha: float, cfg: TrainConfig, seed: int,
                ckpt_path: Path, on_step: Callable[[int], None] = lambda step: None,
                precision: str = "fp32", compile: bool = False, curves: list | None = None,
                on_curve: Callable[[list[dict]], None] | None = None,
                resumed: dict | None = None) -> AveragedModel:
    """Minimise the mean of `method.loss` over draws from `x_train`; returns the EMA denoiser.

    Every process draws the same global batch from one seeded generator and takes its slice
    (dist.local_slice), so the run does not depend on the number of processes. Resumes from
    `ckpt_path` when it holds a checkpoint of this configuration, checkpoints every
    `cfg.checkpoint_every` steps, at the end, and on SIGINT/SIGTERM (then raises Interrupted).
    A non-finite loss stops training (TiwbenchError naming its step) at the next loss check.
    `curves`, if given, receives about CURVE_POINTS points {step, band, loss}: the mean loss per σ
    band (ratio.BAND_EDGES) since the previous point, of this process's slice; kept across resumes.
    `on_curve` sees each new batch of those points as it is made (live logging, tblog.py).
    `resumed`, if given and the run resumes, receives the step it resumed from and the seconds the
    earlier segments trained (`earlier_train_s`; absent for a checkpoint that predates the count),
    so that a resumed run's record times the whole training, not its last segment.
    """
    train_step = TrainStep(method, denoiser, ratio_model, alpha, pi, cfg, precision, compile)
    device, ema, opt = train_step.device, train_step.ema, train_step.opt
    x_train = x_train.to(device)
    gen = generator(seed, "batches")
    flip_gen = generator(seed, "xflip")  # augmentation draws leave `gen` unchanged
    step, done_curves, earlier_s = 0, [], 0.0
    if ckpt_path.exists():
        state = load_torch(ckpt_path, expect=asdict(cfg))
        try:
            denoiser.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["rng"])
            flip_gen.set_state(state["flip_rng"])
            step = int(state["step"])
            done_curves = list(state.get("curves", []))
            earlier_s = state.get("train_s")  # None: a checkpoint that predates the count
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise TiwbenchError(f"the checkpoint {ckpt_path} is incomplete or does not fit this network "
                                f"({type(e).__name__}); delete it to retrain") from None
    mine = dist.local_slice(cfg.batch_size)
    if (mine.stop - mine.start) % cfg.accum:
        raise TiwbenchError(f"the per-process batch {mine.stop - mine.start} must be divisible by "
                            f"accum {cfg.accum}")
    if step and resumed is not None:
        resumed["resumed_at_step"] = step
        if earlier_s is not None:
            resumed["earlier_train_s"] = float(earlier_s)
    began = time.perf_counter()

    def save() -> None:
        if dist.is_main():
            trained_s = None if earlier_s is None else earlier_s + time.perf_counter() - began
            save_torch(ckpt_path, {"model": denoiser.state_dict(), "ema": ema.state_dict(),
                                   "opt": opt.state_dict(), "rng": gen.get_state(),
                                   "flip_rng": flip_gen.get_state(), "step": step,
                                   "config": asdict(cfg), "curves": done_curves,
                                   "train_s": trained_s})

    unchecked: list[Tensor] = []  # the losses of the steps before `step`, not yet looked at

    def check_losses() -> None:
        """One host sync for the unchecked losses; raises at the first non-finite one."""
        if not unchecked:
            return
        finite = torch.isfinite(torch.stack(unchecked)).tolist()
        first = step - len(unchecked)
        unchecked.clear()
        if not all(finite):
            raise TiwbenchError(f"non-finite loss at step {first + finite.index(False)}; the last good "
                                f"checkpoint is kept at {ckpt_path}")

    curve_every = max(1, cfg.steps // CURVE_POINTS)
    saved_at = time.monotonic()
    on_step(step)
    denoiser.train()
    with stop_requests() as stop:
        while step < cfg.steps:
            if dist.any_rank(bool(stop)):
                check_losses()
                save()
                raise Interrupted(f"interrupted at step {step}/{cfg.steps}; checkpoint saved to "
                                  f"{ckpt_path}; run the same command again to resume")
            idx = upload(draw_indices(len(x_train), cfg.batch_size, cfg.strata, gen)[mine], device)
            sigma = upload(sample_training_sigma(cfg.batch_size, gen)[mine], device)
            noise = upload(torch.randn((cfg.batch_size, *x_train.shape[1:]), generator=gen)[mine], device)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
            x0 = to_model_space(x_train[idx])
            if cfg.xflip:  # the global batch's flips, from their own stream, then this slice
                flip = upload((torch.rand(cfg.batch_size, generator=flip_gen) < 0.5)[mine], device)
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            unchecked.append(train_step(x0, sigma, noise, lr))
            step += 1
            if step % curve_every == 0 or step == cfg.steps:
                points = [{"step": step, "band": k, "loss": v}
                          for k, v in enumerate(train_step.band_losses()) if v is not None]
                done_curves += points
                if on_curve is not None:
                    on_curve(points)
            on_step(step)
            at_checkpoint = (step % cfg.checkpoint_every == 0 or step == cfg.steps
                             or time.monotonic() - saved_at > checkpoints.CHECKPOINT_SECONDS)
            if at_checkpoint or len(unchecked) == LOSS_CHECK_EVERY:
                check_losses()  # before any save: a non-finite update is never written
            if at_checkpoint:
                save()
                saved_at = time.monotonic()
        if dist.any_rank(bool(stop)):  # a signal during the last step or save: honoured, not lost
            raise Interrupted(f"interrupted after the last step; checkpoint saved to {ckpt_path}; "
                              "run the same command again to go on")
    ema.eval()
    if curves is not None:
        curves += done_curves
    return ema
