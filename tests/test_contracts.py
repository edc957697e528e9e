"""Contracts over everything the registry finds — built-ins and installed plugins alike — and the
round trip of every run option through the command line."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.config import CLI_FIELDS, FIELDS, RATIO_FIELDS, RunConfig, cli_flags, field_type, neutral, validate
from tiwbench.datasets.images import ImageRecipe
from tiwbench.diffusion import Batch, Denoiser
from tiwbench.errors import TiwbenchError
from tiwbench.estimators.discriminator import Discriminator
from tiwbench.methods.base import Method
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.nets.mlp import ConditionalMLP
from tiwbench.ratio import DensityRatio, LearnedRatio, TrainingRatio

METHODS = registry.available("method")
DATASETS = registry.available("dataset")


class UnitRatio(DensityRatio):
    """w = 1 everywhere: r = 1 for any π, and ∇ log r = 0."""

    def log_ratio(self, x, sigma):
        return (0 * x).flatten(1).sum(1)


def toy_batch(dim=3, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    den = Denoiser(ConditionalMLP(dim, hidden=16, depth=1), 1.0)
    x0 = torch.randn(n, dim, generator=g)
    sigma = (torch.randn(n, generator=g) * 1.2 - 1.2).exp()
    return Batch(x0, sigma, torch.randn(n, dim, generator=g), den.precond), den


@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name):
    check_method_contract(name)


def check_method_contract(name):
    """Loss per sample, finite, back-propagating; guidance, if any, shaped like x. Also run by
    test_example_plugin.py over the installed example plugin's methods."""
    method = registry.get_method(name)
    assert isinstance(method, Method) and method.name == name and method.description
    assert method.train_on in ("bias", "ref", "obs")
    assert method.ratio in (None, "time_dependent", "time_independent")
    batch, den = toy_batch()
    ratio = None
    if method.ratio:
        torch.manual_seed(1)
        model = LearnedRatio(ConditionalMLP(3, out_dim=1, hidden=8, depth=1), 1.0,
                             method.ratio == "time_dependent")
        ratio = TrainingRatio(model.requires_grad_(False), 0.1)
    loss = method.loss(batch, den, ratio, 1.0)
    assert loss.shape == (len(batch.x0),) and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = [p.grad for p in den.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    shift = method.guidance(batch.x_sigma, batch.sigma, ratio, 1.0)
    assert shift is None or (shift.shape == batch.x0.shape and torch.isfinite(shift).all())


@pytest.mark.parametrize("name", [m for m in METHODS if registry.load("method", m).ratio])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_a_ratio_method_with_a_unit_ratio_is_plain_dsm(name, alpha):
    check_unit_ratio(name, alpha)


def check_unit_ratio(name, alpha):
    """With p_data = p_bias nothing is to be corrected: weights 1, correction 0."""
    batch, den = toy_batch(seed=2)
    expected = DSMObs().loss(batch, den)
    method = registry.get_method(name)
    got = method.loss(batch, den, TrainingRatio(UnitRatio(), 0.3), alpha)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-8)
    shift = method.guidance(batch.x_sigma, batch.sigma, TrainingRatio(UnitRatio(), 0.3), alpha)
    assert shift is None or shift.abs().max() == 0


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_class_contract(name):
    cls = registry.load("dataset", name)
    assert cls.name == name and cls.description and isinstance(cls.nets, tuple)  # nets may be empty
    assert set(cls.defaults) <= set(FIELDS), f"{name}: defaults name unknown run options"
    validate(dict(cls.defaults))  # every default is a valid value of its option
    cfg = RunConfig.from_dict({"method": "dsm_obs", "dataset": name, "ref": 0.1, **cls.defaults})
    assert cfg.dataset == name


# Datasets that read local files are checked on generated files in test_images.py; here their
# contract is the instructive error without them.
@pytest.mark.parametrize("name", DATASETS)
def test_dataset_data_contract(name, tmp_path):
    cls = registry.load("dataset", name)
    if issubclass(cls, ImageRecipe):  # the contract needs K groups, not an accurate classifier
        cls = type(cls.__name__, (cls,), {"classifier_steps": 5})
    recipe = cls()
    try:
        data = recipe.build(0.1, seed=0, data_root=None, cache_dir=tmp_path)
    except TiwbenchError as e:
        assert "--data-root" in str(e) and len(str(e).splitlines()) == 1
        return
    k = len(data.target_shares)
    assert math.isclose(float(data.target_shares.sum()), 1.0, abs_tol=1e-6) and k >= 2
    assert len(data.x_ref) == pytest.approx(0.1 * len(data.x_bias), rel=0.25, abs=k)
    assert data.x_bias.shape[1:] == data.x_ref.shape[1:] == data.x_eval.shape[1:]
    assert len(data.eval_labels) == len(data.x_eval) and data.sigma_data > 0
    groups = data.attribute(data.x_eval[:200])
    assert groups.shape == (min(200, len(data.x_eval)),) and int(groups.min()) >= 0 and int(groups.max()) < k
    assert data.features(data.x_eval[:50]).shape[0] == min(50, len(data.x_eval))
    assert data.is_image == (data.x_bias.ndim == 4)
    assert (data.exact_ratio is not None) == type(recipe).has_exact_ratio


