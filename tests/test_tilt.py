"""The tilted large-σ base of the time-dependent discriminator (`--ratio-limit-base tilt`,
docs/design.md §4): exact for the set it is built on, the Gaussian ratio on Gaussian data, and the
same model again when it comes from the cache."""

import math

import pytest
import torch

from tiwbench import ratio as ratio_module
from tiwbench.ratio import LearnedRatio, log_r_and_grad


class ZeroLogit(torch.nn.Module):
    def forward(self, x, c_noise):
        return x.new_zeros(len(x), 1)


def tilted(x_ref, x_bias, sigma_data=1.0):
    model = LearnedRatio(ZeroLogit(), sigma_data, True, data_shape=tuple(x_bias.shape[1:]),
                         limit_base="tilt").double()
    model.fit_limit(x_ref, x_bias)
    return model


def test_the_tilted_term_is_the_exact_noised_ratio_of_the_tilted_set(monkeypatch):
    """log w_σ(x) = log Σ w_i N(x; x_i, σ²) − log Σ N(x; x_i, σ²) over the first TILT_POINTS points
    of D_bias, w_i ∝ exp(δᵀ(x_i − m)/v) with mean 1: the value and its input gradient, at every σ
    the sampler visits, against the densities written out."""
    monkeypatch.setattr(ratio_module, "TILT_POINTS", 200)
    monkeypatch.setattr(ratio_module, "TILT_CHUNK", 1000)  # several chunks of rows
    g = torch.Generator().manual_seed(0)
    x_bias = torch.randn(300, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.8, -0.3, 0.0], dtype=torch.float64)
    x_ref = torch.randn(40, 3, generator=g, dtype=torch.float64) + shift
    model = tilted(x_ref, x_bias)
    base = x_bias[:200]
    log_w = (base - model.centre) @ model.delta / model.limit_variance()
    log_w = log_w - torch.logsumexp(log_w, 0) + math.log(200)

    def brute(x, sigma):
        log_k = -(x[:, None, :] - base[None]).pow(2).sum(-1) / (2 * sigma[:, None] ** 2)
        return torch.logsumexp(log_k + log_w, 1) - torch.logsumexp(log_k, 1)

    for s in (0.002, 0.05, 1.0, 80.0):
        x = x_bias[:64] + s * torch.randn(64, 3, generator=g, dtype=torch.float64)
        sigma = torch.full((64,), s, dtype=torch.float64)
        got, grad = log_r_and_grad(model, x, sigma, pi=0.0)
        xr = x.clone().requires_grad_(True)
        want = brute(xr, sigma)
        (want_grad,) = torch.autograd.grad(want.sum(), xr)
        assert torch.allclose(got, want.detach(), atol=1e-8), s
        assert torch.allclose(grad, want_grad, atol=1e-6 / s**2), s
    # the linear base, for contrast, is a different function at small σ
    linear = LearnedRatio(ZeroLogit(), 1.0, True, data_shape=(3,)).double()
    linear.fit_limit(x_ref, x_bias)
    x = x_bias[:64] + 0.05 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    sigma = torch.full((64,), 0.05, dtype=torch.float64)
    assert not torch.allclose(linear.log_ratio(x, sigma), model.log_ratio(x, sigma), atol=0.05)


def test_on_gaussian_data_the_tilt_is_the_gaussian_ratio_and_keeps_the_large_sigma_limit():
    """D_bias ~ N(0, I), D_ref ~ N(δ, I): tilting N(0, I) by exp(δᵀx) gives N(δ, I), so the noised
    ratio is δᵀ(x − δ/2)/(1 + σ²) at every σ; σ²∇log w tends to the tilted set's mean minus the
    set's mean, which is δ up to the samples' error."""
    g = torch.Generator().manual_seed(1)
    delta = torch.tensor([0.5, 0.0], dtype=torch.float64)
    x_bias = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x_ref = torch.randn(4000, 2, generator=g, dtype=torch.float64) + delta
    model = tilted(x_ref, x_bias)
    for s in (0.3, 1.0, 3.0):
        x = 1.2 * torch.randn(500, 2, generator=g, dtype=torch.float64)
        got = model.log_ratio(x, torch.full((500,), s, dtype=torch.float64))
        exact = (x - delta / 2) @ delta / (1 + s**2)
        assert (got - exact).abs().mean() < 0.03 * (1 + 1 / (1 + s**2)), s
    s = 300.0
    x = s * torch.randn(200, 2, generator=g, dtype=torch.float64)
    _, grad = log_r_and_grad(model, x, torch.full((200,), s, dtype=torch.float64), pi=0.0)
    weights = model.tilt_weights[:, :1]
    shift = (weights * model.tilt_points).sum(0) / weights.sum() - model.tilt_points.mean(0)
    assert torch.allclose(s**2 * grad, shift.expand_as(grad), atol=1e-3)
    assert (shift - delta).norm() < 0.1  # 2,048 base points: the estimate of δ, like the means'


