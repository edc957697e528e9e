"""Contracts over every registered ratio estimator — built-ins and installed plugins alike — on a
two-group mixture whose exact ratio is known, and the estimator options' round trip."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.datasets.base import BenchmarkData
from tiwbench.diffusion import SIGMA_MIN
from tiwbench.errors import TiwbenchError
from tiwbench.estimators import RatioEstimator, RatioOption
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.ratio import DensityRatio, ExactRatio, TrainingRatio, log_r_and_grad
from tiwbench.ratio_cache import ratio_model_for

ESTIMATORS = registry.available("ratio")
SHIFT = torch.tensor([2.0, 0.0])  # two groups, N(−SHIFT, I) and N(+SHIFT, I)
BIAS, TARGET = torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5])  # their shares in D_bias and in p_data


def mixture_log_p(shares):
    means = torch.stack([-SHIFT, SHIFT])

    def log_p(x, s):
        var = 1 + s**2
        sq = (x[:, None, :] - means).pow(2).sum(2)  # (B, 2)
        return torch.logsumexp(shares.log() - sq / (2 * var[:, None]), dim=1) - torch.log(var)  # d = 2
    return log_p


def draw(shares, n, g):
    labels = torch.multinomial(shares, n, replacement=True, generator=g)
    return torch.randn(n, 2, generator=g) + torch.where(labels[:, None] == 1, SHIFT, -SHIFT), labels


def two_groups(seed: int = 0, n_bias: int = 4000, n_ref: int = 400) -> BenchmarkData:
    """A biased and a reference sample of one two-group mixture, with the exact noised ratio and
    D_bias's group labels: every estimator, the label-informed one included, can fit it."""
    g = torch.Generator().manual_seed(seed)
    x_bias, labels = draw(BIAS, n_bias, g)
    x_ref, _ = draw(TARGET, n_ref, g)
    exact = lambda td: ExactRatio(mixture_log_p(TARGET), mixture_log_p(BIAS), td)  # noqa: E731
    return BenchmarkData(x_bias=x_bias, x_ref=x_ref, x_eval=x_ref[:10],
                         eval_labels=torch.zeros(10, dtype=torch.long), target_shares=TARGET,
                         sigma_data=1.0, attribute=lambda x: torch.zeros(len(x)), features=lambda x: x,
                         feature_space="data", exact_ratio=exact, bias_labels=labels,
                         sample_bias=lambda n, gen: draw(BIAS, n, gen)[0])


def fitted(name: str, kind: str, tmp_path, seed: int = 0):
    method = "tiw_dsm" if kind == "time_dependent" else "iw_dsm"
    cfg = resolve_config(method, "gmm2d", 0.05, ratio=name, ratio_steps=400, seed=seed)
    recipe = registry.get_dataset("gmm2d")  # its ratio network suits 2-d data
    return ratio_model_for(cfg, kind, recipe, two_groups(seed), tmp_path, torch.device("cpu"))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimator_declaration(name):
    check_estimator_declaration(name)


def check_estimator_declaration(name):
    """Also run by test_example_plugin.py over the installed example estimator."""
    cls = registry.load("ratio", name)
    assert issubclass(cls, RatioEstimator) and cls.name == name and cls.description
    assert cls.kinds and set(cls.kinds) <= {"time_dependent", "time_independent"}
    for option in cls.options:
        assert isinstance(option, RatioOption) and option.help
        assert option.validate(option.default) == option.default
    defaults = {o.name: o.default for o in cls.options}
    assert cls().check(defaults) is None  # the defaults go together


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimator_fit_contract(name, tmp_path):
    check_estimator_fit(name, tmp_path)


def check_estimator_fit(name, tmp_path):
    """Finite log w and gradient of the right shapes, and better than chance on held-out data
    (class-balanced BCE at the smallest σ below log 2 − 0.05; the exact ratio scores 0.54) for
    every kind it declares."""
    cls = registry.load("ratio", name)
    g = torch.Generator().manual_seed(123)
    x_ref, x_bias = draw(TARGET, 2000, g)[0], draw(BIAS, 2000, g)[0]
    for kind in cls.kinds:
        model, summary = fitted(name, kind, tmp_path)
        assert isinstance(model, DensityRatio) and model.time_dependent == (kind == "time_dependent")
        assert summary is None or isinstance(summary, dict)
        sigma = torch.full((64,), 0.5)
        log_r, grad = log_r_and_grad(model, x_ref[:64], sigma, 0.5)
        assert log_r.shape == (64,) and grad.shape == (64, 2)
        assert torch.isfinite(log_r).all() and torch.isfinite(grad).all()
        s = torch.full((2000,), SIGMA_MIN)
        with torch.no_grad():
            bce = (F.binary_cross_entropy_with_logits(model.log_ratio(x_ref, s), torch.ones(2000))
                   + F.binary_cross_entropy_with_logits(model.log_ratio(x_bias, s), torch.zeros(2000))) / 2
        assert float(bce) < math.log(2) - 0.05, (name, kind, float(bce))


