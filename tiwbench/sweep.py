"""Sweeps over methods × reference sizes × seeds (× α): skip finished runs, resume unfinished
ones, report a failing run and go on. Ratio models are shared through the run cache."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import registry
from .config import RunConfig, resolve_config
from .console import console, progress_bar, say
from .errors import Interrupted, TiwbenchError
from .locks import RunInProgress
from .record import finished
from .run import record_path, run_once


def parse_list(text: str, kind=str, what: str = "value") -> list:
    """'0.05,0.1' -> [0.05, 0.1], with a clear error for a bad item."""
    try:
        items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise TiwbenchError(f"cannot read {what} list {text!r}: {e}") from e
    if not items:
        raise TiwbenchError(f"empty {what} list")
    return items


def plan(dataset: str, methods: list[str], refs: list[float], seeds: list[int],
         alphas: list[float], **options) -> list[RunConfig]:
    """All run configurations, grouped by (ref, seed) so a ratio model is trained once, then used."""
    if methods == ["all"]:
        methods = registry.available("method")
    configs = [resolve_config(m, dataset, ref, seed=seed, alpha=a, **options)
               for ref, seed, m, a in itertools.product(refs, seeds, methods, alphas)]
    return list(dict.fromkeys(configs))  # ratio-free methods ignore α: one run for all α


def unfinished(configs: list[RunConfig], results: Path) -> list[RunConfig]:
    """The configurations without a record under `results`."""
    return [c for c in configs if not finished(record_path(c, results))]


@dataclass
class SweepOutcome:
    done: int = 0
    skipped: int = 0
    busy: list[str] = field(default_factory=list)  # computed by another process right now
    failed: list[tuple[str, str]] = field(default_factory=list)


def run_local(configs: list[RunConfig], results: Path, device: str = "auto",
              data_root: Path | None = None, compile: bool | None = None) -> SweepOutcome:
    """Run each configuration in this process, one after the other."""
    out = SweepOutcome()
    pending = unfinished(configs, results)
    out.skipped = len(configs) - len(pending)
    times: list[float] = []
    with progress_bar("sweep", len(configs)) as update:
        update(out.skipped)
        for i, cfg in enumerate(pending):
            left = len(pending) - i
            eta = f", ~{sum(times) / len(times) * left / 60:.1f} min left" if times else ""
            say(f"[{out.skipped + out.done + len(out.failed) + 1}/{len(configs)}] {cfg.run_id} "
                          f"(done {out.done + out.skipped}, failed {len(out.failed)}, left {left}{eta})")
            t0 = time.perf_counter()
            try:
                _, ran = run_once(cfg, results, device=device, data_root=data_root, compile=compile)
                if ran:
                    out.done += 1
                    times.append(time.perf_counter() - t0)
                else:  # another process finished it since the list above was made
                    out.skipped += 1
            except Interrupted:
                raise
            except RunInProgress as e:
                out.busy.append(cfg.run_id)
                say(f"skipped (busy): {e}")
            except Exception as e:  # one failing run must not stop the others
                message = str(e) if isinstance(e, TiwbenchError) else traceback.format_exc(limit=3)
                out.failed.append((cfg.run_id, message.strip().splitlines()[-1]))
                say(f"[red]failed[/red] {cfg.run_id}: {out.failed[-1][1]}")
            update(out.skipped + out.done + len(out.failed) + len(out.busy))
    return out


def group_by_data(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """Configurations sharing dataset, options, ref and seed: one job each, so that the job
    trains each ratio model once and its methods reuse it."""
    groups: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault((c.dataset, c.dataset_options, c.ref, c.seed), []).append(c)
    return list(groups.values())


def _run_group(configs: list[RunConfig], results: Path, device: str, data_root: Path | None,
               compile: bool | None) -> dict:
    """A Slurm job's body: run its configurations in order; returns the outcome as a dict. A job of
    several tasks (`--slurm-gpus N`, `--slurm-tasks N`) is one DDP process group, its environment
    taken from Slurm's as torchrun would set it; each task takes the GPU of its local rank."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return asdict(run_local(configs, results, device=device, data_root=data_root, compile=compile))


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_stop_event = None  # a parallel sweep's worker: set by the parent when the sweep is stopped
_interruptible = False  # a worker's SIGINT raises KeyboardInterrupt only while it runs a group