@pytest.mark.parametrize("refit", [False, True])
def test_a_cached_tilted_model_is_the_model_that_was_trained(tmp_path, refit):
    """The base set is not cached but rebuilt from the data (the training split, or all of D_bias
    after a refit): the reloaded model gives the trained one's ratio and gradient to the bit."""
    from tiwbench import registry
    from tiwbench.config import resolve_config
    from tiwbench.ratio_cache import ratio_model_for

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_steps=60, ratio_refit=refit)
    assert cfg.ratio_limit_base == "tilt"
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    trained, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, torch.device("cpu"))
    cached, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, torch.device("cpu"))
    assert trained is not cached and cached.limit_base == "tilt"
    assert len(cached.tilt_points) == min(ratio_module.TILT_POINTS, len(data.x_bias) if refit else 16_000)
    x = data.x_bias[:256] + torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.logspace(-2.7, 1.9, 256)
    for a, b in zip(log_r_and_grad(trained, x, sigma, 0.5), log_r_and_grad(cached, x, sigma, 0.5)):
        assert torch.equal(a, b)


def test_the_base_option_names_new_runs_only():
    """Records from before the option read as the linear base; it names time-dependent runs only."""
    from tiwbench.config import RunConfig, resolve_config, unused_fields

    old = RunConfig.from_dict({"method": "tiw_dsm", "dataset": "gmm2d", "ref": 0.05})
    assert old.ratio_limit_base == "linear"
    assert (resolve_config("tiw_dsm", "gmm2d", 0.05).run_id
            != resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_limit_base="linear").run_id)
    assert (resolve_config("iw_dsm", "gmm2d", 0.05).run_id
            == resolve_config("iw_dsm", "gmm2d", 0.05, ratio_limit_base="linear").run_id)
    without_limit = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_limit=False)
    assert "limit_base" not in dict(without_limit.ratio_options)  # reset: no large-σ term to build a base on
    assert "ratio_options" not in unused_fields(without_limit, "time_dependent", "obs")


def test_the_tilt_weights_option_names_tilted_runs_only():
    """Records from before it read as the linear weights; it splits tilted time-dependent runs
    only; select without held-out data is refused before any work."""
    from tiwbench.config import RunConfig, resolve_config
    from tiwbench.errors import TiwbenchError

    old = RunConfig.from_dict({"method": "tiw_dsm", "dataset": "gmm2d", "ref": 0.05})
    assert old.ratio_tilt_weights == "linear"
    default = resolve_config("tiw_dsm", "gmm2d", 0.05)
    assert default.run_id != resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_tilt_weights="linear").run_id
    for method, options in (("iw_dsm", {}), ("tiw_dsm", {"ratio_limit_base": "linear"})):
        assert (resolve_config(method, "gmm2d", 0.05, **options).run_id
                == resolve_config(method, "gmm2d", 0.05, ratio_tilt_weights="classifier", **options).run_id)
    with pytest.raises(TiwbenchError, match="estimator 'exact' has no option 'tilt_weights'"):
        resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="exact", ratio_options=(("tilt_weights", "classifier"),))
    with pytest.raises(TiwbenchError, match="tilt_weights=select chooses on held-out data"):
        resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_holdout=0.0)
    assert resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_holdout=0.0, ratio_tilt_weights="linear")
    assert resolve_config("iw_dsm", "gmm2d", 0.05, ratio_holdout=0.0)  # no tilt, nothing to select


@pytest.mark.parametrize("base", ["tilt", "linear"])
def test_the_compiled_twin_shares_the_base_and_computes_the_same_ratio(monkeypatch, base):
    """`compiled()` (GPU runs) wraps the network only; the base's buffers are shared, not rebuilt."""
    monkeypatch.setattr(torch, "compile", lambda net, **options: net)  # the twin's arithmetic, without a compiler
    g = torch.Generator().manual_seed(0)
    x_bias, x_ref = torch.randn(300, 3, generator=g), torch.randn(40, 3, generator=g) + 0.5
    model = LearnedRatio(ZeroLogit(), 1.0, True, data_shape=(3,), limit_base=base)
    model.fit_limit(x_ref, x_bias)
    twin = model.compiled()
    x, sigma = torch.randn(64, 3, generator=g), torch.full((64,), 0.7)
    assert twin.limit_base == base and torch.equal(twin.log_ratio(x, sigma), model.log_ratio(x, sigma))
    assert twin.delta.data_ptr() == model.delta.data_ptr()


