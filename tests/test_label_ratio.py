"""The label-informed ratio against ground truth: with the exact group posterior it is the exact
noised ratio (the identity behind it), trained it comes close, and it needs D_bias's labels."""

import math

import pytest
import torch
from torch import nn

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.errors import TiwbenchError
from tiwbench.label_ratio import LabelRatio, group_weights, with_outputs
from tiwbench.ratio_cache import ratio_model_for

CPU = torch.device("cpu")


class ExactPosterior(nn.Module):
    """log P_bias,σ(g | x) of a Gaussian mixture, from the preconditioned inputs LabelRatio gives
    its network (σ = e^{4·c_noise}, x = x_in / c_in)."""

    def __init__(self, mixture, w_bias, sigma_data):
        super().__init__()
        self.mixture, self.w_bias, self.sigma_data = mixture, w_bias, sigma_data

    def forward(self, x_in, c_noise):
        sigma = (4 * c_noise).exp()
        x = x_in * (sigma**2 + self.sigma_data**2).sqrt()[:, None]
        var = (self.mixture.std**2 + sigma**2)[:, None]
        sq = (x[:, None, :] - self.mixture.means[None]).pow(2).sum(-1)
        return self.w_bias.log()[None] - 0.5 * sq / var  # logits: normalisers cancel in the softmax


@pytest.mark.parametrize("dataset", ["gmm2d", "gmm_hd"])
def test_with_the_exact_posterior_it_is_the_exact_ratio_at_every_sigma(dataset):
    recipe = registry.get_dataset(dataset)
    data = recipe.build(0.05, 0)
    weights = group_weights(data)  # t_g over D_bias's own label shares
    empirical = torch.bincount(data.bias_labels, minlength=4).double() / len(data.bias_labels)
    assert torch.allclose(empirical, recipe.w_bias.double(), atol=0.02)
    # with D_bias's true shares the identity is exact; the estimator uses the empirical ones
    exact_weights = (recipe.w_data.double().log() - recipe.w_bias.double().log())
    model = LabelRatio(ExactPosterior(recipe.mixture, recipe.w_bias, data.sigma_data), data.sigma_data,
                       exact_weights, time_dependent=True)
    exact = data.exact_ratio(True)
    g = torch.Generator().manual_seed(0)
    x = data.x_bias[:500] + torch.randn(500, data.x_bias.shape[1], generator=g) * 0.5
    for s in (0.002, 0.1, 1.0, 10.0, 80.0):
        sigma = torch.full((500,), s)
        assert torch.allclose(model.log_ratio(x, sigma), exact.log_ratio(x, sigma), atol=1e-4), s
    assert torch.allclose(weights.exp(), recipe.w_data.double() / empirical)


def test_trained_it_comes_close_to_the_exact_ratio(tmp_path):
    from tiwbench.evaluate import ratio_diagnostics

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="labels", ratio_steps=250)  # × steps_factor 6
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    model, fit = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, CPU)
    scalars, _ = ratio_diagnostics(model, data, 0.5, 0, fit)
    # the held-out-selected discriminator's is 0.05 on these data (results/gmm2d)
    assert scalars["ratio_err"] < 0.03, scalars
    assert fit["steps"] == 1500 and math.isfinite(fit["train_ce_last100"])
    again, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, CPU)  # from the cache
    x, sigma = data.x_bias[:64], torch.full((64,), 0.3)
    assert torch.equal(again.log_ratio(x, sigma), model.log_ratio(x, sigma))


def test_a_dataset_without_bias_labels_is_one_line():
    data = registry.get_dataset("gmm2d").build(0.05, 0)
    data.bias_labels = None
    with pytest.raises(TiwbenchError, match="--ratio labels needs the group labels of D_bias"):
        group_weights(data)


def test_the_classifier_is_the_datasets_ratio_network_with_one_output_per_group():
    for dataset in ("gmm2d", "digits_lt"):
        recipe = registry.get_dataset(dataset)
        net = with_outputs(recipe.ratio_net(), 7)
        outs = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
        x = recipe.build(0.05, 0).x_bias[:4].float()
        assert outs[-1] == 7 and net(x, torch.zeros(4)).shape == (4, 7)  # one logit per group
    with pytest.raises(TiwbenchError, match="no output layer"):
        with_outputs(nn.Sequential(nn.Linear(3, 4)), 2)


