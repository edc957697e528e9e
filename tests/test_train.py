import os
import signal

import pytest
import torch

from tiwbench.diffusion import Denoiser
from tiwbench.errors import Interrupted, TiwbenchError
from tiwbench.methods.dsm_obs import DSMObs
from tiwbench.nets.mlp import ConditionalMLP
from tiwbench.train import TrainConfig, train_score

CFG = TrainConfig(steps=60, batch_size=64, checkpoint_every=25)


def fresh_denoiser():
    torch.manual_seed(0)
    return Denoiser(ConditionalMLP(2, hidden=32, depth=1), 2.0)


def train(x, ckpt, method=DSMObs(), on_step=lambda step: None):
    return train_score(method, fresh_denoiser(), x, 0.05, None, 1.0, CFG, seed=3, ckpt_path=ckpt,
                       on_step=on_step)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_resumes_to_the_same_weights(gmm2d_data, tmp_path, signum):
    x = gmm2d_data.x_bias
    reference = train(x, tmp_path / "a.pt").state_dict()

    def interrupt(step):
        if step == 37:
            os.kill(os.getpid(), signum)

    with pytest.raises(Interrupted, match="interrupted at step 3[78]/60"):
        train(x, tmp_path / "b.pt", on_step=interrupt)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] in (37, 38)
    resumed = train(x, tmp_path / "b.pt").state_dict()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k


def test_a_resumed_run_counts_its_earlier_training_time(gmm2d_data, tmp_path):
    """The checkpoint carries the seconds trained so far, so a resumed run's record can time its
    whole training; a checkpoint without them (written before the count) says only where it resumed."""
    import time

    from tiwbench.checkpoint import DIGEST, save_torch

    x, ckpt = gmm2d_data.x_bias, tmp_path / "t.pt"

    def slow_then_interrupt(step):
        time.sleep(0.01)
        if step == 37:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(x, ckpt, on_step=slow_then_interrupt)
    resumed = {}
    train_score(DSMObs(), fresh_denoiser(), x, 0.05, None, 1.0, CFG, seed=3, ckpt_path=ckpt, resumed=resumed)
    assert resumed["resumed_at_step"] in (37, 38) and resumed["earlier_train_s"] >= 0.37
    assert torch.load(ckpt, weights_only=True)["train_s"] > resumed["earlier_train_s"]

    fresh = {}
    train_score(DSMObs(), fresh_denoiser(), x, 0.05, None, 1.0, CFG, seed=3, ckpt_path=tmp_path / "u.pt",
                resumed=fresh)
    assert fresh == {}  # not resumed: nothing to say
    state = torch.load(ckpt, weights_only=True)
    state["step"] = 40
    del state["train_s"], state[DIGEST]
    save_torch(ckpt, state)  # as tiwbench writes it, digest included
    older = {}
    train_score(DSMObs(), fresh_denoiser(), x, 0.05, None, 1.0, CFG, seed=3, ckpt_path=ckpt, resumed=older)
    assert older == {"resumed_at_step": 40}


class NaNLoss(DSMObs):
    def loss(self, batch, denoiser, ratio_model=None, alpha=1.0):
        out = super().loss(batch, denoiser)
        return out * float("nan") if self.calls_left == 0 else self._count(out)

    calls_left = 30

    def _count(self, out):
        self.calls_left -= 1
        return out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(gmm2d_data, tmp_path):
    ckpt = tmp_path / "c.pt"
    with pytest.raises(TiwbenchError, match="non-finite loss at step 30"):
        train(gmm2d_data.x_bias, ckpt, method=NaNLoss())
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 25 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_interrupt_after_a_non_finite_loss_saves_nothing(gmm2d_data, tmp_path):
    """Losses are checked in batches; a stop request checks them before it saves, so the
    non-finite update of step 30 is not written by the save at the interrupt (step 35)."""
    ckpt = tmp_path / "c.pt"

    def interrupt(step):
        if step == 35:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TiwbenchError, match="non-finite loss at step 30"):
        train(gmm2d_data.x_bias, ckpt, method=NaNLoss(), on_step=interrupt)
    assert torch.load(ckpt, weights_only=True)["step"] == 25


