"""Training a run's score network (shared by every method), and the score network on which
`--ratio-backbone score` stands: the same network and training options, trained on the
discriminator's training split of D_bias only — never on D_ref, whose few points a score network
memorises (so that its features tell membership, not the ratio), and never on the held-out data
that choose the discriminator. Trained once per data, seed and options, cached."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from . import dist, registry
from .checkpoint import load_torch, save_torch
from .config import RunConfig, for_method
from .console import progress_bar, say
from .datasets.base import BenchmarkData, DatasetRecipe
from .diffusion import Denoiser
from .errors import TiwbenchError
from .locks import run_lock
from .methods.base import Method
from .ratio import DensityRatio, bias_training_split
from .streams import digest
from .train import train_score

ENCODER_METHOD = "dsm_obs"  # its loss (plain DSM) and score-training options make the encoder


def training_set(method: Method, data: BenchmarkData, ref_share: float = 0.0) -> tuple[Tensor, float, tuple]:
    """The data the score network sees, its unbiased share π, and the batch strata
    (docs/design.md §2). With `ref_share` > 0 (methods on D_obs), every batch holds that share of
    D_ref samples, and π is that share: the training distribution the ratio refers to."""
    if method.train_on == "bias":
        return data.x_bias, 0.0, ()
    if method.train_on == "ref":
        return data.x_ref, 1.0, ()
    x = torch.cat([data.x_bias, data.x_ref])
    if ref_share > 0 and method.stratified_batches:
        return x, ref_share, (len(data.x_ref), ref_share)
    return x, len(data.x_ref) / len(x), ()


def fit_score(cfg: RunConfig, method: Method, recipe: DatasetRecipe, sigma_data: float,
              train_set: tuple[Tensor, float, tuple], ratio_model: DensityRatio | None, device: torch.device,
              compile: bool, checkpoint: Path, curves: list | None = None,
              on_curve: Callable | None = None, resumed: dict | None = None) -> nn.Module:
    """Train the run's score network on `train_set` (training_set's triple), resuming from
    `checkpoint` (`resumed`: train.train_score's); returns its EMA denoiser."""
    torch.manual_seed(cfg.seed)  # the "init" stream
    denoiser = Denoiser(recipe.score_net(cfg.net), sigma_data).to(device)
    x_train, pi, strata = train_set
    train_cfg = cfg.train_config(strata=(strata[0], round(strata[1] * cfg.batch_size)) if strata else ())
    with progress_bar(f"score ({cfg.method})", cfg.steps) as update:
        return train_score(method, denoiser, x_train, pi, ratio_model, cfg.alpha, train_cfg, cfg.seed,
                           checkpoint, on_step=update, precision=cfg.precision, compile=compile,
                           curves=curves, on_curve=on_curve, resumed=resumed)


def encoder_config(cfg: RunConfig) -> RunConfig:
    """The score-training options of the encoder: those of the dsm_obs run of `cfg`'s data and
    seed, without its batch strata (it sees D_bias only)."""
    method = registry.load("method", ENCODER_METHOD)
    return replace(for_method(cfg, ENCODER_METHOD, method.ratio, method.train_on, method.stratified_batches),
                   ref_share=0.0)


def encoder_key(cfg: RunConfig, holdout: float) -> dict:
    """What determines the encoder: its training options (as a run id: only those that differ from
    their neutral values, so that an option added later keeps the cache) and the discriminator's
    split of D_bias."""
    return {"run": encoder_config(cfg).run_id, "trained_on": "ratio_split_of_bias", "holdout": holdout}


def score_net_path(cfg: RunConfig, results: Path, holdout: float) -> Path:
    """The cached encoder's score network; `holdout` is the discriminator's held-out share."""
    name = f"{cfg.dataset}-ref{cfg.ref:g}-s{cfg.seed}-bias-{digest(encoder_key(cfg, holdout))}.pt"
    return results / "_score_nets" / name


def score_net_skeleton(cfg: RunConfig, recipe: DatasetRecipe) -> nn.Module:
    """The encoder's score network, untrained: what its weights are loaded into."""
    net = recipe.score_net(cfg.net)
    if not hasattr(net, "encode"):
        raise TiwbenchError(f"--ratio-backbone score: the score network of dataset {cfg.dataset!r} "
                            f"({type(net).__name__}) has no encode(x, c_noise)")
    return net


def score_net_for(cfg: RunConfig, recipe: DatasetRecipe, data: BenchmarkData, results: Path,
                  device: torch.device, holdout: float) -> nn.Module:
    """The encoder's trained raw network F_θ for `cfg`, frozen: from the cache, else trained now."""
    key, path = encoder_key(cfg, holdout), score_net_path(cfg, results, holdout)
    net = score_net_skeleton(cfg, recipe)
    if dist.any_rank(not path.exists()):
        lock = run_lock(path.parent, path.name + ".lock", wait=True) if dist.is_main() else nullcontext()
        with lock:
            # process 0 decides under the lock (another sweep may have trained it meanwhile) and
            # the others follow: under torchrun all train together (DDP) or none does
            if dist.any_rank(dist.is_main() and not path.exists()):
                say("training the score network of the discriminator's encoder (D_bias, training split)")
                x_bias = bias_training_split(data.x_ref, data.x_bias, holdout, cfg.seed)
                ema = fit_score(encoder_config(cfg), registry.get_method(ENCODER_METHOD), recipe, data.sigma_data,
                                (x_bias, 0.0, ()), None, device, compile=device.type == "cuda",
                                checkpoint=path.with_suffix(".ckpt"))
                if dist.is_main():
                    save_torch(path, {"model": ema.module.net.state_dict(), "config": key})  # the EMA's F_θ
                    path.with_suffix(".ckpt").unlink(missing_ok=True)
        dist.barrier()
    try:
        net.load_state_dict(load_torch(path, expect=key)["model"])
    except (KeyError, RuntimeError) as e:
        raise TiwbenchError(f"the cached score network {path} is incomplete or does not fit "
                            f"({type(e).__name__}); delete it to retrain") from None
    return net.to(device).eval().requires_grad_(False)


