"""The `tiwbench` command line: a thin Typer layer over tiwbench.run and tiwbench.results."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from . import DEFAULT_RESULTS, default_out
from .cli_options import with_run_options
from .config import FIELDS, format_value
from .errors import Interrupted, TiwbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help texts say "[dataset default]": plain text, not markup
                  help="Benchmark debiasing methods for diffusion models trained on biased data.")


def folder(value) -> Path:
    """A folder option's value; an empty one is refused (it would mean the current folder)."""
    if not str(value).strip():
        raise typer.BadParameter("is empty: name a folder")
    return Path(value)


ResultsOpt = typer.Option(DEFAULT_RESULTS, "--results", parser=folder, help="Folder of run records.")
BaselineOpt = typer.Option("dsm_obs", help="Row the paired differences are taken to: a method, or a method "
                           "with a ratio estimator other than the default (e.g. tiw_dsm+exact).")
DeviceOpt = typer.Option("auto", help="cpu, cuda, cuda:N, or auto.")
DataRootOpt = typer.Option(None, envvar="TIWBENCH_DATA", help="Folder of local datasets.")
CompileOpt = typer.Option(None, "--compile/--no-compile",
                          help="torch.compile the score and ratio networks, for training and sampling [on GPUs].")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def run_options(options: dict, device: str) -> dict:
    """The run settings of `run` and `sweep`, resolved: dataset options parsed, precision 'auto'
    made concrete for the device."""
    from .config import parse_dataset_options, parse_ratio_options
    from .run import resolve_device, resolve_precision

    return {**options, "dataset_options": parse_dataset_options(options["dataset_options"]) or None,
            "ratio_options": parse_ratio_options(options["ratio_options"]) or None,
            "precision": resolve_precision(options["precision"], resolve_device(device))}


