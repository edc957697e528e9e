import pytest

from tiwbench.datasets.gmm import GMM2D

# Small settings so that a full run through the CLI takes seconds.
FAST = ["--steps", "200", "--ratio-steps", "200", "--num-samples", "1000", "--sample-steps", "8"]


@pytest.fixture(scope="session")
def gmm2d():
    return GMM2D()


@pytest.fixture(scope="session")
def gmm2d_data(gmm2d):
    return gmm2d.build(ref=0.05, seed=0)