class LinearLogit(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.layer = torch.nn.Linear(dim, 1)

    def forward(self, x, c_noise):
        return self.layer(x)


def test_held_out_bce_with_the_fixed_base_is_the_bce_without_it(monkeypatch):
    """HeldOutBCE computes a tilted model's base once on its fixed points (fix_base): the BCE
    is the one computed from scratch to the bit, the base is not computed again, and another
    model is not given that base."""
    from tiwbench.ratio import HeldOutBCE

    g = torch.Generator().manual_seed(0)
    x_bias, x_ref = torch.randn(300, 3, generator=g), torch.randn(40, 3, generator=g) + 0.5
    net = LinearLogit(3)
    model = LearnedRatio(net, 1.0, True, data_shape=(3,), limit_base="tilt")
    model.fit_limit(x_ref, x_bias)
    other = LearnedRatio(net, 1.0, True, data_shape=(3,), limit_base="tilt")
    other.fit_limit(x_ref + 1.0, x_bias)
    held = HeldOutBCE(x_ref, x_bias, [0.002, 0.5, 80.0], torch.Generator().manual_seed(1), "cpu")
    fresh, fresh_other = held(model), held(other)
    held.fix_base(model)

    def not_again(x, sigma):
        raise AssertionError("the fixed base was computed again")

    monkeypatch.setattr(model, "tilt_term", not_again)
    assert held(model) == fresh and held(other) == fresh_other
    assert fresh != fresh_other


def test_with_the_exact_clean_weights_the_tilted_base_is_the_exact_noised_ratio():
    """E_bias[w_0(x0) | x_σ] = p_data,σ / p_bias,σ at every σ: with the exact clean ratio as its
    weights (what a perfect classifier would give) the tilted base alone is the exact log w_σ of
    gmm2d up to the base set's sampling error, where the linear term's weights are far off below
    σ ≈ 3; and held-out clean BCE (`choose_tilt_weights`) prefers the exact weights."""
    from tiwbench import registry
    from tiwbench.ratio import choose_tilt_weights, classifier_log_w, ratio_splits
    from tiwbench.streams import generator

    data = registry.get_dataset("gmm2d").build(0.05, 0)
    exact = data.exact_ratio(True)
    x_ref, val_ref, x_bias, val_bias = ratio_splits(data.x_ref, data.x_bias, 0.2, generator(0, "ratio_batches"))
    g = torch.Generator().manual_seed(0)
    errors = {}
    for name, clean in (("linear", None), ("exact", classifier_log_w(data.exact_ratio(False)))):
        model = LearnedRatio(ZeroLogit(), data.sigma_data, True, data_shape=(2,), limit_base="tilt")
        model.fit_limit(x_ref, x_bias, clean)
        for s in (0.1, 1.0, 10.0):
            x, sigma = data.x_eval[:2000] + s * torch.randn(2000, 2, generator=g), torch.full((2000,), s)
            errors[name, s] = float((model.log_ratio(x, sigma) - exact.log_ratio(x, sigma)).pow(2).mean().sqrt())
    for s in (0.1, 1.0, 10.0):
        assert errors["exact", s] < 0.03, errors
    assert errors["linear", 0.1] > 0.4 and errors["linear", 1.0] > 0.4, errors
    candidates = {"linear": None, "exact": classifier_log_w(data.exact_ratio(False)),
                  "inverted": lambda x: -data.exact_ratio(False).log_ratio(x, torch.full((len(x),), 0.002))}
    chosen, scores = choose_tilt_weights(model, candidates, x_bias, val_ref, val_bias)
    assert chosen == "exact" and scores["exact"] < scores["linear"] < math.log(2) < scores["inverted"], scores


def test_clean_bce_scores_the_normalised_weights():
    """The score is the class-balanced BCE of log w_0 minus its log-mean over the base set: a
    constant added to log w_0 changes nothing, w_0 ≡ 1 scores log 2, and a one-dimensional case
    matches the formula written out."""
    from tiwbench.ratio import clean_val_bce

    g = torch.Generator().manual_seed(0)
    base, bias = torch.randn(50, 1, generator=g), torch.randn(30, 1, generator=g)
    ref = torch.randn(20, 1, generator=g) + 1
    log_w = lambda x: 0.7 * x[:, 0]  # noqa: E731
    score = clean_val_bce(log_w, base, ref, bias)
    assert clean_val_bce(lambda x: log_w(x) + 5.0, base, ref, bias) == pytest.approx(score, abs=1e-6)
    assert clean_val_bce(lambda x: torch.zeros(len(x)), base, ref, bias) == pytest.approx(math.log(2))
    offset = math.log(float(torch.exp(0.7 * base[:, 0]).mean()))
    logit_ref, logit_bias = 0.7 * ref[:, 0] - offset, 0.7 * bias[:, 0] - offset
    want = (torch.nn.functional.softplus(-logit_ref).mean() + torch.nn.functional.softplus(logit_bias).mean()) / 2
    assert score == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("refit", [False, True])
def test_classifier_weights_are_trained_chosen_recorded_and_cached(tmp_path, refit):
    """`--ratio-tilt-weights classifier` trains (or reuses) iw_dsm's time-independent model and
    tilts the base set by its ratio; the cache keeps those weights (a reload does not need the
    classifier) and the fit records the held-out scores."""
    from tiwbench import registry
    from tiwbench.config import classifier_config, resolve_config
    from tiwbench.ratio import classifier_log_w
    from tiwbench.ratio_cache import ratio_model_for, tilt_base, train_config

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_steps=60, ratio_refit=refit,
                         ratio_tilt_weights="classifier")
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    cpu = torch.device("cpu")
    trained, fit = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, cpu)
    assert fit["tilt"]["weights"] == "classifier" and set(fit["tilt"]["clean_val_bce"]) == {"classifier"}
    (cache,) = (tmp_path / "_ratios").glob("*time_independent*.pt")  # the one iw_dsm uses:
    iw = resolve_config("iw_dsm", "gmm2d", 0.05, ratio_steps=60, ratio_refit=refit)
    assert classifier_config(cfg).ratio_options == iw.ratio_options
    classifier, _ = ratio_model_for(iw, "time_independent", recipe, data, tmp_path, cpu)
    assert list((tmp_path / "_ratios").glob("*time_independent*.pt")) == [cache]
    points = trained.base_points(tilt_base(train_config(cfg, cfg.ratio_values()), cfg.seed, data))
    assert torch.allclose(trained.tilt_log_w, classifier_log_w(classifier)(points))
    assert not torch.allclose(trained.tilt_log_w, trained.linear_log_w(points))
    cache.unlink()
    cached, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, cpu)
    assert not cache.exists()  # the weights came from the time-dependent model's cache
    x = data.x_bias[:256] + torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    sigma = torch.logspace(-2.7, 1.9, 256)
    for a, b in zip(log_r_and_grad(trained, x, sigma, 0.5), log_r_and_grad(cached, x, sigma, 0.5)):
        assert torch.equal(a, b)


