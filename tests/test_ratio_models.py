"""The discriminator's model selection, its built-in large-σ limit and the diagnostics that judge
it (docs/design.md §4), against the analytic mixture's exact ratio."""

import copy
import math

import pytest
import torch

from tiwbench.evaluate import corr_err, ratio_diagnostics, ratio_error
from tiwbench.nets.mlp import ConditionalMLP
from tiwbench.ratio import (
    BandedNet,
    LearnedRatio,
    PriorNet,
    RatioTrainConfig,
    from_layout,
    log_r_and_grad,
    net_layout,
    train_ratio,
    zero_output_layer,
)


def small_model(data, limit=True, floor=0.0):
    torch.manual_seed(0)
    return LearnedRatio(ConditionalMLP(2, out_dim=1, hidden=32, depth=1), data.sigma_data, True,
                        data_shape=(2,) if limit else None, sigma_floor=floor)


def test_limit_gives_the_large_sigma_correction_from_the_sample_means(gmm2d_data):
    """σ²∇log w → mean(D_ref) − mean(D_bias) as σ grows, whatever the network says."""
    data = gmm2d_data
    model = small_model(data)
    model.fit_limit(data.x_ref, data.x_bias)
    delta = data.x_ref.double().mean(0) - data.x_bias.double().mean(0)
    for sigma in (1e3, 1e4):
        x = sigma * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        _, grad = log_r_and_grad(model, x, torch.full((64,), sigma), pi=0.0)
        corr = sigma**2 * grad.double()
        assert torch.allclose(corr, delta.expand_as(corr), atol=5 * data.sigma_data / sigma + 1e-4)
    # and the exact correction has the same limit, up to the sample means' error
    exact = data.exact_ratio(True)
    x = 1e3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, grad = log_r_and_grad(exact, x, torch.full((64,), 1e3, dtype=torch.float64), pi=0.0)
    true_delta = (data.target_shares.double() - torch.tensor([0.7, 0.1, 0.1, 0.1]).double()) @ \
        torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]]).double()
    assert torch.allclose(1e6 * grad, true_delta.expand_as(grad), atol=0.01)
    assert (delta - true_delta).norm() < 0.25  # 1,000 reference points


class ZeroLogit(torch.nn.Module):
    def forward(self, x, c_noise):
        return x.new_zeros(len(x), 1)


def test_the_linear_term_is_the_exact_ratio_of_two_gaussians_whose_pixels_vary_together():
    """Two Gaussians N(m ± δ/2, Σ) whose spread is one shared direction u (like image pixels that
    vary together) and δ ∥ u: log w_σ = δᵀ(Σ + σ²I)⁻¹(x − m) = δᵀ(x − m)/(v + σ²) exactly, v the
    variance along u. The term with v from the data matches it at every σ; with σ_data² (the
    mean per-dimension variance) it claims about v/σ_data² = 45 times too much at small σ."""
    d, n, v = 50, 20_000, 4.01
    g = torch.Generator().manual_seed(0)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u /= u.norm()
    delta = 0.8 * u

    def draw(mean):
        return mean + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64) + \
            2.0 * torch.randn(n, 1, generator=g, dtype=torch.float64) * u

    x_ref, x_bias = draw(delta / 2), draw(-delta / 2)
    sigma_data = math.sqrt(0.01 + 4.0 / d)
    for limit_var in ("delta", "sigma_data"):
        model = LearnedRatio(ZeroLogit(), sigma_data, True, data_shape=(d,), limit_var=limit_var).double()
        model.fit_limit(x_ref, x_bias)
        for sigma in (0.01, 1.0, 10.0):
            x = x_bias[:500] + sigma * torch.randn(500, d, generator=g, dtype=torch.float64)
            exact = x @ delta / (v + sigma**2)
            got = model.log_ratio(x, torch.full((500,), sigma, dtype=torch.float64))
            slope = float((got @ exact) / (exact @ exact))  # got ≈ slope · exact
            expected = (v + sigma**2) / (sigma_data**2 + sigma**2) if limit_var == "sigma_data" else 1.0
            assert abs(slope / expected - 1) < 0.05, (limit_var, sigma, slope, expected)
    with torch.no_grad():
        assert model.limit_variance() == sigma_data**2


