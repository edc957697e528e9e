"""Named random streams and configuration digests: one place for each, so that no two uses of
randomness share a seed by accident and every cache key is hashed the same way."""

from __future__ import annotations

import hashlib
import json

# Offsets from the run's seed. The values are those the committed results were made with; two
# pairs share an offset (historical, harmless: their generators draw different things), and a
# new stream takes a new offset so that no committed number changes.
STREAMS = {
    "data": 0,            # the dataset's D_bias/D_ref draw (recipes)
    "init": 0,            # network initialisation (torch's global generator)
    "batches": 0,         # the score trainer's indices, σ and noise
    "xflip": 1,           # the score trainer's augmentation flips
    "ratio_batches": 1,   # the discriminator trainer's draws
    "sampling": 2,        # the sampler's latents
    "ratio_eval_data": 3,   # fresh D_bias draws for the ratio-error curves
    "ratio_eval_noise": 4,  # the noise of those curves
    "label_batches": 5,     # the label-informed ratio's classifier training draws
}

# Seeds that do not depend on the run's seed: what every run of a dataset shares.
FIXED = {
    "eval": 2**31 - 1,            # analytic and procedural datasets' evaluation sets
    "classifier_data": 2**31 - 2,  # shapes32's labelled images for the attribute classifier
    "label_heldout_noise": 2**31 - 3,  # the noise of the label-informed classifier's held-out accuracy
}


def stream_seed(seed: int, name: str) -> int:
    """The seed of stream `name` of a run with seed `seed`."""
    return seed + STREAMS[name]


def generator(seed: int, name: str):
    """A CPU torch.Generator for stream `name` of a run with seed `seed`."""
    import torch

    return torch.Generator().manual_seed(stream_seed(seed, name))


def fixed_generator(name: str):
    """A CPU torch.Generator for a FIXED stream, the same for every run."""
    import torch

    return torch.Generator().manual_seed(FIXED[name])


def digest(obj) -> str:
    """8 hex digits of the SHA-256 of `obj` as sorted JSON: run ids and cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]
