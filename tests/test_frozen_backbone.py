"""`--ratio-backbone`: a small trained head on a frozen encoder — dsm_obs's score network (cached,
shared with dsm_obs runs) or a user's TorchScript file."""

from __future__ import annotations

import pytest
import torch

from tiwbench import registry
from tiwbench.config import resolve_config
from tiwbench.errors import TiwbenchError
from tiwbench.evaluate import corr_err, ratio_error
from tiwbench.nets.discriminator import FrozenEncoder, HeadOnFeatures, ScoreEncoder
from tiwbench.nets.mlp import ConditionalMLP
from tiwbench.nets.unet import UNet, unet_config
from tiwbench.ratio import LearnedRatio, RatioTrainConfig, log_r_and_grad, net_layout, train_ratio
from tiwbench.ratio_cache import ratio_model_for
from tiwbench.score_nets import encoder_config, score_net_path

CPU = torch.device("cpu")


def test_score_networks_encode_what_their_forward_builds_on():
    torch.manual_seed(0)
    mlp = ConditionalMLP(3, hidden=16, depth=2)
    x, c = torch.randn(5, 3), torch.randn(5)
    assert torch.equal(mlp(x, c), mlp.out(mlp.encode(x, c))) and mlp.encode(x, c).shape == (5, mlp.features)
    unet = UNet(unet_config("tiny", 1, 8))
    x8, c4 = torch.randn(4, 1, 8, 8), torch.randn(4)
    feats = unet.encode(x8, c4)
    assert feats.shape == (4, unet.features) and feats.abs().sum() > 0
    seen = []  # the deepest encoder output that forward hands to the decoder
    unet.enc[-1].register_forward_hook(lambda module, args, out: seen.append(out))
    unet(x8, c4)
    deepest = seen[0].mean(dim=(2, 3))
    assert torch.allclose(feats[:, -deepest.shape[1]:], deepest, atol=1e-6)


def test_the_encoder_stays_frozen_while_the_head_learns_and_gradients_reach_the_input(gmm2d_data):
    data = gmm2d_data
    torch.manual_seed(0)
    encoder = FrozenEncoder(ScoreEncoder(ConditionalMLP(2, hidden=32, depth=1)), 32)
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = LearnedRatio(HeadOnFeatures(encoder, hidden=32), data.sigma_data, True, data.x_bias.shape[1:])
    head = model.net.inp.weight.clone()
    x0 = data.sample_bias(2000, torch.Generator().manual_seed(5))
    before = corr_err(ratio_error(model, data.exact_ratio(True), x0, 0.05, 0), data.sigma_data)
    model.train()
    assert not encoder.encoder.training  # no dropout or batch statistics of the frozen part
    fit = train_ratio(model, data.x_bias, data.x_ref, RatioTrainConfig(steps=300, holdout=0.0),
                      torch.Generator().manual_seed(0))
    after = corr_err(ratio_error(fit.model, data.exact_ratio(True), x0, 0.05, 0), data.sigma_data)
    assert all(torch.equal(frozen[k], v) for k, v in encoder.state_dict().items())
    assert not torch.equal(head, fit.model.net.inp.weight)
    assert after < before, (before, after)  # random frozen features still carry the ratio
    grad = log_r_and_grad(fit.model, x0[:8], torch.full((8,), 2.0), 0.05)[1]
    assert grad.abs().sum() > 0


def test_score_backbone_trains_its_encoder_once_on_the_discriminators_training_split_of_d_bias(
        tmp_path, monkeypatch):
    """The encoder never sees D_ref (a score network memorises its few points, and its features
    then tell membership: held-out BCE ≈ 0 at small σ, bench/NOTES.md) nor the held-out data; a
    second ratio model of the same data and seed reuses it."""
    from tiwbench import score_nets
    from tiwbench.ratio import ratio_splits
    from tiwbench.streams import generator

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone="score", steps=20, ratio_steps=20)
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    seen = []
    fit = score_nets.fit_score
    monkeypatch.setattr(score_nets, "fit_score", lambda *a, **k: seen.append(a[4][0]) or fit(*a, **k))
    model, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, CPU)
    x_ref, val_ref, x_bias, val_bias = ratio_splits(data.x_ref, data.x_bias, cfg.ratio_values()["holdout"],
                                                    generator(0, "ratio_batches"))
    assert len(seen) == 1 and torch.equal(seen[0], x_bias) and len(val_bias) > 0
    path = score_net_path(cfg, tmp_path, 0.2)
    assert path.exists() and not path.with_suffix(".ckpt").exists()
    saved = torch.load(next((tmp_path / "_ratios").glob("*.pt")), weights_only=True)
    assert saved["config"]["backbone"] == path.stem
    # the clean-data ratio of the same data and seed stands on the same encoder
    ratio_model_for(cfg, "time_independent", recipe, data, tmp_path, CPU)
    path.unlink()  # the cached ratio model holds the encoder's weights: nothing is retrained
    again, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path, CPU)  # from the cache
    assert len(seen) == 1 and not path.exists()
    assert "net" in net_layout(again.net)  # the encoder's weights matter below
    x, s = data.x_bias[:16], torch.full((16,), 1.0)
    assert torch.equal(model.log_ratio(x, s), again.log_ratio(x, s))
    # the encoder is keyed by the score-training options
    other = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone="score", steps=21, ratio_steps=20)
    assert score_net_path(other, tmp_path, 0.2) != path
    assert encoder_config(cfg).method == "dsm_obs" and encoder_config(cfg).ref_share == 0.0


