"""Engine bars on this machine: wall time of one `tiwbench run` (ratio training included) and of
the five methods at one reference size and seed, then bias over seeds, all through the CLI.

    python bench/engine.py [--seeds 0,1,2] [--results /tmp/tiwbench-bench] [--run-option=--steps=100]

Each timing starts from an empty results folder, so nothing is reused from earlier runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

METHODS = ["dsm_obs", "dsm_ref", "iw_dsm", "tiw_dsm", "tiw_nocorr"]


def tiwbench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tiwbench", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="gmm2d")
    ap.add_argument("--ref", default="0.05")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", type=Path, default=Path("/tmp/tiwbench-bench"))
    ap.add_argument("--run-option", action="append", default=[],
                    help="an option passed to every `tiwbench run` (e.g. --run-option=--steps=100); repeatable")
    args = ap.parse_args()
    shutil.rmtree(args.results, ignore_errors=True)
    common = ["--dataset", args.dataset, "--ref", args.ref, "--results", str(args.results), *args.run_option]

    for i, seed in enumerate(args.seeds.split(",")):
        t0 = time.perf_counter()
        for method in METHODS:
            t1 = time.perf_counter()
            tiwbench("run", "--method", method, "--seed", seed, *common)
            if i == 0:
                print(f"seed {seed} {method:<11} {time.perf_counter() - t1:6.1f} s", flush=True)
        print(f"seed {seed}: five methods in {time.perf_counter() - t0:.1f} s", flush=True)
    subprocess.run([sys.executable, "-m", "tiwbench", "table", "--dataset", args.dataset,
                    "--results", str(args.results)], check=True)


if __name__ == "__main__":
    main()
