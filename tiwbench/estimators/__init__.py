"""Density-ratio estimators: the third plugin kind, beside methods and datasets (entry-point
group `tiwbench.ratios`). An estimator declares its options once and fits a `DensityRatio`;
`--ratio NAME --ratio-option KEY=VALUE` picks one for a run (docs/plugins.md).

Torch-free at import: declarations are read by `tiwbench table` and `tiwbench list`.
"""

from .base import DEFAULT_ESTIMATOR, RatioEstimator, RatioOption, RatioRequest

__all__ = ["DEFAULT_ESTIMATOR", "RatioEstimator", "RatioOption", "RatioRequest"]
