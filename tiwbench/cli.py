"""The `tiwbench` command line: a thin Typer layer over tiwbench.run and tiwbench.results."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from .errors import Interrupted, TiwbenchError
from . import DEFAULT_RESULTS, default_out

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help texts say "[dataset default]": plain text, not markup
                  help="Benchmark debiasing methods for diffusion models trained on biased data.")

# Options shared by `run` and `sweep` (None = the dataset's default).
ResultsOpt = typer.Option(DEFAULT_RESULTS, "--results", help="Folder of run records.")
RatioOpt = typer.Option("trained", help="Density ratio for ratio-based methods: trained | oracle.")
StepsOpt = typer.Option(None, help="Score-network training steps [dataset default].")
BatchOpt = typer.Option(None, help="Training batch size [dataset default].")
LrOpt = typer.Option(None, help="Adam learning rate [dataset default].")
RatioStepsOpt = typer.Option(None, help="Discriminator training steps [dataset default].")
SampleStepsOpt = typer.Option(None, help="Heun sampler steps [EDM: 18].")
NumSamplesOpt = typer.Option(None, help="Samples generated for the metrics [dataset default].")
DeviceOpt = typer.Option("auto", help="cpu, cuda, cuda:N, or auto.")
DataRootOpt = typer.Option(None, envvar="TIWBENCH_DATA", help="Folder of local datasets.")
DatasetOptionOpt = typer.Option(None, "--dataset-option", help="KEY=VALUE for the dataset recipe "
                                "(e.g. imbalance=50, majority=0.9); repeatable.")
PrecisionOpt = typer.Option("auto", help="fp32 | tf32 | bf16 | auto (bf16 on GPUs, fp32 on CPUs).")
CompileOpt = typer.Option(None, "--compile/--no-compile", help="torch.compile the score and ratio networks, for training and sampling [on GPUs].")
AccumOpt = typer.Option(None, help="Gradient-accumulation micro-batches per process [1].")
WarmupOpt = typer.Option(None, help="Linear learning-rate warm-up steps [dataset default, 0].")
GradClipOpt = typer.Option(None, help="Max gradient norm, 0 = off [dataset default, 0].")
XflipOpt = typer.Option(None, "--xflip/--no-xflip", help="Augment: mirror training images at random [off].")
NetOpt = typer.Option("", help="Score-network preset (images: tiny, ddpmpp32, ddpmpp64) [dataset default].")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def run_options(args: dict) -> dict:
    """The run settings among a command's arguments (shared by `run` and `sweep`), resolved:
    dataset options parsed, precision 'auto' made concrete for the device."""
    from .run import RUN_OPTIONS, parse_dataset_options, resolve_device, resolve_precision

    return {**{k: args[k] for k in RUN_OPTIONS},
            "dataset_options": parse_dataset_options(args["dataset_option"]),
            "precision": resolve_precision(args["precision"], resolve_device(args["device"]))}


def user_errors(command):
    """Report a TiwbenchError as one line (no traceback): exit 130 if interrupted, else 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TiwbenchError as e:
            fail(str(e), 130 if isinstance(e, Interrupted) else 2)
    return wrapper


@app.command()
@user_errors
def run(
    method: str = typer.Option(..., help="Method name (see `tiwbench list`)."),
    dataset: str = typer.Option(..., help="Dataset name (see `tiwbench list`)."),
    ref: float = typer.Option(..., help="Reference-set size as a fraction of |D_bias|, in (0, 1]."),
    seed: int = typer.Option(0, help="Seed of data, initialisation, training and sampling."),
    alpha: float = typer.Option(1.0, help="Weight/correction temperature α (1 = theory, 0 = DSM(obs))."),
    ratio: str = RatioOpt,
    steps: Optional[int] = StepsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    ratio_steps: Optional[int] = RatioStepsOpt,
    sample_steps: Optional[int] = SampleStepsOpt,
    num_samples: Optional[int] = NumSamplesOpt,
    dataset_option: Optional[list[str]] = DatasetOptionOpt,
    net: str = NetOpt,
    precision: str = PrecisionOpt,
    compile: Optional[bool] = CompileOpt,
    accum: Optional[int] = AccumOpt,
    warmup: Optional[int] = WarmupOpt,
    grad_clip: Optional[float] = GradClipOpt,
    xflip: Optional[bool] = XflipOpt,
    device: str = DeviceOpt,
    data_root: Optional[Path] = DataRootOpt,
    results: Path = ResultsOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and stop."),
):
    """Train one method on one dataset and reference size, sample, evaluate and write its record."""
    from .run import console, execute, resolve_config

    cfg = resolve_config(method, dataset, ref, ratio=ratio, seed=seed, alpha=alpha, **run_options(locals()))
    if dry_run:
        typer.echo(json.dumps({"run_id": cfg.run_id, **asdict(cfg)}, indent=2))
        return
    record = execute(cfg, results, device=device, data_root=data_root, compile=compile)
    if not record:  # a torchrun process other than the first
        return
    m = record["metrics"]
    console.print(f"[bold]{cfg.run_id}[/bold]  " + "  ".join(f"{k}={v:.4g}" for k, v in m.items()))
    console.print(f"record: {cfg.record_path(results)}")


