"""TensorBoard logging (the `[tb]` extra): the record's curves, also as event files in the run folder."""

import builtins

from conftest import FAST
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from tiwbench import tblog
from tiwbench.bands import band_label
from tiwbench.cli import app
from tiwbench.record import Record

runner = CliRunner()


def test_a_ratio_run_writes_its_score_and_discriminator_curves(tmp_path):
    out = runner.invoke(app, ["run", "--method", "tiw_dsm", "--dataset", "gmm2d", "--ref", "0.05",
                              "--results", str(tmp_path), *FAST])
    assert out.exit_code == 0, out.output
    (path,) = tmp_path.glob("*/metrics.json")
    record = Record.read(path)
    events = EventAccumulator(str(path.parent / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"score_loss/sigma {band_label(k)}" for k in range(4)} <= tags
    assert {f"ratio_val_bce/sigma {b}" for b in record.ratio_fit["bands"]} <= tags
    logged = [e.value for e in events.Scalars(f"score_loss/sigma {band_label(2)}")]
    recorded = [p["loss"] for p in record.score_curves if p["band"] == 2]
    assert len(logged) == len(recorded) > 1
    assert max(abs(a - b) for a, b in zip(logged, recorded)) < 1e-5 * max(map(abs, recorded))


def test_without_tensorboard_nothing_is_logged(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert tblog.curve_log(tmp_path) is None and not (tmp_path / "tensorboard").exists()
