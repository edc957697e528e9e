"""One benchmark run as a pipeline over a RunConfig: data, ratio model (cached), score training,
sampling, metrics, Record (docs/design.md §1). Interrupted runs resume; finished ones are kept."""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import __version__, dist, evaluate, registry
from .checkpoint import write_json, write_text
from .compiling import compile_backend, compile_module
from .config import RunConfig, option_defaults
from .console import is_main_process, progress_bar, say
from .errors import TiwbenchError
from .estimators.base import type_of
from .locks import check_writable, run_lock
from .methods.base import guided
from .ratio import DensityRatio, TrainingRatio
from .ratio_cache import ratio_model_for
from .record import RECORD_NAME, Record
from .score_nets import fit_score, training_set
from .streams import stream_seed
from .tblog import curve_log
from .train import autocast


def record_path(cfg: RunConfig, results: Path) -> Path:
    """The run's record; written last and atomically, so it exists only for a finished run."""
    return results / cfg.run_id / RECORD_NAME


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """'auto' (or unset) is bf16 on GPUs and fp32 elsewhere; resolved before the run's identity."""
    if precision in (None, "auto"):
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise TiwbenchError(f"--device: {e}") from None
    if dev.type not in ("cpu", "cuda"):
        raise TiwbenchError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiwbenchError(f"--device {device}: CUDA is not available on this machine")
    return dev


def existing_record(cfg: RunConfig, results: Path) -> Record | None:
    """The run's record if it is finished; a record that cannot be read is reported and the run
    recomputed (never counted as finished)."""
    path = record_path(cfg, results)
    if not path.exists():
        return None
    try:
        return Record.read(path)
    except TiwbenchError as e:
        say(f"[yellow]recomputing:[/yellow] {e}")
        return None


def label_reference(cfg: RunConfig, kind: str, recipe, data, results: Path, device) -> DensityRatio | None:
    """The label-informed ratio a learned one is measured against where the data have group labels
    but no exact ratio (images): fitted once per data, reference size and seed, and cached, as
    `--ratio labels` fits it (the same file). None where it is the run's own ratio or not needed."""
    estimator = type_of(cfg.ratio)
    if data.exact_ratio is not None or data.bias_labels is None or estimator.bound:
        return None
    defaults = option_defaults("labels")  # the bound as `--ratio labels` fits it by default
    labels = replace(cfg, ratio="labels", ratio_options=type_of("labels").normalise(kind, defaults))
    return ratio_model_for(labels, kind, recipe, data, results, device)[0]


def execute(cfg: RunConfig, results: Path, device: str = "auto", data_root: Path | None = None,
            compile: bool | None = None) -> Record | None:
    """Run `cfg` unless its record exists; return the record (None on torchrun processes other
    than 0). Holds the run's lock meanwhile; a run that fails before writing anything leaves no
    folder behind."""
    return run_once(cfg, results, device, data_root, compile)[0]


def run_once(cfg: RunConfig, results: Path, device: str = "auto", data_root: Path | None = None,
             compile: bool | None = None) -> tuple[Record | None, bool]:
    """`execute`, also saying whether this call computed the run (False where its record was
    already there, or was written by another process while this one waited for the lock)."""
    if (record := existing_record(cfg, results)) is not None:
        say(f"already finished: {record.folder}")
        return record, False
    if not is_main_process():  # torchrun: process 0 holds the lock
        return _execute(cfg, results, device, data_root, compile)
    folder = results / cfg.run_id
    check_writable(folder)
    try:
        with run_lock(folder):
            return _execute(cfg, results, device, data_root, compile)
    except BaseException:
        try:
            folder.rmdir()  # only if empty: failed before writing anything
        except OSError:
            pass
        raise