def example_value(f):
    """A valid value of every CLI field that differs from its default."""
    special = {"ratio": "discriminator", "precision": "bf16", "net": "mlp", "dataset_options": (("dim", "8"),),
               "ratio_options": (("holdout", 0.3), ("limit_var", "sigma_data"), ("select", "global"),
                                 ("sigma", "edm"), ("tilt_weights", "classifier")),
               "ema_decay": 0.99, "ratio_batch_size": 64, "sample_steps": 12, "ratio_backbone": "score",
               "fid_ref": "eval"}  # gmm_hd has no training set for --fid-ref train
    if f.name in special:
        return special[f.name]
    kind = field_type(f)
    return {bool: not f.default, int: f.default + 3, float: f.default + 0.25, str: "x"}[kind]


@pytest.mark.parametrize("ratio", ["discriminator", "exact"])
def test_every_run_option_round_trips_through_the_command_line(ratio):
    """config -> command-line flags -> `run --dry-run` -> the same config, for every field (an
    exact-ratio run does not use the ratio-training fields: they stay at their defaults)."""
    values = {f.name: example_value(f) for f in CLI_FIELDS}
    if ratio == "exact":  # unused ratio-training fields are reset to their neutral values
        values |= {"ratio": "exact"} | {name: neutral(FIELDS[name]) for name in RATIO_FIELDS}
    else:  # stored as resolve_config stores them: the options that differ from their neutral values
        values["ratio_options"] = Discriminator.normalise("time_dependent", {
            **{o.name: o.default for o in Discriminator.options}, **dict(values["ratio_options"])})
    cfg = RunConfig(method="tiw_dsm", dataset="gmm_hd", ref=0.25, seed=3, alpha=0.5, **values)
    flags = cli_flags({f.name: getattr(cfg, f.name) for f in CLI_FIELDS}, {})
    # --fid-ref eval; --ratio discriminator (the default); or no ratio fields
    unused = 2 + (len(RATIO_FIELDS) if ratio == "exact" else 0)
    assert len(flags) >= len(CLI_FIELDS) - unused  # every field that differs from its default
    args = ["run", "--method", "tiw_dsm", "--dataset", "gmm_hd", "--ref", "0.25", "--seed", "3",
            "--alpha", "0.5", *" ".join(flags).split(), "--dry-run"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output)
    assert printed.pop("run_id") == cfg.run_id
    assert RunConfig.from_dict(printed) == cfg


def test_every_run_option_is_offered_by_run_and_sweep_with_its_help():
    runner = CliRunner()
    helps = [" ".join(runner.invoke(app, [cmd, "--help"]).output.split()) for cmd in ("run", "sweep")]
    for f in CLI_FIELDS:
        flag = "--" + f.name.replace("_", "-").removesuffix("s") if f.name.endswith("_options") else \
            "--" + f.name.replace("_", "-")
        first_words = " ".join(f.metadata["help"].split()[:3])
        for text in helps:
            assert flag in text and first_words in text, (f.name, first_words)


def test_sweep_plans_the_same_run_ids_as_run():
    runner = CliRunner()
    flags = ["--steps", "77", "--ratio-batch-size", "64", "--dataset-option", "dim=8"]
    out = runner.invoke(app, ["sweep", "--dataset", "gmm_hd", "--methods", "tiw_dsm", "--refs", "0.1",
                              "--seeds", "2", *flags, "--dry-run"])
    assert out.exit_code == 0, out.output
    one = runner.invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "gmm_hd", "--ref", "0.1", "--seed", "2",
                              *flags, "--dry-run"])
    assert out.output.strip() == json.loads(one.output)["run_id"]


@pytest.mark.parametrize("defaults, message", [({"steps": 0}, "--steps must be >= 1"),
                                               ({"stepz": 10}, "unknown run options: stepz")])
def test_a_recipe_with_bad_defaults_is_refused_when_defined(defaults, message):
    from tiwbench.datasets.gmm import GMM2D

    with pytest.raises(TiwbenchError, match=message):
        type("BadRecipe", (GMM2D,), {"name": "bad_recipe", "defaults": defaults})
