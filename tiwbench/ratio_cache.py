"""Ratio models for a run: the registered estimator's fit (`--ratio NAME`), and the built-in
discriminator's training, once per dataset, options, reference size and seed, cached under
RESULTS/_ratios/ and shared by every method and process (a waiting lock keeps concurrent sweeps
from training it twice)."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
from torch import nn

from . import dist
from .checkpoint import load_torch, load_torchscript, save_torch
from .config import RunConfig
from .console import progress_bar, say
from .datasets.base import BenchmarkData, DatasetRecipe
from .errors import TiwbenchError
from .estimators.base import RatioRequest, type_of
from .locks import run_lock
from .nets.discriminator import FrozenEncoder, HeadOnFeatures, ScoreEncoder
from .ratio import (
    DensityRatio,
    LearnedRatio,
    RatioTrainConfig,
    bias_training_split,
    from_layout,
    net_layout,
    train_ratio,
    zero_output_layer,
)
from .score_nets import score_net_for, score_net_path, score_net_skeleton
from .streams import digest, generator


def ratio_model_for(cfg: RunConfig, kind: str, recipe: DatasetRecipe, data: BenchmarkData,
                    results: Path, device: torch.device) -> tuple[DensityRatio, dict | None]:
    """The ratio model of kind `kind` (time_dependent | time_independent) that `cfg`'s estimator
    fits, and what the fit recorded (for the discriminator: held-out curves, chosen steps)."""
    estimator = type_of(cfg.ratio)()
    request = RatioRequest(cfg=cfg, kind=kind, recipe=recipe, data=data,
                           options=estimator.values(cfg.ratio_options), results=results, device=device)
    out = estimator.fit(request)
    model, summary = out if isinstance(out, tuple) else (out, None)
    if not isinstance(model, DensityRatio):
        raise TiwbenchError(f"ratio estimator {cfg.ratio!r}: fit returned {type(model).__name__}, "
                            "not a tiwbench.ratio.DensityRatio")
    if bool(model.time_dependent) != (kind == "time_dependent"):
        raise TiwbenchError(f"ratio estimator {cfg.ratio!r}: asked for the {kind} ratio, fit returned a model "
                            f"with time_dependent={model.time_dependent}")
    return model.to(device).requires_grad_(False).eval(), summary


def train_config(cfg: RunConfig, options: dict) -> RatioTrainConfig:
    """The discriminator trainer's settings: the shared ratio options and the estimator's."""
    known = {f.name for f in fields(RatioTrainConfig)}
    return RatioTrainConfig(steps=cfg.ratio_steps, batch_size=cfg.ratio_batch_size, lr=cfg.ratio_lr,
                            backbone=cfg.ratio_backbone, **{k: v for k, v in options.items() if k in known})


def cache_fields(train_cfg: RatioTrainConfig) -> dict:
    """The trainer settings that key a cached discriminator: all but those at their legacy value
    (the behaviour before the option existed), so that an option added later keeps the caches
    made before it, as run ids do."""
    return type_of("discriminator").without_legacy(asdict(train_cfg))


def discriminator_key(cfg: RunConfig, kind: str, train_cfg: RatioTrainConfig, backbone: str) -> dict:
    """What identifies a cached discriminator (its file name is the digest): the data, reference
    size, seed, kind, trainer settings (cache_fields) and the frozen part's identity."""
    key = {"dataset": cfg.dataset, "dataset_options": cfg.dataset_options, "ref": cfg.ref, "seed": cfg.seed,
           "kind": kind, **cache_fields(train_cfg), "backbone": backbone}
    if cfg.precision == "tf32":  # trained with TF32 matmuls (ratio training is otherwise fp32)
        key["tf32"] = True
    return key


