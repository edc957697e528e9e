"""tiwbench: benchmark debiasing methods for diffusion models trained on biased data.

Importing the package is cheap; the heavy modules (torch, pandas) load on use.
"""

__version__ = "0.1.0"

from pathlib import Path as _Path

DEFAULT_RESULTS = _Path("results/runs")  # where runs are recorded unless --results says otherwise


def default_out(dataset: str) -> _Path:
    """Where `plot` and `report` write a dataset's files unless --out says otherwise."""
    return _Path("results") / dataset