def user_errors(command):
    """Report a TiwbenchError as one line (no traceback): exit 130 if interrupted, else 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TiwbenchError as e:
            fail(str(e), 130 if isinstance(e, Interrupted) else 2)
        except KeyboardInterrupt:  # outside training (data, sampling, evaluation): nothing half-written
            fail("interrupted; finished steps are kept: run the same command again to go on", 130)
        except RuntimeError as e:
            from .dist import peer_failure

            if not peer_failure(e):
                raise
            cause = str(e).strip().splitlines()[0][:160]
            fail(f"another process of this run ended ({cause}); its last checkpoint is kept: run the "
                 "same command again to go on", 1)
    return wrapper


@app.command()
@user_errors
@with_run_options
def run(
    method: str = typer.Option(..., help=FIELDS["method"].metadata["help"]),
    dataset: str = typer.Option(..., help=FIELDS["dataset"].metadata["help"]),
    ref: float = typer.Option(..., help=FIELDS["ref"].metadata["help"]),
    seed: int = typer.Option(0, help=FIELDS["seed"].metadata["help"]),
    alpha: float = typer.Option(1.0, help=FIELDS["alpha"].metadata["help"]),
    compile: bool | None = CompileOpt,
    device: str = DeviceOpt,
    data_root: Path | None = DataRootOpt,
    results: Path = ResultsOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and stop."),
    options: dict | None = None,
):
    """Train one method on one dataset and reference size, sample, evaluate and write its record."""
    from .config import resolve_config
    from .console import say, warn
    from .run import execute, record_path

    cfg = resolve_config(method, dataset, ref, seed=seed, alpha=alpha, **run_options(options, device))
    if dry_run:
        typer.echo(json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}, indent=2))
        return
    record = execute(cfg, results, device=device, data_root=data_root, compile=compile)
    if record is None:  # a torchrun process other than the first
        return
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in record.metrics.items())
    say(f"[bold]{cfg.run_id}[/bold]  {metrics}")
    say(f"record: {record_path(cfg, results)}")
    from .results import underfit_message, underfit_rows

    for flagged in underfit_rows([record]).values():
        warn(underfit_message(flagged))


@app.command()
@user_errors
@with_run_options
def sweep(
    dataset: str = typer.Option(..., help="Dataset name."),
    methods: str = typer.Option("all", help="Comma-separated method names, or all."),
    refs: str = typer.Option("0.05,0.1,0.25,0.5", help="Comma-separated reference sizes."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds."),
    alphas: str = typer.Option("1", help="Comma-separated α values (ratio-based methods only)."),
    compile: bool | None = CompileOpt,
    device: str = DeviceOpt,
    data_root: Path | None = DataRootOpt,
    results: Path = ResultsOpt,
    launcher: str = typer.Option("local", help="local (this process) or submitit (one Slurm job per ref "
                                 "and seed)."),
    slurm_partition: str | None = typer.Option(None, help="Slurm partition (submitit launcher)."),
    slurm_time: int = typer.Option(240, help="Slurm time limit per job, minutes (submitit launcher)."),
    slurm_gpus: int = typer.Option(0, min=0, help="GPUs per Slurm job (submitit launcher); 0 asks for none, "
                                   "which any partition accepts."),
    slurm_tasks: int = typer.Option(0, min=0, help="Processes per Slurm job, one DDP group (default: one per GPU, "
                                    "at least one)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Runs in parallel on this machine (local launcher), "
                             "the CPU cores split among them."),
    wait: bool = typer.Option(False, "--wait", help="submitit launcher: follow the jobs until they end, with "
                              "progress, and each failed job's log; Ctrl-C stops following, not the jobs."),
    cancel_on_interrupt: bool = typer.Option(False, "--cancel-on-interrupt",
                                             help="With --wait: Ctrl-C also cancels the jobs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the planned run ids and stop."),
    options: dict | None = None,
):
    """Run methods × reference sizes × seeds (× α); finished runs are skipped, failures reported."""
    from .console import is_main_process
    from .sweep import follow, parse_list, plan, run_local, run_parallel, submit

    if launcher not in ("local", "submitit"):
        fail(f"--launcher must be local or submitit, got {launcher!r}")
    configs = plan(dataset, parse_list(methods, what="method"), parse_list(refs, float, "ref"),
                   parse_list(seeds, int, "seed"), parse_list(alphas, float, "alpha"),
                   **run_options(options, device))
    if dry_run:
        typer.echo("\n".join(c.run_id for c in configs))
        return
    if launcher == "submitit" and jobs > 1:
        fail("--jobs is for the local launcher; with submitit each (ref, seed) group is a job of its own")
    if launcher == "submitit":
        slurm = {"timeout_min": slurm_time, "tasks_per_node": slurm_tasks or max(1, slurm_gpus),
                 **({"gpus_per_node": slurm_gpus} if slurm_gpus else {})}
        if slurm_partition:
            slurm["slurm_partition"] = slurm_partition
        jobs = submit(configs, results, device=device, data_root=data_root, slurm=slurm, compile=compile)
        ids = " ".join(j.job_id for j in jobs)
        typer.echo(f"sweep: submitted {len(jobs)} jobs for the unfinished runs of {len(configs)}: {ids}"
                   + (f"\n  follow them: squeue -j {','.join(j.job_id for j in jobs)}; logs in "
                      f"{results / '_submitit'}" if jobs and not wait else ""))
        if wait and jobs:
            failed = follow(jobs, configs, results, cancel_on_interrupt)
            if failed:
                raise typer.Exit(1)
        return
    if jobs > 1 and not is_main_process():
        fail("--jobs is for one machine's processes; under torchrun leave it at 1")
    if jobs > 1:
        out = run_parallel(configs, results, jobs, device=device, data_root=data_root, compile=compile)
    else:
        out = run_local(configs, results, device=device, data_root=data_root, compile=compile)
    if not is_main_process():  # torchrun: process 0 reports
        raise typer.Exit(1 if out.failed else 0)
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
    dataset: str | None = typer.Option(None, help="Only this dataset."),
    format: str = typer.Option("summary", "--format", help="summary (one compact table per dataset and "
                               "reference size) | md | latex (every metric, wide) | csv (long, tidy)."),
    baseline: str = BaselineOpt,
    ratio_error: bool = typer.Option(False, "--ratio-error",
                                     help="Instead: the learned ratio's error by σ (md or csv)."),
    results: Path = ResultsOpt,
):
    """Aggregate finished runs over seeds: mean ± std (n), best per column in bold."""
    from .record import load_records
    from .results import long_table, ratio_error_markdown, ratio_error_table, render, table_notes, underfit_rows

    if ratio_error and format == "summary":
        format = "md"
    if format not in ("summary", "md", "latex", "csv") or (ratio_error and format == "latex"):
        fail(f"--format must be summary, md, latex or csv (md or csv with --ratio-error), got {format!r}")
    records = load_records(results)
    if format == "summary" and not ratio_error:
        from .console import print_main_tables

        print_main_tables(long_table(records, dataset, baseline), results, underfit_rows(records, dataset))
        return
    if ratio_error:
        df = ratio_error_table(records, dataset)
        text = ratio_error_markdown(df) if format == "md" else df.to_csv(index=False, float_format="%.6g")
    else:
        text = render(long_table(records, dataset, baseline), format, table_notes(records, dataset))
    typer.echo(text, nl=False)


@app.command()
@user_errors
def plot(
    dataset: str = typer.Option(..., help="Dataset whose runs to plot."),
    results: Path = ResultsOpt,
    out: Path | None = typer.Option(None, parser=folder, help="Folder for the PNG files [results/<dataset>]."),
):
    """Figures: metric vs reference size, bias–quality over α, ratio error vs σ, sample grids."""
    from .plot import all_figures
    from .record import load_records
    from .results import long_table

    records = load_records(results)
    for path in all_figures(records, long_table(records, dataset), dataset, out or default_out(dataset)):
        typer.echo(str(path))


@app.command()
@user_errors
def report(
    dataset: str = typer.Option(..., help="Dataset to report on."),
    results: Path = ResultsOpt,
    out: Path | None = typer.Option(None, parser=folder, help="Output folder [results/<dataset>]."),
    baseline: str = BaselineOpt,
    records: bool = typer.Option(True, "--records/--no-records",
                                 help="Also copy the run records behind the tables to OUT/runs [on]."),
    summary: Path | None = typer.Option(None, help="A Markdown file (your reading of the numbers) that "
                                        "closes table.md and the report, under 'What the numbers say'."),
):
    """Write table.md, the long table.csv, the figures, a self-contained report.html and the run
    records behind them (OUT/runs, which `--results` reads to rebuild the tables)."""
    from .report import write_report

    for path in write_report(results, dataset, out or default_out(dataset), records_out=records,
                             baseline=baseline, summary=summary):
        typer.echo(str(path))


@app.command("list")
@user_errors
def list_():
    """List the registered methods, datasets and ratio estimators (with their options)."""
    from .registry import dataset_option_defaults, describe, load

    for kind, title in (("method", "methods"), ("dataset", "datasets"), ("ratio", "ratio estimators (--ratio)")):
        typer.echo(f"{title}:")
        for name, text in describe(kind):
            typer.echo(f"  {name:<14} {text}")
            if kind == "dataset" and not text.startswith("[broken]"):
                options = dataset_option_defaults(load(kind, name))
                if options:
                    typer.echo("      --dataset-option " + "  ".join(
                        f"{k}={format_value(v) if v != '' else repr(v)}" for k, v in options.items()))
            if kind == "ratio" and not text.startswith("[broken]"):
                cls = load(kind, name)
                for o in cls.options:
                    typer.echo(f"      {f'--ratio-option {o.name}={format_value(o.default)}':<42} {o.help}")


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM outside training ends like Ctrl-C, with a message


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    app()
