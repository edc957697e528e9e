"""CPU step time of the score network's training step on gmm2d (batch 512): DSM against TIW-DSM
with one discriminator network, with the four per-band networks of `BandedNet` (what held-out
selection per band leaves) and with `PriorNet` (every band kept the untrained prior: the large-σ
term alone), on the linear large-σ base and on the tilted one (the default, one more kernel per
step). The discriminator is untrained: only the cost is measured.

    python bench/step_time.py [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import torch

from tiwbench import registry
from tiwbench.bands import N_BANDS
from tiwbench.diffusion import Denoiser, sample_training_sigma
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.methods.tiw_dsm import TIWDSM
from tiwbench.ratio import LearnedRatio, from_layout
from tiwbench.train import TrainConfig, TrainStep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    g = torch.Generator().manual_seed(0)
    x0, sigma, noise = data.x_bias[:512], sample_training_sigma(512, g), torch.randn(512, 2, generator=g)

    def ratio(layout: str, base: str = "linear") -> LearnedRatio:
        model = LearnedRatio(recipe.ratio_net(), data.sigma_data, True, (2,), limit_base=base)
        model.fit_limit(data.x_ref, data.x_bias)
        layouts = {"one": ["net"], "banded": ["net"] * N_BANDS, "prior": ["prior"]}
        model.net = from_layout(model.net, layouts[layout])
        return model.requires_grad_(False).eval()

    print("| step | ms/step |\n|---|---|")
    for name, method, r in (("dsm_obs", DSMObs(), None), ("tiw_dsm, one network", TIWDSM(), ratio("one")),
                            ("tiw_dsm, BandedNet (4)", TIWDSM(), ratio("banded")),
                            ("tiw_dsm, PriorNet", TIWDSM(), ratio("prior")),
                            ("tiw_dsm, one network, tilted base", TIWDSM(), ratio("one", "tilt")),
                            ("tiw_dsm, PriorNet, tilted base", TIWDSM(), ratio("prior", "tilt"))):
        torch.manual_seed(0)
        step = TrainStep(method, Denoiser(recipe.score_net(), data.sigma_data), r, 1.0, 0.05, TrainConfig(1, 512))
        for _ in range(20):
            step(x0, sigma, noise, 1e-4)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(x0, sigma, noise, 1e-4)
        print(f"| {name} | {(time.perf_counter() - t) / args.steps * 1e3:.2f} |")


if __name__ == "__main__":
    main()
