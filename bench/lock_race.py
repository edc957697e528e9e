"""Races on run locks at scale, in forked processes released at one instant.

takeover: N processes find a stale lock (left by a crashed run) and try to take it over at once;
  within each round at most one may hold it at a time, and nobody may be refused for good while
  the lock is free.
starts: N processes start a run on one results folder at once (writability probe, then the
  lock); none may fail with anything but "busy".

    python bench/lock_race.py --takeovers 300 --starts 1000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

from tiwbench.errors import TiwbenchError
from tiwbench.locks import RunInProgress, check_writable, run_lock


def take(folder: str, start: float, hold_s: float) -> str:
    while time.time() < start:
        pass
    try:
        with run_lock(Path(folder)):
            with open(Path(folder) / "log", "a") as f:
                f.write("<")
            time.sleep(hold_s)
            with open(Path(folder) / "log", "a") as f:
                f.write(">")
        return "took"
    except RunInProgress:
        return "busy"
    except TiwbenchError as e:
        return f"error: {e}"


def start_run(folder: str, start: float) -> str:
    while time.time() < start:
        pass
    try:
        check_writable(Path(folder))
        with run_lock(Path(folder)):
            pass
        return "took"
    except RunInProgress:
        return "busy"
    except TiwbenchError as e:
        return f"error: {e}"


def race(fn, n: int, folder: str, *extra) -> list[str]:
    """fn(folder, start, *extra) in n processes, all released at `start`."""
    ctx = mp.get_context("fork")
    start = time.time() + 2.0 + n / 200  # every process forked and waiting before the start
    with ctx.Pool(n) as pool:
        return pool.starmap(fn, [(folder, start, *extra)] * n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--takeovers", type=int, default=300)
    p.add_argument("--starts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / ".lock").write_text("deadhost:999999")  # a crashed run's lock
            outs = race(take, args.takeovers, tmp, 0.05)
            log = (Path(tmp) / "log").read_text()
            overlap = "<<" in log or log.count("<") != log.count(">")
            errors = [o for o in outs if o.startswith("error")]
            print(f"takeover round {r}: {args.takeovers} processes, {outs.count('took')} held it one after "
                  f"another, {outs.count('busy')} busy, {len(errors)} errors, overlapping holders: {overlap}")
        with tempfile.TemporaryDirectory() as tmp:
            outs = race(start_run, args.starts, os.path.join(tmp, "run"))
            errors = [o for o in outs if o.startswith("error")]
            print(f"starts round {r}: {args.starts} processes, {outs.count('took')} took the lock, "
                  f"{outs.count('busy')} busy, {len(errors)} spurious failures"
                  + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