def test_held_out_selection_keeps_the_best_state_per_band_and_stops_early(gmm2d_data):
    data = gmm2d_data
    cfg = RatioTrainConfig(steps=600, lr=2e-3, eval_every=50, patience=200)
    fit = train_ratio(small_model(data), data.x_bias, data.x_ref, cfg, torch.Generator().manual_seed(0))
    steps = sorted({c["step"] for c in fit.curves})
    assert steps == list(range(0, steps[-1] + 1, 50))  # the untrained state is a candidate too
    assert all(c["train_bce"] is None for c in fit.curves if c["step"] == 0)
    assert len(fit.chosen) == 4 and all(s in steps for s in fit.chosen)
    last = steps[-1]
    assert last == 600 or last - max(fit.chosen) >= 200  # stopped only after `patience` without gain
    for k in range(4):  # the kept state is the band's best held-out BCE
        band = [c for c in fit.curves if c["band"] == k]
        assert math.isclose(fit.val_bce[k], min(c["val_bce"] for c in band), abs_tol=1e-4)
        assert fit.val_bce[k] == next(c["val_bce"] for c in band if c["step"] == fit.chosen[k])
    assert not any(p.requires_grad for p in fit.model.parameters())
    summary = fit.summary()
    assert summary["bands"][0].startswith("0.002") and len(summary["curves"]) == 4 * len(steps)


def test_without_signal_selection_keeps_the_untrained_prior():
    """D_ref and D_bias from one distribution: w ≡ 1. A few reference points are memorised at once;
    the untrained state, whose output layer is zero, is exactly log w = 0, and held-out data keep it."""
    g = torch.Generator().manual_seed(0)
    x_ref, x_bias = torch.randn(10, 2, generator=g), torch.randn(2000, 2, generator=g)
    def untrained():
        torch.manual_seed(0)
        return LearnedRatio(zero_output_layer(ConditionalMLP(2, out_dim=1, hidden=64, depth=2)), 1.0, False)

    x = torch.randn(100, 2)
    assert torch.equal(untrained().log_ratio(x, torch.zeros(100)), torch.zeros(100))
    for refit in (False, True):
        cfg = RatioTrainConfig(steps=300, lr=3e-3, patience=300, refit=refit)
        fit = train_ratio(untrained(), x_bias, x_ref, cfg, torch.Generator().manual_seed(0))
        assert fit.chosen == [0], fit.curves
        assert math.isclose(fit.val_bce[0], math.log(2), rel_tol=1e-5)
        assert any(c["val_bce"] > math.log(2) for c in fit.curves)  # the trained states were worse
        assert torch.equal(fit.model.log_ratio(x, torch.zeros(100)), torch.zeros(100))
        assert isinstance(fit.model.net, PriorNet)  # nothing left to evaluate
        assert torch.equal(log_r_and_grad(fit.model, x, torch.zeros(100), 0.5)[1], torch.zeros(100, 2))


def test_prior_bands_are_evaluated_for_free_and_give_exactly_what_the_untrained_network_gives(gmm2d_data):
    """A band that kept the untrained (zero-output) state is a PriorNet: the ratio and its gradient
    are those of the network it replaces, to the last bit, and the layout survives a cache."""
    from tiwbench.ratio import _restore

    data = gmm2d_data
    model = small_model(data)
    zero_output_layer(model.net)
    model.fit_limit(data.x_ref, data.x_bias)
    untrained = {k: v.clone() for k, v in model.net.state_dict().items()}
    trained = {k: v + 0.1 * torch.randn_like(v) for k, v in untrained.items()}
    x = torch.randn(400, 2)
    sigma = torch.exp(torch.linspace(math.log(0.002), math.log(80), 400))  # every band
    for chosen in ([0, 50, 0, 50], [0, 0, 0, 0]):
        states = [untrained if at == 0 else trained for at in chosen]
        full = _restore(copy.deepcopy(model), states, [False] * 4)
        lean = _restore(copy.deepcopy(model), states, [at == 0 for at in chosen])
        assert net_layout(lean.net) == (["prior", "net", "prior", "net"] if 50 in chosen else ["prior"])
        for a, b in zip(log_r_and_grad(full, x, sigma, 0.3), log_r_and_grad(lean, x, sigma, 0.3)):
            assert torch.equal(a, b)
        rebuilt = copy.deepcopy(model)
        rebuilt.net = from_layout(rebuilt.net, net_layout(lean.net))
        rebuilt.load_state_dict(lean.state_dict())
        assert torch.equal(rebuilt.log_ratio(x, sigma), lean.log_ratio(x, sigma))


