"""DSM on D_obs with the reference set oversampled: a baseline of its own."""

from .dsm_obs import DSMObs


class DSMMix(DSMObs):
    """Plain EDM DSM on D_obs, `--ref-share` of every batch drawn from D_ref (default 0.5): the
    training mixture moves toward p_data by oversampling alone, with no ratio."""

    name = "dsm_mix"
    description = "DSM on D_obs with --ref-share of every batch from D_ref (oversampling baseline)"
    stratified_batches = True