def test_select_records_both_scores_and_keeps_the_lower(tmp_path):
    """The default, select: both candidates scored on held-out clean data, the lower kept."""
    from tiwbench import registry
    from tiwbench.config import resolve_config
    from tiwbench.ratio_cache import ratio_model_for

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_steps=60)
    assert cfg.ratio_tilt_weights == "select"
    recipe = registry.get_dataset("gmm2d")
    _, fit = ratio_model_for(cfg, "time_dependent", recipe, recipe.build(0.05, 0), tmp_path, torch.device("cpu"))
    scores = fit["tilt"]["clean_val_bce"]
    assert set(scores) == {"linear", "classifier"} and fit["tilt"]["weights"] == min(scores, key=scores.get)


def test_a_run_without_held_out_data_keeps_the_classifier_weights_and_writes_its_record(tmp_path):
    """`--ratio-holdout 0` with the classifier's weights: nothing to score them on, so the record
    says so with no scores (held-out scores of empty sets were NaN, and the run, finished, failed
    to write its record)."""
    import json

    from conftest import FAST
    from typer.testing import CliRunner

    from tiwbench.cli import app

    out = CliRunner().invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05",
                                   "--ratio-option", "holdout=0", "--ratio-option", "tilt_weights=classifier",
                                   "--results", str(tmp_path), *FAST])
    assert out.exit_code == 0, out.output
    (path,) = tmp_path.glob("*/metrics.json")
    record = json.loads(path.read_text())  # strict JSON: no NaN anywhere
    assert record["ratio_fit"]["tilt"] == {"weights": "classifier", "clean_val_bce": {}}
    assert record["ratio_fit"]["val_bce"] == [None] * 4