def test_an_untrained_network_that_is_not_zero_is_never_replaced(gmm2d_data):
    """A network whose output layer zero_output_layer cannot find keeps its untrained state as a
    network where held-out data chose it: it is not the prior."""
    from tiwbench.ratio import HeldOutBCE, _outputs_zero

    class Summed(torch.nn.Module):  # no Linear with one output
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 3)

        def forward(self, x, c_noise):
            return self.lin(x).sum(1, keepdim=True)

    data = gmm2d_data
    held = HeldOutBCE(data.x_ref[:20], data.x_bias[:20], [0.002, 80.0], torch.Generator().manual_seed(0), "cpu")
    torch.manual_seed(0)
    net = zero_output_layer(Summed())
    assert not _outputs_zero(LearnedRatio(net, data.sigma_data, True, (2,)), held)
    zeroed = zero_output_layer(ConditionalMLP(2, out_dim=1, hidden=8, depth=1))
    assert _outputs_zero(LearnedRatio(zeroed, data.sigma_data, True, (2,)), held)


def test_zero_output_layer_finds_the_output_of_every_built_in_discriminator():
    from tiwbench.nets.discriminator import ConvDiscriminator, FrozenEncoder, HeadOnFeatures, ScoreEncoder

    nets = [ConditionalMLP(3, out_dim=1, hidden=16, depth=1), ConvDiscriminator(1, channels=8),
            HeadOnFeatures(FrozenEncoder(ScoreEncoder(ConditionalMLP(3, hidden=16, depth=1)), 16), hidden=8)]
    inputs = [torch.randn(4, 3), torch.randn(4, 1, 8, 8), torch.randn(4, 3)]
    for net, x in zip(nets, inputs):
        assert net(x, torch.randn(4)).abs().sum() > 0
        assert torch.equal(zero_output_layer(net)(x, torch.randn(4)), torch.zeros(4, 1)), type(net).__name__


def test_bands_that_chose_one_step_share_one_network(gmm2d_data):
    data = gmm2d_data
    cfg = RatioTrainConfig(steps=150, select="global")  # every band keeps the best mean state
    fit = train_ratio(small_model(data), data.x_bias, data.x_ref, cfg, torch.Generator().manual_seed(0))
    assert len(set(fit.chosen)) == 1 and not isinstance(fit.model.net, BandedNet)
    fit = train_ratio(small_model(data), data.x_bias, data.x_ref, RatioTrainConfig(steps=150),
                      torch.Generator().manual_seed(0))
    assert isinstance(fit.model.net, BandedNet) == (len(set(fit.chosen)) > 1), fit.chosen


def test_no_holdout_trains_every_step_and_keeps_the_last_state(gmm2d_data):
    data = gmm2d_data
    cfg = RatioTrainConfig(steps=120, holdout=0.0)
    fit = train_ratio(small_model(data), data.x_bias, data.x_ref, cfg, torch.Generator().manual_seed(0))
    assert fit.curves == [] and fit.chosen == [120] * 4 and fit.val_bce == [None] * 4


def test_refit_retrains_on_all_the_data_for_the_selected_lengths(gmm2d_data):
    data = gmm2d_data
    fits = {}
    for refit in (False, True):
        cfg = RatioTrainConfig(steps=300, patience=100, refit=refit)
        g = torch.Generator().manual_seed(0)
        fits[refit] = train_ratio(small_model(data), data.x_bias, data.x_ref, cfg, g)
    plain, refit = fits[False], fits[True]
    assert refit.chosen == plain.chosen and refit.val_bce == plain.val_bce  # selection is untouched
    full_delta = (data.x_ref.double().mean(0) - data.x_bias.double().mean(0)).float()
    assert torch.allclose(refit.model.delta, full_delta, atol=1e-6)  # the limit from all the data
    assert not torch.allclose(plain.model.delta, full_delta, atol=1e-3)  # selection's, from 80 %
    x, sigma = torch.randn(64, 2), torch.full((64,), 1.0)
    assert not torch.allclose(refit.model.log_ratio(x, sigma), plain.model.log_ratio(x, sigma))


