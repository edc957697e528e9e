"""A run with the exact ratio of the empirical distributions, for a dataset whose bias reweights
labelled groups: the label-informed identity w_σ(x) = Σ_g (t_g/b_g)·P_bias,σ(g | x) with the
posterior of the empirical D_bias mixture (1/N) Σ_i N(x_i, σ²I) — a Gaussian kernel over D_bias,
computed, not learned. It tells what is left when no classifier stands between the method and
the ratio of the data DSM fits; its cost is a pass over D_bias per evaluation (O(N·D)).

    OMP_NUM_THREADS=1 python bench/empirical_ratio_run.py --method tiw_dsm --dataset shapes16 \\
        --ref 0.05 --seed 0 --results results/runs-empirical

Rows are marked `+empirical` (registered here for the run only, not a built-in estimator).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor, nn

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.diffusion import to_model_space
from tiwbench.estimators.base import RatioEstimator
from tiwbench.label_ratio import LabelRatio, group_weights
from tiwbench.run import execute


class EmpiricalPosterior(nn.Module):
    """D_bias (model space, flattened) and its one-hot labels, as buffers."""

    def __init__(self, x_bias: Tensor, labels: Tensor, k: int):
        super().__init__()
        x = to_model_space(x_bias).flatten(1).float()
        self.register_buffer("x", x)
        self.register_buffer("sq", (x * x).sum(1))
        self.register_buffer("onehot", nn.functional.one_hot(labels.long(), k).float())


class EmpiricalRatio(LabelRatio):
    """LabelRatio with log P_bias,σ(g | x) = log Σ_{i in g} N(x; x_i, σ²) − log Σ_i N(x; x_i, σ²)."""

    def group_logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        data = self.net
        flat = x.flatten(1).float()
        d2 = (flat * flat).sum(1, keepdim=True) - 2 * flat @ data.x.T + data.sq[None]
        log_kernel = -d2 / (2 * sigma.float().view(-1, 1) ** 2)
        top = log_kernel.max(1, keepdim=True).values
        return (torch.exp(log_kernel - top) @ data.onehot).clamp_min(1e-30).log() + top


class Empirical(RatioEstimator):
    name = "empirical"
    description = "the exact ratio of the empirical distributions, from D_bias's group labels (bench)"
    bound = "empirical-exact"

    def fit(self, request):
        data = request.data
        log_t_over_b = group_weights(data)
        posterior = EmpiricalPosterior(data.x_bias, data.bias_labels, len(log_t_over_b))
        return EmpiricalRatio(posterior, data.sigma_data, log_t_over_b, request.time_dependent), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="tiw_dsm")
    ap.add_argument("--dataset", default="shapes16")
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("results/runs-empirical"))
    ap.add_argument("--steps", type=int, help="score steps (default: the dataset's)")
    args = ap.parse_args()
    registry.register("ratio", Empirical)
    extra = {"steps": args.steps} if args.steps else {}
    cfg = resolve_config(args.method, args.dataset, args.ref, seed=args.seed, ratio="empirical", **extra)
    record = execute(cfg, args.results, device="cpu")
    print(f"{cfg.run_id}: bias_l2 {record.metrics['bias_l2']:.4f}, shares "
          f"{[round(s, 4) for s in record.shares]}, total {record.timing['total_s']:.0f} s")


if __name__ == "__main__":
    main()