@pytest.mark.slow
def test_a_run_with_the_label_informed_ratio_writes_its_record(tmp_path):
    """Through the CLI, TensorBoard logging included (the fit summary has no discriminator curves)."""
    import json

    from conftest import FAST
    from typer.testing import CliRunner

    from tiwbench.cli import app

    out = CliRunner().invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05", "--ratio",
                                   "labels", "--results", str(tmp_path), *FAST])
    assert out.exit_code == 0, out.output
    (path,) = tmp_path.glob("*/metrics.json")
    record = json.loads(path.read_text())
    assert record["ratio_source"] == "labels" and "ratio_err" in record["metrics"]
    assert record["ratio_fit"]["steps"] == 6 * 200  # the noise-conditional classifier: steps_factor × 200


def test_its_heldout_accuracy_is_the_bayes_accuracy_with_the_exact_posterior():
    """heldout_accuracy, measured independently: the exact posterior's argmax on fresh noised
    evaluation points, at the grid's σ; the record's rows must agree within sampling error."""
    from tiwbench.bands import VAL_SIGMAS
    from tiwbench.label_ratio import heldout_accuracy

    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    model = LabelRatio(ExactPosterior(recipe.mixture, recipe.w_bias, data.sigma_data), data.sigma_data,
                       group_weights(data), time_dependent=True)
    rows = heldout_accuracy(model, data, CPU)
    assert [r["sigma"] for r in rows] == VAL_SIGMAS
    g = torch.Generator().manual_seed(1)
    x, y = data.x_eval[:2000], data.eval_labels[:2000]
    for row in rows:
        s = row["sigma"]
        noisy = x + s * torch.randn(x.shape, generator=g)
        var = recipe.mixture.std**2 + s**2
        sq = (noisy[:, None] - recipe.mixture.means[None]).pow(2).sum(-1)
        logits = recipe.w_bias.log()[None] - 0.5 * sq / var
        bayes = float((logits.argmax(1) == y).double().mean())
        assert abs(row["acc"] - bayes) < 0.04, (s, row, bayes)  # 2,000 points: sd ≈ 0.011
    assert rows[0]["acc"] > 0.9 and rows[-1]["acc"] < 0.5  # the components part at small σ, merge at large
    clean = LabelRatio(model.net, data.sigma_data, group_weights(data), time_dependent=False)
    assert [r["sigma"] for r in heldout_accuracy(clean, data, CPU)] == [0.002]


def test_the_noise_conditional_classifier_trains_steps_factor_times_longer(tmp_path):
    """The clean-data classifier trains --ratio-steps and keeps its run ids; the noise-conditional
    one steps_factor times as long (6 unless set), and the record says so."""
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    fits = {}
    for method, kind, options in (("iw_dsm", "time_independent", ()), ("tiw_dsm", "time_dependent", ()),
                                  ("tiw_dsm", "time_dependent", (("steps_factor", 2),))):
        cfg = resolve_config(method, "gmm2d", 0.05, ratio="labels", ratio_steps=20, ratio_options=options)
        _, fit = ratio_model_for(cfg, kind, recipe, data, tmp_path, CPU)
        fits[(kind, options)] = (cfg, fit)
        assert len(fit["heldout_acc"]) == (12 if kind == "time_dependent" else 1)
    assert fits[("time_independent", ())][1]["steps"] == 20
    assert fits[("time_dependent", ())][1]["steps"] == 120
    assert fits[("time_dependent", (("steps_factor", 2),))][1]["steps"] == 40
    assert fits[("time_independent", ())][0].ratio_options == ()  # unused there: no new run id
    assert fits[("time_dependent", ())][0].ratio_options == (("steps_factor", 6),)
    assert len(list((tmp_path / "_ratios").glob("*.pt"))) == 3


def test_one_label_classifier_serves_every_reference_size_of_a_seed(tmp_path):
    """The classifier sees D_bias and its labels only: another reference size of the same seed reads
    the same cache file (the same weights), another seed trains its own, and changed labels do not
    read a stale fit."""
    recipe = registry.get_dataset("gmm2d")

    def fit(ref, seed, data=None):
        data = data or recipe.build(ref, seed)
        cfg = resolve_config("iw_dsm", "gmm2d", ref, seed=seed, ratio="labels", ratio_steps=10)
        model, _ = ratio_model_for(cfg, "time_independent", recipe, data, tmp_path, CPU)
        return next(iter(model.net.parameters())).clone()

    first = fit(0.05, 0)
    assert torch.equal(fit(0.25, 0), first)
    assert len(list((tmp_path / "_ratios").glob("*.pt"))) == 1
    assert not torch.equal(fit(0.05, 1), first)
    data = recipe.build(0.05, 0)
    data.bias_labels = data.bias_labels.roll(1)
    fit(0.05, 0, data)
    assert len(list((tmp_path / "_ratios").glob("*.pt"))) == 3
