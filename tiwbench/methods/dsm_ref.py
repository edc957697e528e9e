"""DSM on the reference set alone: unbiased but data-starved."""

from .dsm_obs import DSMObs


class DSMRef(DSMObs):
    """Plain EDM DSM trained on D_ref only."""

    name = "dsm_ref"
    description = "DSM on D_ref only (unbiased, few samples)"
    fits = "training"
    train_on = "ref"
