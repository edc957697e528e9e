"""How far each seed's reference set is from the target composition (no training): D_ref's own
attribute shares, scored as a run's samples are. dsm_ref and a ratio learned from D_ref inherit
that draw; the table's composition floor is its expectation over seeds (stats.share_floor), this is
its value per seed. With `--results`, each method's runs there are also scored against their
seed's D_ref: a method that inherits the draw lands nearer D_ref's shares than the target's.

    python bench/ref_composition.py --dataset gmm2d --ref 0.05 --seeds 0,1,2,3,4,5,6,7 \\
        --results results/gmm2d_seeds/runs
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from tiwbench import registry
from tiwbench.evaluate import bias_metrics, share_metrics
from tiwbench.record import load_records
from tiwbench.results import row_labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="gmm2d")
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", type=Path, default=None, help="run records to score against D_ref")
    args = ap.parse_args()
    recipe = registry.get_dataset(args.dataset)
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| seed | D_ref shares | bias_l2 of D_ref |\n|---|---|---|")
    ref_shares, values = {}, []
    for seed in seeds:
        data = recipe.build(args.ref, seed)
        scored = bias_metrics(data.attribute(data.x_ref), data.target_shares)  # as a run's samples are
        ref_shares[seed] = torch.tensor(scored["shares"], dtype=torch.double)
        values.append(scored["bias_l2"])
        print(f"| {seed} | {' / '.join(f'{float(v):.3f}' for v in ref_shares[seed])} | {values[-1]:.4f} |")
    print(f"| mean | | {sum(values) / len(values):.4f} |")
    if args.results is None:
        return
    rows = defaultdict(lambda: ([], []))  # the table's row -> (to the target, to D_ref) per run
    records = [r for r in load_records(args.results) if r.config.dataset == args.dataset]
    for r, row in zip(records, row_labels(records)):
        c = r.config
        if c.ref != args.ref or c.seed not in ref_shares:
            continue
        shares = torch.tensor(r.shares, dtype=torch.double)
        rows[row][0].append(share_metrics(shares, torch.tensor(r.target_shares))["bias_l2"])
        rows[row][1].append(share_metrics(shares, ref_shares[c.seed])["bias_l2"])
    print("\n| row | runs | bias_l2 to the target | bias_l2 to its seed's D_ref |\n|---|---|---|---|")
    for row, (target, ref) in sorted(rows.items()):
        print(f"| {row} | {len(target)} | {sum(target) / len(target):.4f} | {sum(ref) / len(ref):.4f} |")


if __name__ == "__main__":
    main()
