"""One benchmark run: data, ratio model (cached), score training, sampling, metrics, record."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__, dist, evaluate, registry
from .checkpoint import load_torch, save_torch, write_json
from .datasets.base import BenchmarkData, DatasetRecipe
from .diffusion import Denoiser
from .errors import TiwbenchError
from .methods.base import Method, guided
from .ratio import DensityRatio, LearnedRatio, RatioTrainConfig, train_ratio
from .train import TrainConfig, autocast, train_score

RATIO_SOURCES = ("trained", "oracle")
PRECISIONS = ("fp32", "tf32", "bf16")
# RunConfig fields the CLI sets by options of the same name (besides precision and dataset options)
RUN_OPTIONS = ("steps", "batch_size", "lr", "ratio_steps", "sample_steps", "num_samples", "net", "accum",
               "warmup", "grad_clip", "xflip")
console = Console(stderr=True)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result; its hash names the run folder."""

    method: str
    dataset: str
    ref: float
    seed: int = 0
    alpha: float = 1.0
    ratio: str = "trained"  # trained | oracle | none (the method uses no ratio)
    dataset_options: tuple[tuple[str, str], ...] = ()  # constructor options of the recipe
    net: str = ""  # score-network preset; "" = the dataset's default
    precision: str = "fp32"  # fp32 | tf32 | bf16 (autocast, fp32 master weights)
    accum: int = 1  # gradient-accumulation micro-batches per process
    warmup: int = 0  # linear learning-rate warm-up, in steps
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    xflip: bool = False  # augmentation: random left-right mirroring of training images
    steps: int = 4000
    batch_size: int = 512
    lr: float = 1e-3
    ema_decay: float = 0.999
    ratio_steps: int = 6000
    ratio_batch_size: int = 512
    ratio_lr: float = 1e-3
    sample_steps: int = 18
    num_samples: int = 10_000

    @property
    def run_id(self) -> str:
        """Hash of the fields that differ from their defaults (the first three always count), so
        that a field added later with a default keeps existing runs' names."""
        identity = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.default is MISSING or getattr(self, f.name) != f.default}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.dataset}-{self.method}-ref{self.ref:g}-a{self.alpha:g}-s{self.seed}-{digest}"

    def record_path(self, results: Path) -> Path:
        """The run's record; written last and atomically, so it exists only for a finished run."""
        return results / self.run_id / "metrics.json"

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           ema_decay=self.ema_decay, accum=self.accum, warmup=self.warmup,
                           grad_clip=self.grad_clip, xflip=self.xflip)

    def ratio_config(self) -> RatioTrainConfig:
        return RatioTrainConfig(self.ratio_steps, self.ratio_batch_size, self.ratio_lr)


