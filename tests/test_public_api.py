"""The names docs/plugins.md promises a plugin may import, and the aliases that warn."""

import importlib
import re
from pathlib import Path

import pytest
import torch

import tiwbench

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
PUBLIC = {
    "tiwbench": ["__version__", "PLUGIN_API_VERSION"],
    "tiwbench.methods.base": ["Method"],
    "tiwbench.diffusion": ["Batch", "append_dims"],
    "tiwbench.ratio": ["DensityRatio", "TrainingRatio", "ExactRatio", "log_r_and_grad"],
    "tiwbench.estimators": ["RatioEstimator", "RatioOption", "RatioRequest"],
    "tiwbench.datasets.base": ["DatasetRecipe", "BenchmarkData", "Splits"],
    "tiwbench.datasets.images": ["ImageRecipe"],
    "tiwbench.errors": ["TiwbenchError"],
    "tiwbench.registry": ["register", "unregister"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports_and_the_page_lists_it(module):
    mod = importlib.import_module(module)
    row = next(line for line in PAGE.splitlines() if line.startswith(f"| `{module}` |"))
    for name in PUBLIC[module]:
        assert hasattr(mod, name), f"{module}.{name}"
        assert f"`{name}`" in row, f"docs/plugins.md does not list {module}.{name}"


def test_the_version_and_the_plugin_api_version_are_stated():
    assert re.fullmatch(r"\d+\.\d+\.\d+", tiwbench.__version__)
    assert f"plugin API version {tiwbench.PLUGIN_API_VERSION}" in PAGE


def test_names_that_left_the_api_still_work_and_warn():
    from tiwbench.config import resolve_config
    from tiwbench.diffusion import Batch, Precond, dsm_loss
    from tiwbench.ratio import ExactRatio, TrainingRatio

    precond = Precond(1.0)
    x0, sigma = torch.randn(4, 2), torch.ones(4)
    batch = Batch(x0, sigma, torch.randn(4, 2), precond)
    with pytest.warns(DeprecationWarning, match="dsm_loss is deprecated"):
        assert torch.equal(dsm_loss(x0 * 0, x0, sigma, precond), batch.dsm_loss(x0 * 0, x0))
    ratio = TrainingRatio(ExactRatio(lambda x, s: -x.pow(2).sum(1), lambda x, s: -x.sum(1)), 0.5)
    with pytest.warns(DeprecationWarning, match="log_ratio is deprecated"):
        assert torch.equal(ratio.log_ratio(x0, sigma), ratio.log_r(x0, sigma))
    with pytest.warns(DeprecationWarning, match="ratio_<name>=...\\) is deprecated"):
        old = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_holdout=0.1)
    assert old == resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_options=(("holdout", 0.1),))
    with pytest.warns(DeprecationWarning, match="RunConfig.ratio_holdout is deprecated"):
        assert old.ratio_holdout == 0.1
    with pytest.warns(DeprecationWarning, match="ratio='oracle' is deprecated"):
        assert resolve_config("tiw_dsm", "gmm2d", 0.05, ratio="oracle").ratio == "exact"