@app.command()
@user_errors
def sweep(
    dataset: str = typer.Option(..., help="Dataset name."),
    methods: str = typer.Option("all", help="Comma-separated method names, or all."),
    refs: str = typer.Option("0.05,0.1,0.25,0.5", help="Comma-separated reference sizes."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    alphas: str = typer.Option("1", help="Comma-separated α values (ratio-based methods only)."),
    ratio: str = RatioOpt,
    steps: Optional[int] = StepsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    ratio_steps: Optional[int] = RatioStepsOpt,
    sample_steps: Optional[int] = SampleStepsOpt,
    num_samples: Optional[int] = NumSamplesOpt,
    dataset_option: Optional[list[str]] = DatasetOptionOpt,
    net: str = NetOpt,
    precision: str = PrecisionOpt,
    compile: Optional[bool] = CompileOpt,
    accum: Optional[int] = AccumOpt,
    warmup: Optional[int] = WarmupOpt,
    grad_clip: Optional[float] = GradClipOpt,
    xflip: Optional[bool] = XflipOpt,
    device: str = DeviceOpt,
    data_root: Optional[Path] = DataRootOpt,
    results: Path = ResultsOpt,
    launcher: str = typer.Option("local", help="local (this process) or submitit (one Slurm job per ref and seed)."),
    slurm_partition: Optional[str] = typer.Option(None, help="Slurm partition (submitit launcher)."),
    slurm_time: int = typer.Option(240, help="Slurm time limit per job, minutes (submitit launcher)."),
    slurm_gpus: int = typer.Option(1, help="GPUs per Slurm job (submitit launcher)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the planned run ids and stop."),
):
    """Run methods × reference sizes × seeds (× α); finished runs are skipped, failures reported."""
    from .sweep import parse_list, plan, run_local, submit

    configs = plan(dataset, parse_list(methods, what="method"), parse_list(refs, float, "ref"),
                   parse_list(seeds, int, "seed"), parse_list(alphas, float, "alpha"), ratio=ratio,
                   **run_options(locals()))
    if dry_run:
        typer.echo("\n".join(c.run_id for c in configs))
        return
    if launcher == "submitit":
        slurm = {"timeout_min": slurm_time, "gpus_per_node": slurm_gpus}
        if slurm_partition:
            slurm["slurm_partition"] = slurm_partition
        jobs = submit(configs, results, device=device, data_root=data_root, slurm=slurm, compile=compile)
        typer.echo(f"sweep: submitted {len(jobs)} jobs for the unfinished runs of {len(configs)}: "
                   + " ".join(j.job_id for j in jobs))
        return
    if launcher != "local":
        fail(f"--launcher must be local or submitit, got {launcher!r}")
    out = run_local(configs, results, device=device, data_root=data_root, compile=compile)
    busy = f", {len(out.busy)} busy in another process" if out.busy else ""
    typer.echo(f"sweep: {len(configs)} runs, {out.done} run now, {out.skipped} already finished, "
               f"{len(out.failed)} failed{busy}")
    for run_id, message in out.failed:
        typer.echo(f"  failed {run_id}: {message}")
    if out.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def table(
    dataset: Optional[str] = typer.Option(None, help="Only this dataset."),
    format: str = typer.Option("md", "--format", help="md | latex (wide, per metric) or csv (long)."),
    ratio_error: bool = typer.Option(False, "--ratio-error",
                                     help="Instead: the learned ratio's error by σ (md or csv)."),
    results: Path = ResultsOpt,
):
    """Aggregate finished runs over seeds: mean ± std (n), best per column in bold."""
    from .results import load_records, long_table, ratio_error_markdown, ratio_error_table, render

    if format not in ("md", "latex", "csv") or (ratio_error and format == "latex"):
        fail(f"--format must be md, latex or csv (md or csv with --ratio-error), got {format!r}")
    records = load_records(results)
    if ratio_error:
        df = ratio_error_table(records, dataset)
        text = ratio_error_markdown(df) if format == "md" else df.to_csv(index=False, float_format="%.6g")
    else:
        text = render(long_table(records, dataset), format)
    typer.echo(text, nl=False)


@app.command()
@user_errors
def plot(
    dataset: str = typer.Option(..., help="Dataset whose runs to plot."),
    results: Path = ResultsOpt,
    out: Optional[Path] = typer.Option(None, help="Folder for the PNG files [results/<dataset>]."),
):
    """Figures: metric vs reference size, bias–quality over α, ratio error vs σ, sample grids."""
    from .plot import all_figures
    from .results import load_records, long_table

    records = load_records(results)
    for path in all_figures(records, long_table(records, dataset), dataset, out or default_out(dataset)):
        typer.echo(str(path))


@app.command()
@user_errors
def report(
    dataset: str = typer.Option(..., help="Dataset to report on."),
    results: Path = ResultsOpt,
    out: Optional[Path] = typer.Option(None, help="Output folder [results/<dataset>]."),
):
    """Write table.md, the long table.csv, the figures and a self-contained report.html."""
    from .report import write_report

    for path in write_report(results, dataset, out or default_out(dataset)):
        typer.echo(str(path))


@app.command("list")
@user_errors
def list_():
    """List the registered methods and datasets with a one-line description each."""
    from .registry import describe

    for kind in ("method", "dataset"):
        typer.echo(f"{kind}s:")
        for name, text in describe(kind):
            typer.echo(f"  {name:<14} {text}")


def main() -> None:
    app()