class TinyEncoder(torch.nn.Module):
    def __init__(self, features: int = 6, flat: bool = True):
        super().__init__()
        self.lin, self.flat = torch.nn.Linear(2, features), flat

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(x)) + c_noise[:, None]
        return h if self.flat else h[:, :, None]


def test_a_torchscript_encoder_is_checked_and_keyed_by_its_content(tmp_path):
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    good = tmp_path / "enc.pt"
    torch.jit.script(TinyEncoder()).save(str(good))
    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone=str(good), ratio_steps=30)
    model, _ = ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path / "r", CPU)
    head = next(m for m in model.modules() if isinstance(m, HeadOnFeatures))  # a band may be a PriorNet
    assert head.encoder.features == 6
    key = torch.load(next((tmp_path / "r" / "_ratios").glob("*.pt")), weights_only=True)["config"]["backbone"]
    torch.jit.script(TinyEncoder(features=7)).save(str(good))  # same path, other content
    ratio_model_for(cfg, "time_dependent", recipe, data, tmp_path / "r", CPU)
    keys = {torch.load(p, weights_only=True)["config"]["backbone"]
            for p in (tmp_path / "r" / "_ratios").glob("*.pt")}
    assert len(keys) == 2 and key in keys and key.startswith("file-")

    wrong = tmp_path / "wrong.pt"
    torch.jit.script(TinyEncoder(flat=False)).save(str(wrong))
    not_script = tmp_path / "plain.pt"
    torch.save({"a": 1}, not_script)
    for path, message in ((wrong, "must return features of shape (B, F)"), (not_script, "not a TorchScript file")):
        bad = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone=str(path), ratio_steps=5)
        with pytest.raises(TiwbenchError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
            ratio_model_for(bad, "time_dependent", recipe, data, tmp_path / "r", CPU)
        assert len(str(e.value).splitlines()) == 1


def test_an_unknown_backbone_is_refused_before_any_work():
    with pytest.raises(TiwbenchError, match="ratio-backbone"):
        resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone="no/such/file.pt")


def test_under_torchrun_every_process_follows_process_0s_decision_to_train_the_encoder(tmp_path, monkeypatch):
    """Another sweep finishes the encoder while process 0 waits for its lock: process 0 then loads
    it, so the other processes must not start a (collective) training of their own."""
    from tiwbench import dist, score_nets

    cfg = resolve_config("tiw_dsm", "gmm2d", 0.05, ratio_backbone="score", steps=20, ratio_steps=20)
    recipe = registry.get_dataset("gmm2d")
    data = recipe.build(0.05, 0)
    path = score_net_path(cfg, tmp_path, 0.2)
    trained = score_nets.score_net_for(cfg, recipe, data, tmp_path / "elsewhere", CPU, 0.2)
    path.parent.mkdir(parents=True)
    decisions = []

    def process_0(flag):  # what the all-reduce returns on process 1: process 0's view
        decisions.append(flag)
        if len(decisions) == 2:  # process 0 got the lock after the other sweep saved the network
            (tmp_path / "elsewhere" / "_score_nets" / path.name).rename(path)
            return False
        return True

    monkeypatch.setattr(dist, "is_main", lambda: False)
    monkeypatch.setattr(dist, "any_rank", process_0)
    monkeypatch.setattr(score_nets, "fit_score", lambda *a, **k: pytest.fail("process 1 trained alone"))
    net = score_nets.score_net_for(cfg, recipe, data, tmp_path, CPU, 0.2)
    assert decisions == [True, False]  # process 1 saw no file, and is not process 0
    x, c = torch.randn(4, 2), torch.randn(4)
    assert torch.equal(net.encode(x, c), trained.encode(x, c))
