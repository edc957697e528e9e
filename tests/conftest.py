import contextlib
import os

import pytest
import torch

from tiwbench.datasets.gmm import GMM2D

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers (pytest-xdist) on a two-core machine: one thread each, for
    # them and for the processes they start, so that they share the cores rather than fight
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Small settings so that a full run through the CLI takes seconds.
FAST = ["--steps", "200", "--ratio-steps", "200", "--num-samples", "1000", "--sample-steps", "8"]


@pytest.fixture(scope="session")
def gmm2d():
    return GMM2D()


@pytest.fixture(scope="session")
def gmm2d_data(gmm2d):
    return gmm2d.build(ref=0.05, seed=0)


@contextlib.contextmanager
def registered(kind, cls):
    """`cls` registered under its name for the block, unregistered after it."""
    from tiwbench import registry

    registry.register(kind, cls)
    try:
        yield cls
    finally:
        registry.unregister(kind, cls.name)
