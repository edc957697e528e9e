"""The one trainer every method shares: data draws, noise, optimiser, EMA, checkpoints, signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import load_torch, save_torch
from .diffusion import Batch, Denoiser, sample_training_sigma, to_model_space
from .errors import Interrupted, TiwbenchError
from .methods.base import Method
from .ratio import DensityRatio
from .signals import stop_requests


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float = 1e-3
    ema_decay: float = 0.999
    warmup: int = 0  # linear learning-rate warm-up, in steps
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    checkpoint_every: int = 1000


def train_score(method: Method, denoiser: Denoiser, x_train: Tensor, pi: float,
                ratio_model: DensityRatio | None, alpha: float, cfg: TrainConfig, seed: int,
                ckpt_path: Path, on_step: Callable[[int], None] = lambda step: None) -> AveragedModel:
    """Minimise the mean of `method.loss` over draws from `x_train`; returns the EMA denoiser.

    Resumes from `ckpt_path` when it holds a checkpoint of this configuration, checkpoints every
    `cfg.checkpoint_every` steps, at the end, and on SIGINT/SIGTERM (then raises Interrupted).
    """
    device = next(denoiser.parameters()).device
    x_train = x_train.to(device)
    ema = AveragedModel(denoiser, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.Adam(denoiser.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    if ckpt_path.exists():
        state = load_torch(ckpt_path, expect=asdict(cfg))
        denoiser.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"])
        step = state["step"]

    def save() -> None:
        save_torch(ckpt_path, {"model": denoiser.state_dict(), "ema": ema.state_dict(),
                               "opt": opt.state_dict(), "rng": gen.get_state(), "step": step,
                               "config": asdict(cfg)})

    on_step(step)
    denoiser.train()
    with stop_requests() as stop:
        while step < cfg.steps:
            if stop:
                save()
                raise Interrupted(f"interrupted at step {step}/{cfg.steps}; checkpoint saved to "
                                  f"{ckpt_path}; run the same command again to resume")
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
            idx = torch.randint(len(x_train), (cfg.batch_size,), generator=gen)
            x0 = to_model_space(x_train[idx.to(device)])
            sigma = sample_training_sigma(cfg.batch_size, gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            loss = method.loss(Batch(x0, sigma, noise, pi), denoiser, ratio_model, alpha).mean()
            if not torch.isfinite(loss):
                raise TiwbenchError(f"non-finite loss at step {step}; the last good checkpoint "
                                    f"is kept at {ckpt_path}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.grad_clip)
            opt.step()
            ema.update_parameters(denoiser)
            step += 1
            on_step(step)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
    ema.eval()
    return ema