def _worker_sigint(signum, frame) -> None:
    """A worker's SIGINT: the first one while a group runs ends it (training turns it into a
    checkpoint instead, through its own handler); an idle worker, or a second signal, is left alone,
    so that the terminal's Ctrl-C and the parent's forwarded one stop a run once, cleanly."""
    global _interruptible
    if _interruptible:
        _interruptible = False
        raise KeyboardInterrupt


def _worker_init(stop_event) -> None:
    global _stop_event
    _stop_event = stop_event
    signal.signal(signal.SIGINT, _worker_sigint)


def _worker_start(threads: int, log: Path) -> None:
    """A parallel sweep's worker: its share of the cores (two PyTorch processes each using all of
    them slow each other several-fold), its messages in its own log file, not the terminal."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    if console.file not in (sys.stderr, sys.stdout):
        console.file.close()  # the previous group's log
    console.file = open(log, "a", buffering=1)  # noqa: SIM115 - closed with the next group's


def run_parallel(configs: list[RunConfig], results: Path, jobs: int, device: str = "auto",
                 data_root: Path | None = None, compile: bool | None = None) -> SweepOutcome:
    """Run the configurations in `jobs` worker processes on this machine, the cores split among
    them; each worker takes whole (dataset, ref, seed) groups, so a ratio model is trained once
    and no worker waits for another's. Progress counts records as they appear; workers log to
    RESULTS/_logs/. Ctrl-C, or SIGINT/SIGTERM sent to this process alone, stops the workers at their
    next step (their checkpoints resume)."""
    out = SweepOutcome()
    pending = unfinished(configs, results)
    out.skipped = len(configs) - len(pending)
    groups = group_by_data(pending)
    jobs = max(1, min(jobs, len(groups)))
    threads = max(1, usable_cores() // jobs)
    say(f"sweep: {len(pending)} runs in {len(groups)} groups on {jobs} processes of {threads} "
        f"thread{'s' * (threads > 1)}; logs in {results / '_logs'}")
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(stop,))
    try:
        futures = {pool.submit(_worker_group, group, results, device, data_root, compile, threads,
                               results / "_logs" / f"{group[0].dataset}-ref{group[0].ref:g}-s{group[0].seed}.log"):
                   group for group in groups}
        with progress_bar("sweep", len(configs)) as update:
            waiting = set(futures)
            while waiting:
                done, waiting = wait(waiting, timeout=5, return_when=FIRST_COMPLETED)
                for future in done:
                    group_out = future.result()  # a worker stopped by a signal of its own raises here
                    out.done += group_out["done"]
                    out.skipped += group_out["skipped"]  # finished by another sweep meanwhile
                    out.busy += group_out["busy"]
                    out.failed += [tuple(f) for f in group_out["failed"]]
                    for run_id, message in group_out["failed"]:
                        say(f"[red]failed[/red] {run_id}: {message}")
                update(out.skipped + sum(finished(record_path(c, results)) for c in pending))
    except (KeyboardInterrupt, Interrupted):
        _stop_workers(pool, stop)
        raise Interrupted("sweep interrupted: finished runs are kept, unfinished ones resume") from None
    pool.shutdown(wait=True)
    return out


def _stop_workers(pool, stop) -> None:
    """Stop a parallel sweep: no worker starts another group, and each running one gets the SIGINT
    (a signal sent to the parent alone, by `kill` or a scheduler, reaches no worker), checkpoints
    at its next step and ends; then wait for them."""
    stop.set()
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signal.SIGINT)  # active_children are started: each has a pid
        except ProcessLookupError:  # ended meanwhile
            pass
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:  # a second Ctrl-C while waiting: the checkpoints already on disk resume
        pass


def _worker_group(configs: list[RunConfig], results: Path, device: str, data_root: Path | None,
                  compile: bool | None, threads: int, log: Path) -> dict:
    """One group of a parallel sweep, in a worker process; none once the sweep is stopped."""
    global _interruptible
    if _stop_event is not None and _stop_event.is_set():
        return asdict(SweepOutcome())
    _worker_start(threads, log)
    _interruptible = True
    try:
        return asdict(run_local(configs, results, device=device, data_root=data_root, compile=compile))
    finally:
        _interruptible = False


def follow(jobs: list, configs: list[RunConfig], results: Path, cancel_on_interrupt: bool = False,
           poll: float = 5.0) -> list:
    """Follow submitted jobs until they end: a progress bar of finished runs, a line per job that
    ends, and for a failed one its log and last lines. Ctrl-C stops following and leaves the jobs
    to the cluster, unless `cancel_on_interrupt`. Returns the failed jobs."""
    failed, ended = [], set()
    try:
        with progress_bar(f"{len(jobs)} Slurm jobs", len(configs)) as update:
            while len(ended) < len(jobs):
                for job in jobs:
                    if job.job_id in ended or not job.done():
                        continue
                    ended.add(job.job_id)
                    error = job.exception()
                    runs_failed = [] if error is not None else job.results()[0]["failed"]  # task 0 reports
                    if error is not None or runs_failed:
                        failed.append(job)
                        what = "; ".join(f"{run_id}: {message}" for run_id, message in runs_failed) or job.state
                        say(f"[red]job {job.job_id} failed[/red] ({what}); log {job.paths.stderr}:\n"
                            + _last_lines(job.paths.stderr))
                    else:
                        say(f"job {job.job_id} done")
                update(sum(finished(record_path(c, results)) for c in configs))
                if len(ended) < len(jobs):
                    time.sleep(poll)
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            for job in jobs:
                job.cancel(check=False)
            raise Interrupted(f"stopped following; cancelled jobs {' '.join(j.job_id for j in jobs)}") from None
        raise Interrupted("stopped following; the jobs go on (squeue -j "
                          f"{','.join(j.job_id for j in jobs)}; --cancel-on-interrupt to cancel)") from None
    return failed


def _last_lines(path: Path, n: int = 5) -> str:
    try:
        return "\n".join("    " + line for line in Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "    (no log)"


def submit(configs: list[RunConfig], results: Path, device: str = "auto", data_root: Path | None = None,
           slurm: dict | None = None, cluster: str | None = None, compile: bool | None = None) -> list:
    """Send one submitit job per (ref, seed) group of unfinished runs; returns the jobs.

    `slurm` holds submitit's parameters (timeout_min, slurm_partition, gpus_per_node, ...);
    `cluster="debug"` runs the jobs in this process, for tests.
    """
    try:
        import submitit
    except ImportError as e:
        raise TiwbenchError("--launcher submitit needs submitit: pip install 'tiwbench[slurm]'") from e
    groups = group_by_data(unfinished(configs, results))
    if not groups:
        return []
    executor = submitit.AutoExecutor(folder=results / "_submitit", cluster=cluster)
    executor.update_parameters(name="tiwbench", **(slurm or {}))
    n = len(groups)
    try:
        return executor.map_array(_run_group, groups, [results] * n, [device] * n, [data_root] * n, [compile] * n)
    except Exception as e:  # submitit's FailedJobError and the like: sbatch's own words, one line
        words = " ".join(str(e).split())
        hint = (" (a partition without GPUs: --slurm-gpus 0)" if "gres" in words.lower()
                else " (check --slurm-partition, --slurm-time, --slurm-gpus)")
        raise TiwbenchError(f"Slurm refused the jobs: {words[:300]}{hint}") from None
