"""Plugins through real entry points: a distribution's metadata on sys.path is discovered."""

import textwrap

import pytest
from conftest import FAST
from typer.testing import CliRunner

from tiwbench import registry
from tiwbench.cli import app
from tiwbench.errors import TiwbenchError

PLUGIN = '''
from tiwbench.methods.dsm_obs import DSMObs


class HalfDSM(DSMObs):
    """DSM(obs) with the loss halved: same minimiser, so it trains like DSM(obs)."""

    name = "half_dsm"
    description = "test plugin: half the DSM(obs) loss"

    def loss(self, batch, denoiser, ratio_model=None, alpha=1.0):
        return 0.5 * super().loss(batch, denoiser, ratio_model, alpha)
'''


def make_distribution(root, dist, module, source, entry_points):
    """Write `module.py` and an installed-distribution record (dist-info) under `root`."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    make_distribution(tmp_path, "tiw_test_plugin", "tiw_test_plugin", PLUGIN,
                      "[tiwbench.methods]\nhalf_dsm = tiw_test_plugin:HalfDSM\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtins_are_registered_through_entry_points():
    builtins = {"dsm_obs", "dsm_ref", "iw_dsm", "tiw_dsm", "tiw_nocorr", "tiw_corr"}
    assert builtins <= set(registry.available("method"))
    assert {"gmm2d", "gmm_hd"} <= set(registry.available("dataset"))


def test_plugin_is_listed_and_runs(plugin_path, tmp_path):
    assert "half_dsm" in registry.available("method")
    runner = CliRunner()
    out = runner.invoke(app, ["list"])
    assert out.exit_code == 0 and "half_dsm" in out.output and "half the DSM(obs) loss" in out.output
    res = tmp_path / "res"
    out = runner.invoke(app, ["run", "--method", "half_dsm", "--dataset", "gmm2d", "--ref", "0.05",
                              "--results", str(res), *FAST])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["table", "--results", str(res), "--format", "csv"])
    assert out.exit_code == 0 and "half_dsm" in out.output


def test_two_plugins_claiming_one_name_is_an_error(plugin_path):
    make_distribution(plugin_path, "other_plugin", "other_plugin", PLUGIN,
                      "[tiwbench.methods]\nhalf_dsm = other_plugin:HalfDSM\n")
    with pytest.raises(TiwbenchError) as e:
        registry.available("method")
    assert "tiw_test_plugin" in str(e.value) and "other_plugin" in str(e.value)


def test_broken_plugin_does_not_break_list(tmp_path, monkeypatch):
    make_distribution(tmp_path, "broken_plugin", "broken_plugin", "import does_not_exist\n",
                      "[tiwbench.methods]\nbroken = broken_plugin:Broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = CliRunner().invoke(app, ["list"])
    assert out.exit_code == 0 and "broken" in out.output and "does_not_exist" in out.output
    assert "dsm_obs" in out.output
    with pytest.raises(TiwbenchError, match="'broken'.*failed to load"):
        registry.load("method", "broken")


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(TiwbenchError, match="unknown method 'nope'; available: dsm_mix, dsm_obs, dsm_ref"):
        registry.load("method", "nope")


def test_a_plugin_must_subclass_the_base(tmp_path, monkeypatch):
    make_distribution(tmp_path, "bad_plugin", "bad_plugin", "class Bad:\n    name = 'bad'\n",
                      "[tiwbench.datasets]\nbad = bad_plugin:Bad\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TiwbenchError, match="not a subclass of tiwbench.datasets.base.DatasetRecipe"):
        registry.load("dataset", "bad")


def test_dataset_options_reach_the_recipe_typed_as_its_defaults():
    """A plugin author writes `n: int = 5` and receives an int from `--dataset-option n=7`."""
    from conftest import registered

    from tiwbench.datasets.gmm import GMM2D

    seen = {}

    class Typed(GMM2D):
        name, description = "typed_options", "GMM2D with typed options"

        def __init__(self, n: int = 5, scale: float = 1.0, flag: bool = False, label: str = "a", free=None):
            super().__init__()
            seen.update(n=n, scale=scale, flag=flag, label=label, free=free)

    with registered("dataset", Typed):
        registry.get_dataset("typed_options", n="7", scale="2", flag="yes", label="b", free="x")
        assert seen == {"n": 7, "scale": 2.0, "flag": True, "label": "b", "free": "x"}
        assert type(seen["scale"]) is float
        registry.get_dataset("typed_options", n=8)  # values from Python pass as given
        assert seen["n"] == 8
        for key, text, kind in (("n", "7.5", "an int"), ("scale", "big", "a float"), ("flag", "maybe", "a bool")):
            with pytest.raises(TiwbenchError, match=f"--dataset-option {key} must be {kind}, got '{text}'"):
                registry.get_dataset("typed_options", **{key: text})
        out = CliRunner().invoke(app, ["run", "--method", "dsm_obs", "--dataset", "typed_options", "--ref", "0.1",
                                       "--dataset-option", "n=x", "--dry-run"])
        assert out.exit_code == 2 and "--dataset-option n must be an int, got 'x'" in out.output