def test_corrupt_or_foreign_checkpoint_is_reported_by_path(gmm2d_data, tmp_path):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"garbage")
    with pytest.raises(TiwbenchError, match="cannot read .*bad.pt"):
        train(gmm2d_data.x_bias, ckpt)
    torch.save({"config": {"steps": 1}}, ckpt)
    with pytest.raises(TiwbenchError, match="bad.pt was written for a different configuration"):
        train(gmm2d_data.x_bias, ckpt)


def test_xflip_augmentation_mirrors_images(tmp_path):
    """Mirroring changes training on asymmetric images and, drawn from its own stream, nothing
    on left-right symmetric ones (a wrong axis or a leaked draw would change them)."""
    from dataclasses import replace

    g = torch.Generator().manual_seed(0)
    half = torch.randn(64, 1, 4, 2, generator=g)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    asymmetric = torch.randn(64, 1, 4, 4, generator=g)

    def weights(x, xflip, name):
        torch.manual_seed(0)
        den = Denoiser(ConditionalMLP(16, hidden=16, depth=1), 1.0)

        class Flat(torch.nn.Module):  # the MLP on flattened 4×4 images
            def __init__(self):
                super().__init__()
                self.net, self.precond = den, den.precond

            def forward(self, x, sigma):
                return self.net(x.flatten(1), sigma).reshape(x.shape)

            def parameters(self, recurse=True):
                return self.net.parameters(recurse)

        cfg = replace(CFG, steps=20, xflip=xflip)
        train_score(DSMObs(), Flat(), x, 0.0, None, 1.0, cfg, seed=0, ckpt_path=tmp_path / f"{name}.pt")
        return torch.cat([p.flatten() for p in den.parameters()])

    assert torch.equal(weights(symmetric, False, "a"), weights(symmetric, True, "b"))
    assert not torch.equal(weights(asymmetric, False, "c"), weights(asymmetric, True, "d"))


def test_compiled_tiw_step_matches_the_eager_one(gmm2d_data):
    """--compile (the default on GPUs) compiles the score and the ratio networks; the TIW step
    (weight, input gradient, loss, update) must compute the same thing as without it."""
    from tiwbench.diffusion import sample_training_sigma, to_model_space
    from tiwbench.methods.tiw_dsm import TIWDSM
    from tiwbench.ratio import LearnedRatio
    from tiwbench.train import TrainStep

    torch.manual_seed(1)
    ratio = LearnedRatio(ConditionalMLP(2, out_dim=1, hidden=32, depth=1), 2.0, True).requires_grad_(False).eval()
    g = torch.Generator().manual_seed(0)
    x0 = to_model_space(gmm2d_data.x_bias[:128])
    sigma, noise = sample_training_sigma(128, g), torch.randn(128, 2, generator=g)
    losses, weights = [], []
    for compile in (False, True):
        step = TrainStep(TIWDSM(), fresh_denoiser(), ratio, 1.0, 0.05, TrainConfig(3, 128), compile=compile)
        assert (step.ratio.model is not ratio) == compile
        losses.append(torch.stack([step(x0, sigma, noise, 1e-3) for _ in range(3)]))
        weights.append(step.denoiser.state_dict())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-4, atol=1e-6)


def test_loss_curves_per_sigma_band_survive_an_interruption(gmm2d_data, tmp_path):
    x, cfg = gmm2d_data.x_bias, TrainConfig(steps=200, batch_size=64, checkpoint_every=50)

    def run(ckpt, on_step=lambda step: None):
        curves = []
        train_score(DSMObs(), fresh_denoiser(), x, 0.05, None, 1.0, cfg, seed=3, ckpt_path=ckpt,
                    on_step=on_step, curves=curves)
        return curves

    reference = run(tmp_path / "a.pt")
    assert sorted({c["step"] for c in reference}) == list(range(4, 201, 4))  # 50 points
    assert {c["band"] for c in reference} <= {0, 1, 2, 3} and {1, 2} <= {c["band"] for c in reference}
    assert all(c["loss"] > 0 for c in reference)

    def interrupt(step):
        if step == 101:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        run(tmp_path / "b.pt", on_step=interrupt)
    resumed = run(tmp_path / "b.pt")
    assert [(c["step"], c["band"]) for c in resumed] == [(c["step"], c["band"]) for c in reference]
    same = [c for c, d in zip(resumed, reference) if c["step"] != 104]  # the point cut by the stop
    assert same == [d for d in reference if d["step"] != 104]