def test_banded_net_routes_each_sample_to_its_band_with_input_gradients():
    class Affine(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x, c_noise):
            return self.scale * x.sum(1, keepdim=True)

    net = BandedNet([Affine(1.0), Affine(2.0), Affine(3.0)], [-1.0, 1.0])
    x = torch.ones(3, 2, requires_grad=True)
    out = net(x, torch.tensor([-2.0, 0.0, 2.0]))
    assert out.flatten().tolist() == [2.0, 4.0, 6.0]
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_ratio_gradient_is_fp32_inside_bf16_autocast(gmm2d_data):
    model = small_model(gmm2d_data).eval()
    x, sigma = torch.randn(32, 2), torch.full((32,), 80.0)
    ref = log_r_and_grad(model, x, sigma, 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = log_r_and_grad(model, x, sigma, 0.05)
    for a, b in zip(ref, inside):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_diagnostics_of_the_exact_ratio_are_zero_and_clean_ratios_are_judged_at_sigma_min(gmm2d_data):
    data = gmm2d_data
    scalars, rows = ratio_diagnostics(data.exact_ratio(True), data, 0.05, seed=0)
    assert scalars["corr_err"] < 1e-6 and scalars["ratio_err"] < 1e-6 and len(rows) == 13
    scalars, rows = ratio_diagnostics(data.exact_ratio(False), data, 0.05, seed=0)
    assert [r["sigma"] for r in rows] == [0.002] and "corr_err" not in scalars


def test_corr_err_weighs_the_noise_levels_the_score_network_trains_on():
    rows = [{"sigma": s, "corr_rmse": 0.0} for s in (0.01, 0.3, 1.0, 80.0)]
    assert corr_err(rows, 1.0) == 0.0
    at_80 = corr_err([dict(r, corr_rmse=1.0 if r["sigma"] == 80.0 else 0.0) for r in rows], 1.0)
    at_1 = corr_err([dict(r, corr_rmse=1.0 if r["sigma"] == 1.0 else 0.0) for r in rows], 1.0)
    assert at_80 < 0.01 < at_1 < 1.0  # σ = 80 is almost never trained on (EDM's log-normal σ)


def test_trained_model_beats_the_untrained_one_on_the_correction(gmm2d_data):
    data = gmm2d_data
    x0 = data.sample_bias(2000, torch.Generator().manual_seed(5))
    exact = data.exact_ratio(True)
    untrained = small_model(data, limit=False)
    before = corr_err(ratio_error(untrained, exact, x0, 0.05, 0), data.sigma_data)
    fit = train_ratio(small_model(data), data.x_bias, data.x_ref, RatioTrainConfig(steps=600, lr=2e-3),
                      torch.Generator().manual_seed(0))
    after = corr_err(ratio_error(fit.model, exact, x0, 0.05, 0), data.sigma_data)
    assert after < 0.8 * before, (before, after)


def test_only_the_time_dependent_ratio_gets_the_large_sigma_term(tmp_path):
    """The term is the limit σ → ∞; a clean-data classifier never sees a large σ (on digits_lt a
    linear term at σ_min, weighted 1/σ_data², made its held-out BCE 3.0 where chance is 0.69)."""
    from tiwbench import registry
    from tiwbench.config import resolve_config
    from tiwbench.ratio_cache import ratio_model_for

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_steps=20)
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    for kind, expected in (("time_dependent", True), ("time_independent", False)):
        model, fit = ratio_model_for(cfg, kind, recipe, data, tmp_path, torch.device("cpu"))
        assert model.has_limit is expected and fit["chosen_step"]


def test_the_discriminators_sigma_proposals():
    """log_uniform covers [floor, 80] evenly in log σ; edm is the score network's log-normal
    (median e^−1.2) clamped to that range; mixed interleaves the two; the clean-data ratio, trained
    at σ_min only, does not let the option split its runs."""
    from tiwbench.config import resolve_config
    from tiwbench.ratio import draw_ratio_sigma

    def draw(kind):
        return draw_ratio_sigma(20_000, kind, 0.01, torch.Generator().manual_seed(0))

    uniform, edm, mixed = draw("log_uniform"), draw("edm"), draw("mixed")
    for s in (uniform, edm, mixed):
        assert s.min() >= 0.01 and s.max() <= 80.0
    assert abs(float(uniform.log().median()) - (math.log(0.01) + math.log(80)) / 2) < 0.1
    assert abs(float(edm.log().median()) + 1.2) < 0.05 and abs(float(edm.log().std()) - 1.2) < 0.05
    assert abs(float(mixed[1::2].log().median()) + 1.2) < 0.1  # odd rows: edm
    assert abs(float(mixed[0::2].log().median()) - float(uniform.log().median())) < 0.15  # even: uniform
    with pytest.raises(ValueError, match="log_uniform"):
        draw("nope")
    assert (resolve_config("iw_dsm", "gmm2d", 0.05, ratio_sigma="edm").run_id
            == resolve_config("iw_dsm", "gmm2d", 0.05, ratio_sigma="log_uniform").run_id)
    assert (resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_sigma="edm").run_id
            != resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_sigma="log_uniform").run_id)


