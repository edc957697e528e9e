"""Optional TensorBoard logging of a run's curves (the extra `[tb]`): the score network's loss
per σ band while it trains, and the discriminator's train and held-out BCE per σ band. Without
the `tensorboard` package nothing is written; the record holds the same curves either way."""

from __future__ import annotations

from pathlib import Path

from .bands import band_label


class CurveLog:
    """Event files under `<run folder>/tensorboard`, one scalar series per curve and σ band."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder / "tensorboard"))

    def score(self, points: list[dict]) -> None:
        for p in points:
            self.writer.add_scalar(f"score_loss/sigma {band_label(p['band'])}", p["loss"], p["step"])
        self.writer.flush()

    def ratio(self, fit: dict) -> None:
        """The discriminator's curves from its fit summary (ratio.RatioFit.summary); other
        estimators' summaries may have none."""
        for p in fit.get("curves", []) if isinstance(fit, dict) else []:
            for what in ("train_bce", "val_bce"):
                if p.get(what) is not None:
                    self.writer.add_scalar(f"ratio_{what}/sigma {fit['bands'][p['band']]}", p[what], p["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def curve_log(folder: Path) -> CurveLog | None:
    """A CurveLog when tensorboard is installed, else None."""
    try:
        return CurveLog(folder)
    except ImportError:
        return None