def _execute(cfg: RunConfig, results: Path, device: str, data_root: Path | None,
             compile: bool | None) -> tuple[Record | None, bool]:
    """The pipeline. Under torchrun every process trains on its slice of each batch and samples
    its share; process 0 evaluates and writes. `compile` (default: on GPUs) applies
    torch.compile to the score and ratio networks, for training and for sampling."""
    if (record := existing_record(cfg, results)) is not None:  # finished while we waited
        return record, False
    folder, started, timing = results / cfg.run_id, time.perf_counter(), {}
    dev = dist.init_from_env(resolve_device(device))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.precision == "tf32"
    compile = dev.type == "cuda" if compile is None else compile
    if compile:
        compile_backend()  # an unknown TIWBENCH_COMPILE_BACKEND fails before any work
    method = registry.get_method(cfg.method)
    recipe = registry.get_dataset(cfg.dataset, **dict(cfg.dataset_options))
    data = recipe.build(cfg.ref, cfg.seed, data_root, cache_dir=results / "_cache")
    if dist.is_main():  # once the data is there: a run that cannot start leaves no folder
        write_json(folder / "config.json", cfg.to_dict())
    dist.barrier()

    t0 = time.perf_counter()
    ratio_model, ratio_fit = (ratio_model_for(cfg, method.ratio, recipe, data, results, dev) if method.ratio
                              else (None, None))
    reference = label_reference(cfg, method.ratio, recipe, data, results, dev) if method.ratio else None
    timing["ratio_s"] = time.perf_counter() - t0

    log = curve_log(folder) if dist.is_main() else None  # TensorBoard, when installed
    if log is not None and ratio_fit:
        log.ratio(ratio_fit)

    t0 = time.perf_counter()
    score_curves: list[dict] = []
    train_set = training_set(method, data, cfg.ref_share)
    pi = train_set[1]
    resumed: dict[str, float] = {}
    ema = fit_score(cfg, method, recipe, data.sigma_data, train_set, ratio_model, dev, compile,
                    folder / "checkpoint.pt", curves=score_curves, on_curve=log.score if log else None,
                    resumed=resumed)
    if log is not None:
        log.close()
    # a resumed run counts its earlier segments' training too; resumed_at_step says it resumed
    earlier_s = resumed.get("earlier_train_s", 0.0)
    timing["train_s"] = time.perf_counter() - t0 + earlier_s
    timing.update(resumed)

    t0 = time.perf_counter()
    n_generate = max(cfg.num_samples, cfg.fid_samples)  # FID may score more samples than the rest
    with progress_bar("sampling", n_generate) as update, autocast(dev, cfg.precision):
        ratio = TrainingRatio(ratio_model, pi) if ratio_model is not None else None
        denoise = guided(compile_module(ema) if compile else ema, method, ratio, cfg.alpha)
        generated = evaluate.generate(denoise, n_generate, tuple(data.x_bias.shape[1:]), cfg.sample_steps,
                                    seed=stream_seed(cfg.seed, "sampling"), device=dev, on_chunk=update,
                                    chunk=cfg.batch_size if data.is_image else 10_000)
    timing["sample_s"] = time.perf_counter() - t0
    if not dist.is_main():
        dist.barrier()  # until process 0 has written the record: the processes leave together
        return None, True

    samples = generated[:cfg.num_samples]
    metrics, shares, group_accuracy = evaluate.run_metrics(samples, data)
    fit_shares = evaluate.objective_shares(method, data, train_set, cfg.alpha)
    metrics.update(evaluate.fit_metrics(shares, fit_shares))
    fid = evaluate.run_fid(generated[:cfg.fid_samples or cfg.num_samples], data, cfg.fid_ref, dev,
                           results / "_cache", [cfg.dataset, cfg.dataset_options])
    if fid is not None:
        metrics["fid"] = fid[0]
    ratio_error = []
    if ratio_model is not None:
        scalars, ratio_error = evaluate.ratio_diagnostics(ratio_model, data, pi, cfg.seed, ratio_fit, reference)
        metrics.update(scalars)
    evaluate.save_samples_figure(samples, folder / "samples.png")
    timing["total_s"] = time.perf_counter() - started + earlier_s
    record = Record(config=cfg, metrics=metrics, shares=shares,
                    target_shares=[float(s) for s in data.target_shares],
                    fit_shares=None if fit_shares is None else [round(float(s), 6) for s in fit_shares],
                    feature_space=data.feature_space,
                    ratio_source=cfg.ratio, ratio_kind=method.ratio, timing=timing,
                    versions={"tiwbench": __version__, "torch": torch.__version__,
                              "python": platform.python_version()},
                    device=str(dev), processes=dist.world(), ratio_error=ratio_error,
                    ratio_fit=ratio_fit, train_on=method.train_on, stratified_batches=method.stratified_batches,
                    group_accuracy=group_accuracy,
                    score_curves=score_curves, fid_protocol=fid[1] if fid else None, folder=folder,
                    sizes={"bias": len(data.x_bias), "ref": len(data.x_ref), "eval": len(data.x_eval),
                           "samples": len(samples), "ref_stratified": int(data.ref_stratified)})
    write_text(record_path(cfg, results), record.to_json())
    (folder / "checkpoint.pt").unlink(missing_ok=True)  # the record is final; keep the folder small
    dist.barrier()
    return record, True

