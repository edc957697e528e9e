"""How many steps the label-informed bound's noise-conditional group classifier needs: its accuracy
and KL from the exact posterior of the empirical D_bias mixture (a Gaussian kernel over D_bias,
the distribution DSM itself fits) on 400 D_bias images noised afresh, per σ.

    OMP_NUM_THREADS=1 python bench/label_steps.py --seed 1 --ref 0.05 --steps 800,2400,4800

Each step count trains afresh (one cosine schedule over it), as `--ratio labels` trains.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from empirical_ratio_run import EmpiricalPosterior, EmpiricalRatio  # bench/, the script's folder

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.diffusion import to_model_space
from tiwbench.label_ratio import LabelRatio, _train, group_weights, with_outputs

SIGMAS = (0.01, 0.1, 0.3, 0.6, 1.0, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="shapes16")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--steps", default="800,2400,4800")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--results", type=Path, default=Path("results/runs"))
    args = ap.parse_args()
    cfg = resolve_config("tiw_dsm", args.dataset, args.ref, seed=args.seed, ratio="labels")
    recipe = registry.get_dataset(args.dataset)
    data = recipe.build(args.ref, args.seed, None, cache_dir=args.results / "_cache")
    x = to_model_space(data.x_bias).flatten(1).double()
    labels, log_t_over_b = data.bias_labels.long(), group_weights(data)
    exact_model = EmpiricalRatio(EmpiricalPosterior(data.x_bias, labels, len(log_t_over_b)), data.sigma_data,
                                 log_t_over_b, time_dependent=True)
    for steps in (int(s) for s in args.steps.split(",")):
        torch.manual_seed(args.seed)
        net = with_outputs(recipe.ratio_net(), len(log_t_over_b))
        model = LabelRatio(net, data.sigma_data, log_t_over_b, time_dependent=True)
        train_cfg = SimpleNamespace(seed=args.seed, ratio_lr=args.lr, ratio_batch_size=cfg.ratio_batch_size)
        started = time.time()
        fit = _train(model, data, train_cfg, steps, torch.device("cpu"))
        seconds = time.time() - started
        model.eval()
        g = torch.Generator().manual_seed(123)
        pick = torch.randperm(len(x), generator=g)[:400]
        cells = []
        for sigma in SIGMAS:
            xt = x[pick] + sigma * torch.randn(len(pick), x.shape[1], generator=g, dtype=torch.double)
            with torch.no_grad():
                images = xt.float().view(-1, *data.x_bias.shape[1:])
                at = torch.full((len(pick),), sigma)
                exact = exact_model.group_logits(images, at).log_softmax(1).double()
                learned = model.group_logits(images, at).log_softmax(1).double()
            acc = (learned.argmax(1) == labels[pick]).double().mean()
            kl = (exact.exp() * (exact - learned)).sum(1).mean()
            cells.append(f"σ {sigma}: acc {acc:.3f} KL {kl:.3f} (exact acc "
                         f"{(exact.argmax(1) == labels[pick]).double().mean():.3f})")
        print(f"steps {steps}, lr {args.lr}: train CE {fit['train_ce_last100']:.3f}, {seconds:.0f} s | "
              + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