def test_a_ratio_cache_is_keyed_by_the_options_that_differ_from_their_legacy_values():
    """An option added later with the old behaviour as its legacy value (ratio_sigma) leaves the
    caches made before it their keys; one set to a new value keys a new cache."""
    from tiwbench.config import resolve_config
    from tiwbench.ratio_cache import cache_fields, train_config

    def ratio_cache_fields(cfg):
        return cache_fields(train_config(cfg, cfg.ratio_values()))

    default = ratio_cache_fields(resolve_config("tiw_dsm", "gmm2d", 0.05))
    assert "sigma" not in default and default["prior"] is True and default["holdout"] == 0.2
    edm = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_options=(("sigma", "edm"),))
    assert ratio_cache_fields(edm)["sigma"] == "edm"
    legacy = ratio_cache_fields(resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_options=(("prior", False),)))
    assert "prior" not in legacy and legacy["steps"] == default["steps"]  # no legacy: always a key


def test_an_interrupted_discriminator_fit_resumes_to_the_uninterrupted_one(gmm2d_data, tmp_path, monkeypatch):
    """SIGINT during training saves the loop's state; the same call again ends exactly where an
    uninterrupted fit ends (selection, curves, kept networks), checkpoints on the way included."""
    import os
    import signal

    import tiwbench.ratio as ratio_module
    from tiwbench.errors import Interrupted

    monkeypatch.setattr(ratio_module, "RATIO_CHECKPOINT_EVERY", 100)  # one periodic save before the stop
    data = gmm2d_data
    cfg = RatioTrainConfig(steps=400, eval_every=50, patience=150)

    def fit(checkpoint=None, stop_at=None):
        def on_step(step):
            if step == stop_at:
                os.kill(os.getpid(), signal.SIGINT)  # the handler only sets the flag the loop checks
        return train_ratio(small_model(data), data.x_bias, data.x_ref, cfg, torch.Generator().manual_seed(0),
                           on_step=on_step, checkpoint=checkpoint)

    plain = fit()
    partial = tmp_path / "fit.partial.pt"
    with pytest.raises(Interrupted, match=f"after step 130/400; checkpoint saved to {partial}"):
        fit(partial, stop_at=130)
    assert torch.load(partial, weights_only=True)["step"] == 130
    resumed = fit(partial)
    assert resumed.chosen == plain.chosen and resumed.val_bce == plain.val_bce and resumed.curves == plain.curves
    assert net_layout(resumed.model.net) == net_layout(plain.model.net)
    for a, b in zip(resumed.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.load(partial, weights_only=True)["done"]  # left for the caller, which deletes it
    again = fit(partial)  # a finished loop is not trained again (an interrupted refit's case)
    assert again.chosen == plain.chosen and again.curves == plain.curves


def test_held_out_bce_scores_any_ratio_model(gmm2d_data):
    """The bench scripts score the exact ratio on the discriminator's held-out split: HeldOutBCE
    takes any DensityRatio (one without a base term too) and gives the BCE of its log-ratio."""
    import torch.nn.functional as F

    from tiwbench.ratio import HeldOutBCE

    data = gmm2d_data
    exact = data.exact_ratio(True)
    held = HeldOutBCE(data.x_ref[:50], data.x_bias[:200], [0.002, 1.0], torch.Generator().manual_seed(0), "cpu")
    by_hand = []
    for s, x_ref, x_bias in zip(held.sigmas, held.ref, held.bias):
        def bce(x, label, s=s):
            logit = exact.log_ratio(x, torch.full((len(x),), s))
            return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, label)).item()
        by_hand.append((bce(x_ref, 1.0) + bce(x_bias, 0.0)) / 2)
    assert held(exact) == by_hand
