"""The tilted large-σ base's clean-data composition (no training): the discriminator's training split
of D_bias weighted by w_0 = exp(δᵀ(x0 − m)/v), normalised, per attribute group, against the target.
Where w_0 cannot represent the groups' weights the trained network has to undo the difference
(bench/NOTES.md, 2026-12-06).

    python bench/tilt_composition.py --dataset gmm2d --seeds 0,1,2
"""

from __future__ import annotations

import argparse

import torch

from tiwbench import registry
from tiwbench.evaluate import share_metrics
from tiwbench.ratio import LearnedRatio, RatioTrainConfig, ratio_splits
from tiwbench.streams import generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="gmm2d")
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    recipe = registry.get_dataset(args.dataset)
    holdout = RatioTrainConfig().holdout
    print("| seed | D_bias split | tilted | bias_l2 of the tilted composition |\n|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        data = recipe.build(args.ref, seed)
        x_ref, _, x_bias, _ = ratio_splits(data.x_ref, data.x_bias, holdout, generator(seed, "ratio_batches"))
        model = LearnedRatio(recipe.ratio_net(), data.sigma_data, True, data_shape=tuple(x_bias.shape[1:]),
                             limit_base="tilt")
        model.fit_limit(x_ref, x_bias)  # the base set: the split's first ratio.TILT_POINTS points
        w = model.tilt_weights[:, 0].double()
        groups = data.attribute(x_bias[:len(w)])
        k = len(data.target_shares)
        tilted = torch.zeros(k, dtype=torch.double).index_add_(0, groups, w / w.sum())
        plain = torch.bincount(groups, minlength=k).double() / len(w)
        fmt = lambda t: " / ".join(f"{float(v):.3f}" for v in t)  # noqa: E731
        off = share_metrics(tilted, data.target_shares)["bias_l2"]  # as a run's shares are scored
        print(f"| {seed} | {fmt(plain)} | {fmt(tilted)} | {off:.3f} |")


if __name__ == "__main__":
    main()