def parse_dataset_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """['imbalance=50'] -> (('imbalance', '50'),), sorted so that order does not split a run."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TiwbenchError(f"--dataset-option takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return tuple(sorted(out.items()))


def resolve_config(method: str, dataset: str, ref: float, ratio: str = "trained",
                   **options) -> RunConfig:
    """Validate the user's choices and fill unset options from the dataset's defaults."""
    method_cls = registry.load("method", method)
    recipe_cls = registry.load("dataset", dataset)
    registry.get_dataset(dataset, **dict(options.get("dataset_options") or ()))  # options valid?
    if options.get("net") and options["net"] not in recipe_cls.nets:
        raise TiwbenchError(f"--net {options['net']!r} does not suit dataset {dataset!r}; "
                            f"choose from {', '.join(recipe_cls.nets)}")
    if not (0 < ref <= 1):
        raise TiwbenchError(f"--ref must be in (0, 1] (a fraction of |D_bias|), got {ref}")
    if options.get("alpha") is not None and options["alpha"] < 0:
        raise TiwbenchError(f"--alpha must be >= 0, got {options['alpha']}")
    if ratio not in RATIO_SOURCES:
        raise TiwbenchError(f"--ratio must be one of {', '.join(RATIO_SOURCES)}, got {ratio!r}")
    if ratio == "oracle" and not recipe_cls.has_exact_ratio:
        raise TiwbenchError(f"--ratio oracle needs an exact density ratio, which dataset "
                            f"{dataset!r} does not have")
    known = {f.name for f in fields(RunConfig)}
    values = {**recipe_cls.defaults, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(values) - known
    if unknown:
        raise TiwbenchError(f"unknown run options: {', '.join(sorted(unknown))}")
    for key in ("steps", "num_samples", "ratio_steps", "batch_size"):
        if key in values and values[key] < 1:
            raise TiwbenchError(f"--{key.replace('_', '-')} must be >= 1, got {values[key]}")
    if values.get("precision", "fp32") not in PRECISIONS:
        raise TiwbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got {values['precision']!r}")
    if values.get("sample_steps", 2) < 2:
        raise TiwbenchError("--sample-steps must be >= 2")
    cfg = RunConfig(method=method, dataset=dataset, ref=ref,
                    ratio=ratio if method_cls.ratio else "none", **values)
    if not method_cls.ratio:  # settings a run does not use must not split its identity
        defaults = RunConfig(method, dataset, ref)
        cfg = replace(cfg, alpha=1.0, ratio_steps=defaults.ratio_steps,
                      ratio_batch_size=defaults.ratio_batch_size, ratio_lr=defaults.ratio_lr)
    return cfg


_live: list[Progress] = []  # the progress display in use, if any: bars nest into it


@contextmanager
def progress_bar(description: str, total: int) -> Iterator:
    """A rich progress bar; yields `update(completed)`. Inside another bar (a sweep), it is a
    transient row of the same display, since rich allows one live display at a time."""
    if _live:
        progress = _live[-1]
        task = progress.add_task(description, total=total)
        try:
            yield lambda done: progress.update(task, completed=done)
        finally:
            progress.remove_task(task)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        _live.append(progress)
        try:
            task = progress.add_task(description, total=total)
            yield lambda done, **fields: progress.update(task, completed=done, **fields)
        finally:
            _live.pop()


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 on GPUs and fp32 elsewhere; it is resolved before the run's identity is set."""
    return ("bf16" if device.type == "cuda" else "fp32") if precision == "auto" else precision


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise TiwbenchError(f"--device: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiwbenchError(f"--device {device}: CUDA is not available on this machine")
    return dev


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TiwbenchError(f"results folder {folder} cannot be written: {e.strerror or e}") from e


class RunInProgress(TiwbenchError):
    """Another process holds the run's lock."""


@contextmanager
def run_lock(folder: Path, name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """Hold `folder/name` (host:pid) while a run computes, so that two sweeps sharing a results
    folder do not both compute one run. A lock left by a dead process on this host is taken over.
    A live holder makes it raise RunInProgress, or with `wait`, wait for the holder to finish."""
    path, told = folder / name, False
    while True:
        try:
            _take(path)
            break
        except RunInProgress as e:
            if not wait:
                raise
            if not told:
                console.print(f"waiting: {e}")
                told = True
            time.sleep(1.0)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _take(path: Path) -> None:
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            host, _, pid = path.read_text().partition(":")
            if host != socket.gethostname() or _alive(int(pid or 0)):
                raise RunInProgress(f"being computed by {host}:{pid} (lock {path}; delete it if that "
                                    f"process is gone)") from None
            path.unlink(missing_ok=True)  # stale: its process has ended
    else:
        raise RunInProgress(f"could not take the lock {path}")
    os.write(fd, me.encode())
    os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process runs (an ended one its parent has not yet reaped counts as ended)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: state "Z" = a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def ratio_model_for(cfg: RunConfig, kind: str, recipe: DatasetRecipe, data: BenchmarkData,
                    results: Path, device: torch.device) -> DensityRatio:
    """The exact ratio for `--ratio oracle`; else a trained one, cached per dataset, ref and seed."""
    time_dependent = kind == "time_dependent"
    if cfg.ratio == "oracle":
        return data.exact_ratio(time_dependent)
    key = {"dataset": cfg.dataset, "dataset_options": cfg.dataset_options, "ref": cfg.ref, "seed": cfg.seed, "kind": kind,
           **asdict(cfg.ratio_config())}
    if cfg.precision == "tf32":  # trained with TF32 matmuls (ratio training is otherwise fp32)
        key["tf32"] = True
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    path = results / "_ratios" / f"{cfg.dataset}-ref{cfg.ref:g}-s{cfg.seed}-{kind}-{digest}.pt"
    torch.manual_seed(cfg.seed)
    model = LearnedRatio(recipe.ratio_net(), data.sigma_data, time_dependent).to(device)
    trained_here = False
    if not path.exists() and dist.is_main():  # other processes wait, then read the cache
        path.parent.mkdir(parents=True, exist_ok=True)
        # another sweep on this folder may be training the same model: wait for it, then reuse
        with run_lock(path.parent, path.name + ".lock", wait=True):
            if not path.exists():
                gen = torch.Generator().manual_seed(cfg.seed + 1)
                with progress_bar(f"ratio ({kind})", cfg.ratio_steps) as update:
                    train_ratio(model, data.x_bias, data.x_ref, cfg.ratio_config(), gen, on_step=update)
                save_torch(path, {"model": model.state_dict(), "config": key})
                trained_here = True
    dist.barrier()
    if not trained_here:
        model.load_state_dict(load_torch(path, expect=key)["model"])
        model.requires_grad_(False).eval()
        console.print(f"reusing the cached {kind} ratio model {path}")
    return model


def training_set(method: Method, data: BenchmarkData) -> tuple[torch.Tensor, float]:
    """The data the score network sees and its unbiased share π (DESIGN.md §2)."""
    if method.train_on == "bias":
        return data.x_bias, 0.0
    if method.train_on == "ref":
        return data.x_ref, 1.0
    x = torch.cat([data.x_bias, data.x_ref])
    return x, len(data.x_ref) / len(x)


def execute(cfg: RunConfig, results: Path, device: str = "auto", data_root: Path | None = None,
            compile: bool | None = None) -> dict:
    """Run `cfg` unless its record exists (see `_execute`); holds the run's lock meanwhile."""
    record_path = cfg.record_path(results)
    if record_path.exists():
        console.print(f"already finished: {record_path.parent}")
        return json.loads(record_path.read_text())
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: process 0 holds the lock
        return _execute(cfg, results, device, data_root, compile)
    folder = results / cfg.run_id
    check_writable(folder)
    try:
        with run_lock(folder):
            return _execute(cfg, results, device, data_root, compile)
    except BaseException:
        if folder.is_dir() and not any(folder.iterdir()):  # failed before writing anything
            folder.rmdir()
        raise


def _execute(cfg: RunConfig, results: Path, device: str = "auto", data_root: Path | None = None,
             compile: bool | None = None) -> dict:
    """Run `cfg` unless its record exists; return the record. Interrupted runs resume.

    Under torchrun every process trains on its slice of each batch and samples its share;
    process 0 evaluates and writes (the other processes return an empty dict).
    `compile` (default: on GPUs) applies torch.compile to the score and ratio networks, for
    training and for sampling.
    """
    folder, record_path = results / cfg.run_id, cfg.record_path(results)
    if record_path.exists():  # finished by another process between its check and taking the lock
        return json.loads(record_path.read_text())
    started = time.perf_counter()
    dev = dist.init_from_env(resolve_device(device))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.precision == "tf32"
    compile = dev.type == "cuda" if compile is None else compile
    method = registry.get_method(cfg.method)
    recipe = registry.get_dataset(cfg.dataset, **dict(cfg.dataset_options))
    data = recipe.build(cfg.ref, cfg.seed, data_root, cache_dir=results / "_cache")
    if dist.is_main():  # once the data is there: a run that cannot start leaves no folder
        write_json(folder / "config.json", asdict(cfg))
    dist.barrier()
    timing = {}

    t0 = time.perf_counter()
    ratio_model = None
    if method.ratio:
        ratio_model = ratio_model_for(cfg, method.ratio, recipe, data, results, dev)
    timing["ratio_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    denoiser = Denoiser(recipe.score_net(cfg.net), data.sigma_data).to(dev)
    x_train, pi = training_set(method, data)
    with progress_bar(f"score ({cfg.method})", cfg.steps) as update:
        ema = train_score(method, denoiser, x_train, pi, ratio_model, cfg.alpha, cfg.train_config(),
                          cfg.seed, folder / "checkpoint.pt", on_step=update, precision=cfg.precision,
                          compile=compile)
    timing["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with progress_bar("sampling", cfg.num_samples) as update, autocast(dev, cfg.precision):
        denoise = guided(torch.compile(ema) if compile else ema, method, ratio_model, pi, cfg.alpha)
        samples = evaluate.generate(denoise, cfg.num_samples, tuple(data.x_bias.shape[1:]), cfg.sample_steps,
                                    seed=cfg.seed + 2, device=dev, on_chunk=update,
                                    chunk=cfg.batch_size if data.x_bias.ndim == 4 else 10_000)
    timing["sample_s"] = time.perf_counter() - t0
    if not dist.is_main():
        return {}

    metrics = evaluate.bias_metrics(data.attribute(samples), data.target_shares)
    shares = metrics.pop("shares")
    metrics[f"fd_{data.feature_space}"] = evaluate.frechet_distance(data.features(samples),
                                                                    data.features(data.x_eval))
    metrics["attr_acc"] = float((data.attribute(data.x_eval) == data.eval_labels).double().mean())
    inception = evaluate.inception_folder() if samples.ndim == 4 else None
    if inception is not None:  # real FID only with clean-fid's own Inception weights
        key = hashlib.sha256(json.dumps([cfg.dataset, cfg.dataset_options, len(data.x_eval)]).encode())
        stats = results / "_cache" / f"fid-stats-{cfg.dataset}-{key.hexdigest()[:8]}.pt"
        metrics["fid"] = evaluate.fid(samples, data.x_eval, evaluate.InceptionFeatures(inception, dev), stats)
    record = {"config": asdict(cfg), "metrics": metrics, "shares": shares,
              "target_shares": [float(s) for s in data.target_shares],
              "feature_space": data.feature_space, "ratio_source": cfg.ratio,
              "ratio_kind": method.ratio, "timing": timing,
              "versions": {"tiwbench": __version__, "torch": torch.__version__,
                           "python": platform.python_version()},
              "device": str(dev), "processes": dist.world()}
    if ratio_model is not None:
        scalars, curves = ratio_diagnostics(ratio_model, data, pi, cfg.seed)
        metrics.update(scalars)
        record.update(curves)
    save_samples_figure(samples, folder / "samples.png")
    timing["total_s"] = time.perf_counter() - started
    write_json(record_path, record)
    (folder / "checkpoint.pt").unlink(missing_ok=True)  # the record is final; keep the folder small
    return record


def ratio_diagnostics(model: DensityRatio, data: BenchmarkData, pi: float,
                      seed: int) -> tuple[dict, dict]:
    """Scalar metrics (weight collapse on D_bias, integrated ratio error) and, where the exact
    ratio is known, the error curve over σ."""
    scalars = {"w_collapse": evaluate.weight_collapse(model, data.x_bias)}
    if data.exact_ratio is None:
        return scalars, {}
    rows = evaluate.ratio_error(model, data.exact_ratio(model.time_dependent),
                                data.sample_bias(4000, torch.Generator().manual_seed(seed + 3)),
                                pi, seed + 4)
    scalars["ratio_err"] = evaluate.integrated_error(rows)
    return scalars, {"ratio_error": rows}


def save_samples_figure(samples: torch.Tensor, path: Path) -> None:
    """A grid of the first 256 images, or a scatter of the first two coordinates of vectors."""
    if samples.ndim == 4:
        from torchvision.utils import save_image
        save_image((samples[:256].float() + 1) / 2, path, nrow=16, padding=1)
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    pts = samples[:5000].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
    ax.set_aspect("equal")
    ax.set_title("generated samples (first two coordinates)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
