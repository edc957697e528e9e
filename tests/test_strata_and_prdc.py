"""Stratified score batches (a fixed D_ref share, π set to it) and the precision/recall/density/
coverage metrics with their ranking direction."""

import torch

from tiwbench.evaluate import prdc_metrics
from tiwbench.methods.dsm_mix import DSMMix
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.methods.dsm_ref import DSMRef
from tiwbench.record import Record
from tiwbench.results import long_table, metric_heading
from tiwbench.score_nets import training_set
from tiwbench.train import draw_indices


def test_stratified_batches_hold_exactly_the_reference_share():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = draw_indices(1000, 64, (50, 32), gen)
        assert len(idx) == 64 and int((idx >= 950).sum()) == 32 and int(idx.min()) >= 0
    # the reference rows are all reachable and the order is mixed
    seen = torch.cat([draw_indices(1000, 64, (50, 32), gen) for _ in range(100)])
    assert set(seen[seen >= 950].tolist()) == set(range(950, 1000))
    idx = draw_indices(1000, 64, (50, 32), gen)
    assert not bool((idx[:32] < 950).all() and (idx[32:] >= 950).all())
    uniform = draw_indices(1000, 4096, (), gen)
    assert 0.02 < float((uniform >= 950).double().mean()) < 0.08


def test_training_set_sets_pi_to_the_stratified_share(gmm2d_data):
    data = gmm2d_data
    x, pi, strata = training_set(DSMMix(), data, 0.5)
    assert pi == 0.5 and strata == (len(data.x_ref), 0.5) and len(x) == len(data.x_bias) + len(data.x_ref)
    assert torch.equal(x[-len(data.x_ref):], data.x_ref)
    _, pi, strata = training_set(DSMMix(), data, 0.0)
    assert strata == () and pi == len(data.x_ref) / (len(data.x_bias) + len(data.x_ref))
    # dsm_obs is the paper's DSM(obs): uniform draws whatever the share
    _, pi_obs, strata = training_set(DSMObs(), data, 0.5)
    assert strata == () and pi_obs == pi
    assert training_set(DSMRef(), data, 0.5)[1:] == (1.0, ())


def test_prdc_is_perfect_on_the_same_distribution_and_zero_on_a_distant_one():
    g = torch.Generator().manual_seed(0)
    real, same = torch.randn(2000, 3, generator=g), torch.randn(2000, 3, generator=g)
    good = prdc_metrics(real, same)
    assert good["precision"] > 0.9 and good["recall"] > 0.9 and good["coverage"] > 0.9
    assert 0.8 < good["density"] < 1.2
    far = prdc_metrics(real, same + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    collapsed = prdc_metrics(real, 0.05 * same)  # high fidelity, little diversity
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3


def test_precision_is_ranked_highest_first():
    def record(method, seed, precision):
        return Record.from_dict({"config": {"method": method, "dataset": "gmm2d", "ref": 0.05, "seed": seed,
                                            "ratio": "none"},
                                 "metrics": {"precision": precision, "bias_l2": 0.1}, "ratio_source": "none",
                                 "ratio_kind": None, "shares": [0.25] * 4, "target_shares": [0.25] * 4,
                                 "feature_space": "data"})
    records = [record("dsm_obs", s, 0.5 + 0.01 * s) for s in range(3)] + \
              [record("dsm_ref", s, 0.9 + 0.01 * s) for s in range(3)]
    long = long_table(records)
    best = long[long.metric == "precision"].set_index("method")["best"]
    assert bool(best["dsm_ref"]) and not bool(best["dsm_obs"])
    assert metric_heading("precision") == "precision (higher is better)"
    assert metric_heading("density") == "density"


def test_confusion_correction_recovers_the_true_shares_of_a_known_classifier():
    """A synthetic 4-class classifier of known confusion: from 20,000 predictions on samples with
    skewed true shares, the corrected shares are within 0.01 of the truth (the raw ones are not)."""
    from tiwbench.evaluate import confusion_matrix, corrected_shares

    g = torch.Generator().manual_seed(0)
    confusion = torch.tensor([[0.90, 0.05, 0.03, 0.02], [0.08, 0.85, 0.05, 0.02],
                              [0.02, 0.03, 0.92, 0.03], [0.10, 0.03, 0.02, 0.85]], dtype=torch.float64)

    def classify(labels):
        return torch.multinomial(confusion[labels], 1, generator=g).flatten()

    # the confusion matrix, measured on labelled held-out data of balanced groups
    labels = torch.arange(4).repeat(5000)
    measured = confusion_matrix(classify(labels), labels, 4)
    assert (measured - confusion).abs().max() < 0.02
    samples = torch.multinomial(torch.tensor([0.55, 0.25, 0.15, 0.05]), 20_000, replacement=True, generator=g)
    truth = torch.bincount(samples, minlength=4).double() / 20_000  # the samples' true shares
    raw = torch.bincount(classify(samples), minlength=4).double() / 20_000
    fixed = corrected_shares(raw, measured)
    assert (raw - truth).abs().max() > 0.02  # (at most 0.009 corrected, at least 0.021 raw over 50 seeds)
    assert (fixed - truth).abs().max() < 0.01, (raw, fixed)
    assert abs(float(fixed.sum()) - 1) < 1e-9 and bool((fixed >= 0).all())
    # a perfect classifier needs no correction; an unseen group's row is the identity
    assert torch.allclose(corrected_shares(truth, torch.eye(4, dtype=torch.float64)), truth)
    assert torch.equal(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 3)[2],
                       torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
