"""tiwbench: benchmark debiasing methods for diffusion models trained on biased data.

Importing the package is cheap; the heavy modules (torch, pandas) load on use.
"""

__version__ = "0.1.0"
