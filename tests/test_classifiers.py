"""The evaluator's attribute classifiers: the built-in CNN and ResNet-18, their class-balanced
training, and a user's TorchScript classifier given as a dataset option."""

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tiwbench import classifier as clf_mod
from tiwbench.classifier import batched, make_classifier, train_classifier
from tiwbench.cli import app
from tiwbench.datasets.digits import DigitsLT
from tiwbench.datasets.real import CelebA, Cifar10LT, FFHQGender
from tiwbench.errors import TiwbenchError
from tiwbench.registry import get_dataset

runner = CliRunner()


@pytest.mark.parametrize("channels, res", [(1, 8), (3, 32)])
def test_resnet18_classifier_gives_logits_and_512_features(channels, res):
    net = make_classifier("resnet18", channels, 10).eval()
    x = torch.randn(3, channels, res, res)
    assert net(x).shape == (3, 10) and net.features(x).shape == (3, 512)
    with pytest.raises(TiwbenchError, match="unknown classifier architecture"):
        make_classifier("vgg", channels, 10)


def test_the_real_datasets_use_the_resnet():
    assert {c.classifier_arch for c in (Cifar10LT, CelebA, FFHQGender)} == {"resnet18"}
    assert DigitsLT.classifier_arch == "small"


def two_class_images(n_major: int, n_minor: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat 8×8 images whose brightness is N(∓0.25, 0.5²) by class: the classes overlap."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.zeros(n_major, dtype=torch.long), torch.ones(n_minor, dtype=torch.long)])
    level = (y.float() - 0.5) * 0.5 + 0.5 * torch.randn(len(y), generator=g)
    return level[:, None, None, None].expand(-1, 1, 8, 8).contiguous(), y


def test_a_class_balanced_loss_raises_the_minority_groups_recall(monkeypatch):
    """With 95/5 data, a plain loss learns to call nearly everything the majority; the balanced
    loss moves the boundary to the middle (recall of the minority about 0.69)."""
    x, y = two_class_images(1900, 100, seed=0)
    xt, yt = two_class_images(2000, 2000, seed=1)

    def minority_recall(balanced: bool) -> float:
        monkeypatch.setitem(clf_mod.ARCHS, "small", (clf_mod.AttributeClassifier,
                                                     {"lr": 2e-3, "balanced": balanced, "xflip": False}))
        model = train_classifier(x, y, 2, steps=300, seed=0)
        pred = batched(model, xt).argmax(1)
        return float((pred[yt == 1] == 1).float().mean())

    plain, balanced = minority_recall(False), minority_recall(True)
    assert plain < 0.3 < 0.55 < balanced


class ConstantClassifier(nn.Module):
    """Calls every image group 3; its exported features are five numbers per image."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 3] = 1.0
        return logits

    @torch.jit.export
    def features(self, x):
        return x.flatten(1)[:, :5]


def test_a_users_torchscript_classifier_replaces_the_built_in_one(tmp_path):
    path = tmp_path / "clf.pt"
    torch.jit.script(ConstantClassifier()).save(str(path))
    data = get_dataset("digits_lt", classifier=str(path)).build(0.1, seed=0, cache_dir=tmp_path / "cache")
    assert data.attribute(data.x_eval).eq(3).all()
    assert data.features(data.x_eval).shape == (len(data.x_eval), 5)
    assert data.feature_space.startswith("digits_lt_clf_user_")
    assert not (tmp_path / "cache").exists()  # nothing trained


def test_a_torchscript_classifier_of_the_wrong_shape_or_a_missing_file_is_refused(tmp_path):
    path = tmp_path / "two.pt"
    torch.jit.script(nn.Flatten()).save(str(path))  # (N, 64) for digits, not (N, 10)
    with pytest.raises(TiwbenchError, match=r"expected \(2, 10\): one logit per group"):
        DigitsLT(classifier=str(path)).classifier(None, None)
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(TiwbenchError, match="cannot load the TorchScript classifier"):
        DigitsLT(classifier=str(tmp_path / "junk.pt")).classifier(None, None)
    out = runner.invoke(app, ["run", "--method", "dsm_obs", "--dataset", "digits_lt", "--ref", "0.1",
                              "--dataset-option", f"classifier={tmp_path / 'none.pt'}", "--dry-run"])
    assert out.exit_code == 2 and "no such file" in out.output and "Traceback" not in out.output
