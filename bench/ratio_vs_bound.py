"""A finished run's learned ratio against the label-informed bound as `--ratio labels` fits it
now: the measure a record's `ratio_err_labels` holds, taken again for records made against an
earlier bound (the label classifier's fit changes; the learned ratio, read from its cache, does
not). Reads the ratio caches in RESULTS/_ratios and fits a missing bound there.

    python bench/ratio_vs_bound.py --results results/runs --dataset shapes16 [--method tiw_dsm --ref 0.05 --seed 0]

Prints, per run, the record's value and today's, and per σ band today's log-r RMSE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tiwbench import evaluate, registry
from tiwbench.bands import BAND_EDGES, N_BANDS, band_label
from tiwbench.ratio_cache import ratio_model_for
from tiwbench.record import load_records
from tiwbench.run import label_reference
from tiwbench.score_nets import training_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results/runs"))
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--method", action="append", help="default: every method with a learned ratio")
    ap.add_argument("--ref", type=float, action="append", help="default: every reference size")
    ap.add_argument("--seed", type=int, action="append", help="default: every seed")
    args = ap.parse_args()
    cpu = torch.device("cpu")
    records = [r for r in load_records(args.results) if r.config.dataset == args.dataset
               and r.ratio_kind and "ratio_err_labels" in r.metrics
               and (not args.method or r.config.method in args.method)
               and (not args.ref or r.config.ref in args.ref) and (not args.seed or r.config.seed in args.seed)]
    print("| run | ratio | recorded | against today's bound | "
          + " | ".join(f"σ {band_label(k)}" for k in range(N_BANDS)) + " |")
    print("|---|---|---|---|" + "---|" * N_BANDS)
    for r in sorted(records, key=lambda r: (r.config.method, r.config.ref, r.config.seed)):
        cfg = r.config
        method = registry.get_method(cfg.method)
        recipe = registry.get_dataset(cfg.dataset, **dict(cfg.dataset_options))
        data = recipe.build(cfg.ref, cfg.seed, None, cache_dir=args.results / "_cache")
        model, fit = ratio_model_for(cfg, method.ratio, recipe, data, args.results, cpu)
        bound = label_reference(cfg, method.ratio, recipe, data, args.results, cpu)
        pi = training_set(method, data, cfg.ref_share)[1]
        scalars, rows = evaluate.ratio_diagnostics(model, data, pi, cfg.seed, fit, bound)
        bands = [[row["log_r_rmse"] for row in rows
                  if sum(row["sigma"] > e for e in BAND_EDGES) == k] for k in range(N_BANDS)]
        cells = " | ".join(f"{sum(b) / len(b):.3f}" if b else "–" for b in bands)
        print(f"| {cfg.run_id} | {method.ratio} | {r.metrics['ratio_err_labels']:.3f} | "
              f"{scalars['ratio_err_labels']:.3f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