def check_holdout(cfg: RunConfig, holdout: float, n_ref: int) -> None:
    """Before any training: held-out selection needs a reference sample to hold out and one to
    train on (ratio.split_holdout); a reference set too small for it is one line saying what to
    change."""
    if holdout > 0 and (round(holdout * n_ref) < 1 or n_ref < 2):
        need = next(n for n in itertools.count(2) if round(holdout * n) >= 1)
        raise TiwbenchError(f"--ref {cfg.ref:g} gives {n_ref} reference sample{'s' * (n_ref != 1)}, too few for "
                            f"the discriminator's held-out share {holdout:g}: it needs at least {need}; "
                            "use a larger --ref or --ratio-option holdout=0")


def fit_discriminator(request: RatioRequest, options: dict) -> tuple[DensityRatio, dict]:
    """The built-in discriminator (estimators.discriminator) for `request`, trained with `options`
    or read from its cache."""
    cfg, kind, data, results, device = request.cfg, request.kind, request.data, request.results, request.device
    time_dependent = kind == "time_dependent"
    train_cfg = train_config(cfg, options)
    check_holdout(cfg, train_cfg.holdout, len(data.x_ref))
    key = discriminator_key(cfg, kind, train_cfg, backbone_identity(cfg, results, train_cfg.holdout))
    path = results / "_ratios" / f"{cfg.dataset}-ref{cfg.ref:g}-s{cfg.seed}-{kind}-{digest(key)}.pt"
    # a cached model holds its frozen encoder's weights: no need to train (or load) the encoder.
    # All processes agree, since training the encoder is collective under torchrun.
    cached = not dist.any_rank(not path.exists())
    net = ratio_net_for(cfg, request.recipe, data, results, device, train_cfg.holdout, cached=cached)
    model = LearnedRatio(zero_output_layer(net) if train_cfg.prior else net, data.sigma_data, time_dependent,
                         # the large-σ term is the time-dependent ratio's: clean data have no large σ
                         data_shape=tuple(data.x_bias.shape[1:]) if train_cfg.limit and time_dependent else None,
                         sigma_floor=train_cfg.sigma_floor * data.sigma_data,
                         limit_var=train_cfg.limit_var, limit_base=train_cfg.limit_base).to(device)
    summary = None
    classifier = None  # the tilt's clean weights may come from the time-independent model (on every rank)
    if not cached and needs_classifier(train_cfg, model):
        classifier, _ = fit_discriminator(classifier_request(request), clean_options(options))
    if not path.exists() and dist.is_main():  # other processes wait, then read the cache
        # another sweep on this folder may be training the same model: wait for it, then reuse
        with run_lock(path.parent, path.name + ".lock", wait=True):
            if not path.exists():
                partial = path.with_name(path.stem + ".partial.pt")  # an interrupted fit resumes from it
                with progress_bar(f"ratio ({kind})", cfg.ratio_steps) as update:
                    fit = train_ratio(model, data.x_bias, data.x_ref, train_cfg,
                                      generator(cfg.seed, "ratio_batches"), on_step=update, checkpoint=partial,
                                      classifier=classifier)
                model, summary = fit.model, fit.summary()
                save_torch(path, {"model": model.state_dict(), "config": key, "fit": summary,
                                  "layout": net_layout(model.net),
                                  "tilt_log_w": getattr(model, "tilt_log_w", None)})
                partial.unlink(missing_ok=True)
    dist.barrier()
    if summary is None:
        try:
            saved = load_torch(path, expect=key)
            # caches written before PriorNet say how many banded copies ("bands", 0 for one network)
            layout = saved.get("layout") or ["net"] * (saved["bands"] or 1)
            model.net = from_layout(model.net, layout)
            model.load_state_dict(saved["model"])
            # the tilt's clean weights as trained (caches from before them: the linear term's)
            model.attach_tilt(tilt_base(train_cfg, cfg.seed, data), log_w=saved.get("tilt_log_w"))
            summary = saved["fit"]
        except (KeyError, RuntimeError, TypeError) as e:
            raise TiwbenchError(f"the cached ratio model {path} is incomplete or does not fit "
                                f"({type(e).__name__}); delete it to retrain") from None
        model.requires_grad_(False).eval()
        say(f"reusing the cached {kind} ratio model {path}")
    return model, summary


