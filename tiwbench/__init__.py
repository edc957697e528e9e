"""tiwbench: benchmark debiasing methods for diffusion models trained on biased data.

Importing the package is cheap; the heavy modules (torch, pandas) load on use.
"""

from pathlib import Path as _Path

__version__ = "0.2.0"
# The plugin API (docs/plugins.md). Version 2 added ratio estimators; the names that version 1
# had and 2 dropped stay, for this release, as aliases that warn.
PLUGIN_API_VERSION = 2

DEFAULT_RESULTS = _Path("results/runs")  # where runs are recorded unless --results says otherwise


def default_out(dataset: str) -> _Path:
    """Where `plot` and `report` write a dataset's files unless --out says otherwise."""
    return _Path("results") / dataset
