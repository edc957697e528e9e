"""TIW without the score correction: the ablation that shows the correction debiases."""

from .tiw_dsm import TIWDSM


class TIWNoCorr(TIWDSM):
    """r_σ(x_σ)^α · λ(σ)·‖D_θ(x_σ; σ) − x0‖²: its minimiser is still the biased score."""

    name = "tiw_nocorr"
    description = "TIW-DSM weights without the score correction (ablation)"
    correction = False
    fits = None  # its minimiser is neither the training mixture's score nor p_data's