def classifier_request(request: RatioRequest) -> RatioRequest:
    """The time-independent fit a tilted base with classifier weights stands on: iw_dsm's, on the
    same data and split, so that both share one cached model."""
    from .config import classifier_config

    return replace(request, cfg=classifier_config(request.cfg), kind="time_independent")


def clean_options(options: dict) -> dict:
    """`options` as a time-independent fit uses them (the others at their neutral values)."""
    estimator = type_of("discriminator")
    return estimator.values(estimator.normalise("time_independent", options))


def needs_classifier(train_cfg: RatioTrainConfig, model: LearnedRatio) -> bool:
    """Whether training `model` needs the time-independent discriminator (its tilt's weights)."""
    return model.time_dependent and model.limit_base == "tilt" and train_cfg.tilt_weights != "linear"


def tilt_base(train_cfg: RatioTrainConfig, seed: int, data: BenchmarkData):
    """The D_bias points the tilted term was fitted on (LearnedRatio.attach_tilt), as training left
    them: the discriminator's training split (the first draws of its stream), or all of D_bias
    after a refit."""
    if train_cfg.refit:
        return data.x_bias
    return bias_training_split(data.x_ref, data.x_bias, train_cfg.holdout, seed)


def backbone_identity(cfg: RunConfig, results: Path, holdout: float) -> str:
    """What identifies the discriminator's frozen part, for the cache key: nothing (scratch), the
    encoder's score network (its cache name), or the user's file (its content's digest)."""
    if cfg.ratio_backbone == "scratch":
        return "scratch"
    if cfg.ratio_backbone == "score":
        return score_net_path(cfg, results, holdout).stem
    path = Path(cfg.ratio_backbone)
    try:
        return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as e:
        raise TiwbenchError(f"--ratio-backbone {path}: cannot read it ({e.strerror})") from None


def ratio_net_for(cfg: RunConfig, recipe: DatasetRecipe, data: BenchmarkData, results: Path,
                  device: torch.device, holdout: float, cached: bool = False) -> nn.Module:
    """The discriminator network `cfg.ratio_backbone` asks for, its trainable part initialised
    from the "init" stream. `cached`: its weights, the frozen encoder's included, will come from
    the ratio cache, so the built-in encoder is built untrained instead of trained."""
    if cfg.ratio_backbone == "scratch":
        torch.manual_seed(cfg.seed)  # the "init" stream
        return recipe.ratio_net().to(device)
    if cfg.ratio_backbone == "score":
        encoder = ScoreEncoder(score_net_skeleton(cfg, recipe) if cached
                               else score_net_for(cfg, recipe, data, results, device, holdout))
        features = encoder.features
    else:
        encoder, features = scripted_encoder(Path(cfg.ratio_backbone), data, device)
    torch.manual_seed(cfg.seed)  # the "init" stream, for the head (after any encoder training)
    return HeadOnFeatures(FrozenEncoder(encoder, features)).to(device)


def scripted_encoder(path: Path, data: BenchmarkData, device: torch.device) -> tuple[nn.Module, int]:
    """A user's TorchScript encoder (x_in, c_noise) -> (B, F), checked on a probe batch; with F."""
    try:
        encoder = load_torchscript(path, device)
    except (RuntimeError, ValueError) as e:
        raise TiwbenchError(f"--ratio-backbone {path}: not a TorchScript file "
                            f"({str(e).splitlines()[0]})") from None
    probe = torch.zeros((2, *data.x_bias.shape[1:]), device=device)
    try:
        with torch.no_grad():
            out = encoder(probe, torch.zeros(2, device=device))
    except Exception as e:  # noqa: BLE001 - any failure of the user's code is reported the same way
        raise TiwbenchError(f"--ratio-backbone {path}: calling it on (x_in {tuple(probe.shape)}, c_noise (2,)) "
                            f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TiwbenchError(f"--ratio-backbone {path}: must return features of shape (B, F); "
                            f"got {shape} for a batch of 2")
    return encoder, int(out.shape[1])
