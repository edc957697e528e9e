"""The built-in discriminator from scratch against the same heads on the frozen, noise-aware encoder
(`--ratio-backbone score`: a score network trained on D_bias's training split), judged on held-out
data only — the ratio stage of a run alone, for deciding whether the encoder pays for its training.

    python bench/ratio_backbones.py --dataset shapes16 --ref 0.05 --seed 0

Prints per backbone and ratio kind (time-independent for iw_dsm, time-dependent for tiw_dsm) the
seconds it took (the encoder's training included, the first time), the chosen step per σ band and
the held-out BCE there (chance 0.693). Ratio models and the encoder are cached under --results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.ratio_cache import ratio_model_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="shapes16")
    ap.add_argument("--ref", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("/tmp/tiwbench-backbones"))
    ap.add_argument("--steps", type=int, default=None, help="the encoder's training steps (the dataset's)")
    ap.add_argument("--ratio-steps", type=int, default=None, help="the discriminator's (the dataset's)")
    args = ap.parse_args()
    recipe = registry.get_dataset(args.dataset)
    data = recipe.build(args.ref, args.seed, None, cache_dir=args.results / "_cache")  # every row: one (ref, seed)
    for backbone in ("scratch", "score"):
        for method in ("iw_dsm", "tiw_dsm"):
            cfg = resolve_config(method, args.dataset, args.ref, seed=args.seed, ratio_backbone=backbone,
                                 steps=args.steps, ratio_steps=args.ratio_steps)
            t0 = time.perf_counter()
            _, fit = ratio_model_for(cfg, registry.get_method(method).ratio, recipe, data, args.results,
                                     torch.device("cpu"))
            fit = fit or {}
            bce = " ".join(f"{b:.4f}" for b in fit.get("val_bce", []))
            print(f"{backbone:8} {method:8} {time.perf_counter() - t0:6.0f} s  bands {fit.get('bands')}  "
                  f"chosen steps {fit.get('chosen_step')}  held-out BCE {bce}"
                  + (f"  tilt {json.dumps(fit['tilt'])}" if "tilt" in fit else ""), flush=True)


if __name__ == "__main__":
    main()
