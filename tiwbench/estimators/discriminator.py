"""The built-in learned estimators: a σ-conditioned discriminator trained with BCE, chosen on
held-out data, with the exact large-σ limit built in (docs/design.md §4); and `paper`, the
published protocol (no selection, no large-σ term, a fixed number of steps) for reproductions.
Torch loads only when a model is fitted."""

from __future__ import annotations

from ..bands import SIGMA_PROPOSALS, TILT_WEIGHTS
from ..config import at_least, one_of
from .base import RatioEstimator, RatioOption


class Discriminator(RatioEstimator):
    """BCE discriminator of D_ref against D_bias; its held-out-selected states per σ band, the
    untrained prior among the candidates, and the large-σ term with its tilted base."""

    name = "discriminator"
    description = ("σ-conditioned BCE discriminator chosen on held-out data, with the exact large-σ "
                   "limit built in (the default)")
    shared = ("ratio_steps", "ratio_batch_size", "ratio_lr", "ratio_backbone")
    options = (
        RatioOption("weight_decay", 1e-2, "AdamW weight decay.", at_least(0), legacy=0.0),
        RatioOption("holdout", 0.2, "Share of D_ref and D_bias held out to select the discriminator (0 = train "
                    "all steps, keep the last).", lambda v: None if 0 <= v <= 0.5 else "must be in [0, 0.5]",
                    legacy=0.0),
        RatioOption("patience", 1500, "Stop after this many steps without a held-out improvement.",
                    at_least(1)),
        RatioOption("select", "band", "State kept: band (best held-out BCE per σ band) | global (best mean) "
                    "| last.", one_of("band", "global", "last")),
        RatioOption("limit", True, "Build the exact large-σ limit into the time-dependent ratio (a linear "
                    "term from the two sets' means).", legacy=False),
        RatioOption("limit_var", "delta", "Variance of the large-σ term: delta (pooled variance along the "
                    "mean difference) | sigma_data (isotropic data only).", one_of("delta", "sigma_data"),
                    legacy="sigma_data"),
        RatioOption("limit_base", "tilt", "What the network adds to: linear (the large-σ term alone) | tilt "
                    "(D_bias's training split tilted by that term, noised exactly).", one_of("linear", "tilt"),
                    legacy="linear"),
        RatioOption("tilt_weights", "select", "The tilt's clean weights: linear | classifier (the "
                    "time-independent discriminator's) | select (the one better on held-out data).",
                    one_of(*TILT_WEIGHTS), legacy="linear"),
        RatioOption("refit", False, "After selection, retrain on all the data for the selected steps per band."),
        RatioOption("prior", True, "Keep the untrained state (the large-σ term alone, or w = 1) as a "
                    "selection candidate.", legacy=False),
        RatioOption("sigma", "log_uniform", "Training σ: log_uniform over [0.002, 80] | edm (the score "
                    "network's log-normal) | mixed.", one_of(*SIGMA_PROPOSALS), legacy="log_uniform"),
        RatioOption("sigma_floor", 0.0, "Below this σ (in units of σ_data) the network sees this σ (0 = off).",
                    at_least(0)),
    )

    def unused_options(self, kind, values):
        unused = set()
        if kind != "time_dependent":  # trained on clean data only
            unused.add("sigma")
        if kind != "time_dependent" or not values["limit"]:  # no large-σ term to scale
            unused |= {"limit_var", "limit_base"}
        if "limit_base" in unused or values["limit_base"] != "tilt":  # no tilt to weigh
            unused.add("tilt_weights")
        return unused

    def check(self, values: dict) -> str | None:
        if values["tilt_weights"] == "select" and values["holdout"] == 0:
            return ("tilt_weights=select chooses on held-out data, which holdout=0 leaves none of; "
                    "pass --ratio-option tilt_weights=linear or classifier")
        return None

    def fit(self, request):
        from ..ratio_cache import fit_discriminator

        return fit_discriminator(request, request.options)


# The published protocol is the discriminator as it was before any of its options existed: every
# option at its neutral (legacy) value — no weight decay, no holdout, no large-σ term, no prior —
# and the last state kept.
PAPER_PROTOCOL = {**{o.name: o.neutral for o in Discriminator.options}, "select": "last"}


class Paper(RatioEstimator):
    """The published protocol (Kim et al. 2024): a σ-conditioned discriminator trained with BCE on
    balanced batches of noised D_ref and D_bias for a fixed number of steps (`--ratio-steps`), Adam
    without weight decay, the last state kept: no held-out selection, no large-σ term, no prior."""

    name = "paper"
    description = "the paper's discriminator protocol: fixed steps, last state, no selection or large-σ term"
    shared = Discriminator.shared

    def fit(self, request):
        from ..ratio_cache import fit_discriminator

        return fit_discriminator(request, dict(PAPER_PROTOCOL))