class UnitEstimator(RatioEstimator):
    """w ≡ 1: every ratio method must then be plain DSM."""

    name = "unit_for_tests"
    description = "w = 1"

    def fit(self, request):
        class Unit(DensityRatio):
            time_dependent = request.time_dependent

            def log_ratio(self, x, sigma):
                return (0 * x).flatten(1).sum(1)
        return Unit()


def test_a_unit_estimator_reduces_every_ratio_method_to_dsm(tmp_path):
    from test_contracts import toy_batch

    registry.register("ratio", UnitEstimator)
    try:
        batch, den = toy_batch(dim=2, seed=4)
        expected = DSMObs().loss(batch, den)
        for name in registry.available("method"):
            method = registry.get_method(name)
            if not method.ratio:
                continue
            model, _ = fitted("unit_for_tests", method.ratio, tmp_path)
            got = method.loss(batch, den, TrainingRatio(model, 0.3), 1.0)
            assert torch.allclose(got, expected, rtol=1e-6, atol=1e-8), name
    finally:
        registry.unregister("ratio", UnitEstimator.name)


def test_a_fit_that_returns_no_density_ratio_is_one_line(tmp_path):
    class Broken(RatioEstimator):
        name = "broken_for_tests"
        description = "returns a number"

        def fit(self, request):
            return 1.0

    registry.register("ratio", Broken)
    try:
        with pytest.raises(TiwbenchError, match="'broken_for_tests': fit returned float, not a tiwbench.ratio"):
            fitted("broken_for_tests", "time_dependent", tmp_path)
    finally:
        registry.unregister("ratio", Broken.name)


def test_a_bad_declaration_is_refused_when_the_class_is_defined():
    with pytest.raises(TiwbenchError, match="kinds must be among"):
        type("Bad", (RatioEstimator,), {"name": "bad", "description": "x", "kinds": ("sometimes",)})
    with pytest.raises(TiwbenchError, match="--ratio-option n must be >= 1, got 0"):
        at_least_one = RatioOption("n", 0, "x", lambda v: "must be >= 1" if v < 1 else None)
        type("Bad", (RatioEstimator,), {"name": "bad", "description": "x", "options": (at_least_one,)})


def test_estimator_options_key_the_run_and_defaults_do_not():
    base = resolve_config("tiw_dsm", "gmm2d", 0.05)
    assert resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_options=(("patience", "1500"),)).run_id == base.run_id
    other = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_options=(("patience", "700"),))
    assert other.run_id != base.run_id and dict(other.ratio_options)["patience"] == 700
    paper = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="paper")
    assert paper.run_id not in (base.run_id, other.run_id) and paper.ratio_options == ()
    # ratio-free methods ignore the estimator and its options
    assert (resolve_config("dsm_obs", "gmm2d", 0.05, ratio="paper").run_id
            == resolve_config("dsm_obs", "gmm2d", 0.05).run_id)


def test_the_paper_protocol_is_a_fixed_number_of_steps_without_selection_or_large_sigma_term(tmp_path):
    model, summary = fitted("paper", "time_dependent", tmp_path)
    assert summary["chosen_step"] == [400] * len(summary["chosen_step"])  # the last state, every band
    assert not model.has_limit and summary["val_bce"] == [None] * len(summary["val_bce"])


@pytest.mark.parametrize("method, kind, options, cache, run_id", [
    ("tiw_dsm", "time_dependent", (), "ba3b2ccb", "6bb74ea9"),
    ("iw_dsm", "time_independent", (), "4a8a22e7", "c18c5c8e"),
    ("tiw_dsm", "time_dependent", (("limit_base", "linear"),), "5713019a", "cc962d47"),
    ("tiw_dsm", "time_dependent", (("holdout", "0"), ("tilt_weights", "classifier")), "0ade4484", "b396830c"),
    ("iw_dsm", "time_independent", (("refit", "true"),), "97ef410f", "51f16f19"),
])
def test_the_discriminators_run_ids_and_cache_keys_are_those_from_before_it_was_a_plugin(
        method, kind, options, cache, run_id):
    """Computed with the code before ratio estimators were plugins (`--ratio-holdout 0` and the like):
    every run and cached model made then is found again."""
    from tiwbench.ratio_cache import discriminator_key, train_config
    from tiwbench.streams import digest

    cfg = resolve_config(method, "gmm2d", 0.05, ratio_options=options)
    key = discriminator_key(cfg, kind, train_config(cfg, cfg.ratio_values()), "scratch")
    assert digest(key) == cache and cfg.run_id == f"gmm2d-{method}-ref0.05-a1-s0-{run_id}"


def test_a_cache_key_leaves_out_options_at_their_legacy_value():
    """As run ids do: a fit made before an option existed (its legacy value) keeps its cache name,
    any other value is part of the key."""
    from tiwbench.estimators.base import RatioRequest

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="labels")

    def key(options):
        return RatioRequest(cfg, "time_dependent", None, None, options, Path("."), None).cache_key

    assert key({"steps_factor": 1})["options"] == {}
    assert key({"steps_factor": 6})["options"] == {"steps_factor": 6}
    assert key({"steps_factor": 1})["ratio_steps"] == cfg.ratio_steps
