"""Discriminator variants against the exact ratio on the analytic sets;
on other datasets (images) the held-out BCE alone.

    python bench/ratio_probe.py --dataset gmm_hd --ref 0.05 --seed 0 --variants today,limit,band
    python bench/ratio_probe.py --dataset digits_lt --ref 0.1 --variants band_sd,band --steps 800
    python bench/ratio_probe.py --dataset shapes32 --linear-only   # the large-σ term alone

Prints, per variant, the held-out BCE it selected on, the log-r and correction (σ²∇log r) RMSE per
σ, and the λ-weighted correction error (evaluate.corr_err). Selection uses held-out data only;
the exact-ratio columns are for reading, never for choosing.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tiwbench import evaluate, registry
from tiwbench.ratio import LearnedRatio, PriorNet, RatioTrainConfig, train_ratio, zero_output_layer
from tiwbench.streams import generator, stream_seed

VARIANTS = {
    "today": ({"weight_decay": 0.0, "holdout": 0.0, "prior": False}, False),  # the first tables' discriminator
    "band_noprior": ({"select": "band", "prior": False}, True),  # until 2026-11-30: trained states only
    "limit": ({"weight_decay": 0.0, "holdout": 0.0, "prior": False}, True),
    "global": ({"select": "global"}, True),
    "band": ({"select": "band"}, True),  # today's default (the untrained prior a candidate, the tilted base)
    "band_linear": ({"select": "band", "limit_base": "linear"}, True),  # the linear base (until 2026-11-30)
    "band_refit": ({"select": "band", "refit": True}, True),  # then retrained on all the data
    "band_sd": ({"select": "band", "limit_var": "sigma_data"}, True),  # that variance σ_data² (until 2026-11-29)
    "band_nolimit": ({"select": "band"}, False),
    "band_wd0.1": ({"select": "band", "weight_decay": 0.1}, True),
    "floor0.25": ({"select": "band"}, True, 0.25),
    "floor0.5": ({"select": "band"}, True, 0.5),
    "floor1": ({"select": "band"}, True, 1.0),
    "lr3e-4": ({"select": "band", "lr": 3e-4}, True),
    "wd1": ({"select": "band", "weight_decay": 1.0}, True, 0.5),
    "wd0.1": ({"select": "band", "weight_decay": 0.1}, True, 0.5),
    "patient": ({"select": "band", "patience": 6000}, True, 0.5),
    "batch2048": ({"select": "band", "batch_size": 2048}, True),
    "patience500": ({"select": "band", "patience": 500}, True),  # stop sooner: what held-out data lose
    "patience750": ({"select": "band", "patience": 750}, True),
    # measured 2026-11-30 (bench/NOTES.md); EMA is probe-side only
    "training_sigma": ({"select": "band", "sigma": "edm"}, True),  # σ as the score network draws it
    "mixed_sigma": ({"select": "band", "sigma": "mixed"}, True),  # half log-uniform, half that
    "ema0.99": ({"select": "band"}, True, 0.0, {"ema": 0.99}),  # selection among averaged weights
    "ema0.999": ({"select": "band"}, True, 0.0, {"ema": 0.999}),
}


class EMAWhenEvaluated(torch.nn.Module):
    """Trains `net`; in eval mode (held-out selection, the returned model) answers with an
    exponential moving average of its weights, updated after every step (`update`)."""

    def __init__(self, net: torch.nn.Module, decay: float):
        super().__init__()
        self.net = net
        self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def update(self, step: int) -> None:
        self.ema.update_parameters(self.net)

    def forward(self, x, c_noise):
        return self.net(x, c_noise) if self.training else self.ema.module(x, c_noise)


def linear_only(dataset: str, ref: float, seed: int) -> None:
    """The large-σ term alone on the discriminator's own held-out split, v = σ_data² against v
    along δ (images: their splits only, no attribute classifier is trained)."""
    from tiwbench.bands import N_BANDS, VAL_SIGMAS
    from tiwbench.ratio import HeldOutBCE, ratio_splits

    recipe = registry.get_dataset(dataset)
    if hasattr(recipe, "splits"):
        data, sigma_data = recipe.splits(ref, seed, None), 0.5  # ImageRecipe.build's σ_data
    else:
        data = recipe.build(ref, seed)
        sigma_data = data.sigma_data
    g = generator(seed, "ratio_batches")
    x_ref, val_ref, x_bias, val_bias = ratio_splits(data.x_ref, data.x_bias, RatioTrainConfig.holdout, g)
    held = HeldOutBCE(val_ref, val_bias, VAL_SIGMAS, g, "cpu")
    per_band = len(VAL_SIGMAS) // N_BANDS
    for var in ("sigma_data", "delta"):
        model = LearnedRatio(PriorNet(), sigma_data, True, tuple(data.x_bias.shape[1:]), limit_var=var)
        model.fit_limit(x_ref, x_bias)
        bce = held(model)
        bands = [sum(bce[k * per_band:(k + 1) * per_band]) / per_band for k in range(N_BANDS)]
        print(f"{dataset} v={var}: {float(model.limit_variance()):.3g} (σ_data² {sigma_data ** 2:.3g}); "
              f"held-out BCE per band " + " ".join(f"{b:.3f}" for b in bands))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="gmm_hd")
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="today,limit,global,band")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--hidden", type=int, default=0, help="MLP discriminator width (0: the recipe's)")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--sigma-range", default="", help="lo,hi: train the discriminator on this σ band only")
    ap.add_argument("--linear-only", action="store_true",
                    help="held-out BCE per σ band of the large-σ term alone (network ≡ 0), for each variance")
    args = ap.parse_args()
    if args.linear_only:
        return linear_only(args.dataset, args.ref, args.seed)
    if args.sigma_range:
        import tiwbench.ratio as ratio_module
        lo, hi = map(float, args.sigma_range.split(","))
        draw = ratio_module.sample_log_uniform_sigma
        ratio_module.sample_log_uniform_sigma = lambda n, g, lo_=None, **kw: draw(n, g, lo=lo, hi=hi)
    recipe = registry.get_dataset(args.dataset)
    data = recipe.build(args.ref, args.seed)
    pi = len(data.x_ref) / (len(data.x_ref) + len(data.x_bias))
    exact = data.exact_ratio(True) if data.exact_ratio else None
    x0 = data.sample_bias(4000, generator(args.seed, "ratio_eval_data")) if exact else None
    for name in args.variants.split(","):
        options, limit, *rest = VARIANTS[name]
        floor = rest[0] if rest else 0.0
        probe_side = rest[1] if len(rest) > 1 else {}
        torch.manual_seed(args.seed)
        from tiwbench.nets.mlp import ConditionalMLP
        net = ConditionalMLP(data.x_bias.shape[1], out_dim=1, hidden=args.hidden, depth=args.depth) \
            if args.hidden else recipe.ratio_net()
        train_cfg = RatioTrainConfig(steps=args.steps, **options)
        net = zero_output_layer(net) if train_cfg.prior else net
        if "ema" in probe_side:
            net = EMAWhenEvaluated(net, probe_side["ema"])
        model = LearnedRatio(net, data.sigma_data, True,
                             data.x_bias.shape[1:] if limit else None, sigma_floor=floor * data.sigma_data,
                             limit_var=train_cfg.limit_var, limit_base=train_cfg.limit_base)
        t0 = time.perf_counter()
        fit = train_ratio(model, data.x_bias, data.x_ref, train_cfg, generator(args.seed, "ratio_batches"),
                          on_step=net.update if "ema" in probe_side else lambda step: None)
        took = time.perf_counter() - t0
        if exact is None:
            v = float(model.limit_variance()) if model.has_limit else float("nan")
            print(f"## {name} ({took:.0f} s, chosen steps {fit.chosen}) held-out BCE of the chosen states "
                  f"{[round(b, 3) for b in fit.val_bce]} (mean {sum(fit.val_bce) / len(fit.val_bce):.3f}; "
                  f"chance 0.693), v = {v:.3g} (σ_data² = {data.sigma_data ** 2:.3g})")
            continue
        rows = evaluate.ratio_error(fit.model, exact, x0, pi, stream_seed(args.seed, "ratio_eval_noise"))
        selected = f", held-out BCE {[round(b, 4) for b in fit.val_bce]}" if fit.val_bce[0] is not None else ""
        print(f"\n## {name} ({took:.0f} s, chosen steps {fit.chosen}{selected}) corr_err "
              f"{evaluate.corr_err(rows, data.sigma_data):.4f}, ratio_err {evaluate.integrated_error(rows):.3f}")
        if fit.curves:
            last = {c["band"]: c for c in fit.curves}
            print("held-out BCE at the end:", {b: round(c["val_bce"], 3) for b, c in last.items()})
        print("σ      " + " ".join(f"{r['sigma']:7.3g}" for r in rows))
        print("logr   " + " ".join(f"{r['log_r_rmse']:7.3f}" for r in rows))
        print("corr   " + " ".join(f"{r['corr_rmse']:7.3f}" for r in rows))
        print("|corr| " + " ".join(f"{r.get('corr_norm', float('nan')):7.3f}" for r in rows))


if __name__ == "__main__":
    main()
