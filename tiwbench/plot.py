"""Figures from run records (matplotlib, PNG): metric vs reference size, the bias–quality
trade-off over α (the paper's Figure 7), ratio error vs σ (Figure 2), sample grids side by side."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from .bands import N_BANDS, band_label
from .errors import TiwbenchError
from .record import Record
from .results import method_label, natural_key, ratio_error_table, row_labels, row_names
from .stats import bias_floors

COLORS = {"dsm_obs": "tab:gray", "dsm_mix": "tab:brown", "dsm_ref": "tab:green", "iw_dsm": "tab:orange",
          "tiw_dsm": "tab:blue", "tiw_nocorr": "tab:purple", "tiw_corr": "tab:red"}


def by_row(long: pd.DataFrame) -> pd.DataFrame:
    """A long table whose `method` column names each row (method, estimator and settings)."""
    return long.assign(method=row_names(long))


def method_color(label: str) -> str | None:
    """One colour per method, whatever marks its row label carries (+exact, (setting))."""
    return COLORS.get(re.split(r"[+ ]", label)[0])


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise TiwbenchError("figures need matplotlib: pip install 'tiwbench[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label_lines(ax, lines) -> None:
    """Name each line at its right end, so no legend has to be hunted for."""
    for x, y, text, color in lines:
        ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8, color=color)


RATIO_STYLES = {"+exact": "--", "+labels": ":", "+paper": "-."}  # a bound's line, beside the learned one


def line_style(label: str) -> str:
    """Solid for a method with its learned (or no) ratio; dashed, dotted, dash-dotted for the same
    method with the exact, the label-informed ratio, or the paper's discriminator protocol."""
    return next((style for mark, style in RATIO_STYLES.items() if mark in label), "-")


def metric_vs_ref(long: pd.DataFrame, dataset: str, metric: str, out: Path,
                  floors: list[dict] | None = None) -> Path | None:
    """Each row's metric over reference sizes (rows run at one size only are left to the tables);
    for bias_l2, the floors (stats.bias_floors) as a grey band: up to the sampling floor, lighter
    up to the reference-composition floor. A log scale where the values span a decade."""
    d = by_row(long[(long.dataset == dataset) & (long.metric == metric) & (long.alpha == 1)])
    d = d[d.groupby("method").ref.transform("nunique") >= 2]
    if d.ref.nunique() < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    mine = [f for f in floors or [] if f["dataset"] == dataset] if metric == "bias_l2" else []
    sampling = sorted({f["ref"]: f["sampling"] for f in mine}.items())
    composition = sorted((f["ref"], f["sampling"], f["composition"]) for f in mine if f["composition"] is not None)
    if len(sampling) >= 2:
        ax.fill_between(*zip(*sampling), color="0.5", alpha=0.35, lw=0, label="sampling floor")
    if len(composition) >= 2:  # none where D_ref holds exactly the target shares
        refs, low, high = zip(*composition)
        ax.fill_between(refs, low, high, color="0.5", alpha=0.15, lw=0, label="i.i.d. D_ref composition floor")
    rows = sorted(d.groupby("method"), key=lambda t: natural_key(t[0]))
    for i, (method, g) in enumerate(rows):
        g = g.sort_values("ref")
        shift = math.exp(0.025 * (i - (len(rows) - 1) / 2))  # side by side, so error bars do not hide
        ax.errorbar(g.ref * shift, g["mean"], yerr=g["std"], marker="o", ms=4, capsize=2, lw=1.4,
                    color=method_color(method), ls=line_style(method), label=method)
    if (d["mean"] > 0).all() and d["mean"].max() >= 10 * d["mean"].min():
        ax.set_yscale("log")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(d.ref.unique()), [f"{r:g}" for r in sorted(d.ref.unique())])
    ax.set_xlabel("reference size |D_ref| / |D_bias|")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(f"{dataset}: {metric} by reference size")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return _save(fig, out / f"{metric}_vs_ref.png")


def alpha_tradeoff(long: pd.DataFrame, dataset: str, out: Path) -> Path | None:
    d = by_row(long[long.dataset == dataset])
    metrics = set(d.metric.unique())
    quality = "fid" if "fid" in metrics else next((m for m in sorted(metrics) if m.startswith("fd_")), None)
    if quality is None:
        return None
    wide = d.pivot_table(index=["method", "ref", "alpha"], columns="metric", values="mean").reset_index()
    wide = wide[wide.groupby(["method", "ref"]).alpha.transform("nunique") > 1]
    if wide.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, ref), g in wide.groupby(["method", "ref"]):
        g = g.sort_values("alpha")
        line, = ax.plot(g[quality], g["bias_l2"], marker="o", color=method_color(method),
                        label=f"{method} (ref {ref:g})")
        for _, row in g.iterrows():
            ax.annotate(f"α={row.alpha:g}", (row[quality], row["bias_l2"]), xytext=(3, 3),
                        textcoords="offset points", fontsize=7, color=line.get_color())
    ax.set_xlabel(f"{quality} (lower is better)")
    ax.set_ylabel("bias_l2 (lower is better)")
    ax.set_title(f"{dataset}: bias–quality trade-off over α")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out / "alpha_tradeoff.png")


def ratio_error_vs_sigma(records: list[Record], dataset: str, out: Path) -> Path | None:
    """Two panels over σ: the RMSE of log r, and the RMSE of TIW-DSM's correction σ²∇log r with
    the exact correction's size (grey) for scale."""
    try:
        df = ratio_error_table(records, dataset)
    except TiwbenchError:  # no trained ratio on a dataset with an exact one
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"time_dependent": "-", "time_independent": "--"}
    groups = sorted(df.groupby(["ratio", "ref"]), key=lambda t: (natural_key(t[0][0]), t[0][1]))
    for ax, value in zip(axes, ("log_r_rmse", "corr_rmse")):
        ends = []
        for (kind, ref), g in groups:
            if value == "corr_rmse" and not kind.startswith("time_dependent"):
                continue
            style = styles.get(kind.split(" ")[0], ":")  # the kind, without its setting marks
            line, = ax.plot(g.sigma, g[value], style, marker=".", label=f"{kind}, ref {ref:g}")
            ends.append((g.sigma.iloc[-1], g[value].iloc[-1], f"{kind.split('_', 1)[1]} {ref:g}",
                         line.get_color()))
        if value == "corr_rmse":
            exact = df[df.ratio.str.startswith("time_dependent")].groupby("sigma").corr_norm.mean().dropna()
            if len(exact):
                ax.plot(exact.index, exact.to_numpy(), color="0.6", lw=3, alpha=0.5, label="|reference σ²∇log r|")
        _label_lines(ax, ends)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("σ")
        ax.legend(fontsize=7, frameon=False)
    against = "label-informed" if (df.against == "labels").all() else "exact"
    axes[0].set_ylabel(f"RMSE of log r vs {against}")
    axes[1].set_ylabel(f"RMSE of σ²∇log r vs {against} (data units)")
    fig.suptitle(f"{dataset}: density-ratio error by noise level")
    return _save(fig, out / "ratio_error_vs_sigma.png")


def training_curves(records: list[Record], dataset: str, out: Path) -> Path | None:
    """One seed per method at the smallest reference size: the score network's loss per σ band
    over training (top row), and the discriminators' training and held-out BCE per band (bottom
    row: the time-dependent ratio; the clean-data ratio in the first panel)."""
    runs = [r for r in records if r.config.dataset == dataset and r.config.alpha == 1 and r.score_curves]
    if not runs:
        return None
    ref, seed = min(r.config.ref for r in runs), min(r.config.seed for r in runs)
    runs = sorted((r for r in runs if r.config.ref == ref and r.config.seed == seed), key=method_label)
    fits = {r.ratio_kind: r.ratio_fit for r in runs if r.ratio_fit and r.ratio_fit.get("curves")}
    plt = _plt()
    rows = 2 if fits else 1
    fig, axes = plt.subplots(rows, N_BANDS, figsize=(3.2 * N_BANDS, 2.9 * rows), squeeze=False)
    for r in runs:
        label = method_label(r)
        for k in range(N_BANDS):
            points = [(c["step"], c["loss"]) for c in r.score_curves if c["band"] == k]
            if points:
                axes[0][k].plot(*zip(*points), color=method_color(label), lw=1, label=label)
    for k in range(N_BANDS):
        axes[0][k].set_title(f"score loss, σ in {band_label(k)}", fontsize=9)
        axes[0][k].set_yscale("log")
    axes[0][0].legend(fontsize=6, frameon=False)
    for kind, fit in fits.items():
        for c_key, style in (("train_bce", "--"), ("val_bce", "-")):
            for k in range(N_BANDS if kind == "time_dependent" else 1):
                points = [(c["step"], c[c_key]) for c in fit["curves"]
                          if c["band"] == k and c[c_key] is not None]  # no training loss at step 0
                color = "C0" if kind == "time_dependent" else "C3"
                axes[1][k].plot(*zip(*points), style, color=color, lw=1,
                                label=f"{kind.replace('_', '-')} {'held-out' if c_key == 'val_bce' else 'train'}")
    for k in range(N_BANDS if fits else 0):
        axes[1][k].set_title(f"discriminator BCE, σ in {band_label(k)}", fontsize=9)
        axes[1][k].set_xlabel("step")
        axes[1][k].axhline(math.log(2), color="0.6", lw=0.8)
    if fits:
        axes[1][0].legend(fontsize=6, frameon=False)
    fig.suptitle(f"{dataset}: training curves at ref {ref:g}, seed {seed}")
    fig.tight_layout()
    return _save(fig, out / "training_curves.png")


SAMPLES_NAME = "samples.png"  # a run's grid of samples, in its folder
SAMPLE_COLUMNS = 5  # panels a row of the report's samples figure


def sample_grid_runs(records: list[Record], dataset: str, seed: int = 0) -> list[tuple[str, Record]]:
    """The runs `sample_grids` shows, with their table rows: seed `seed`, α = 1, the smallest
    reference size (the report keeps these runs' samples.png with their records)."""
    of_set = [r for r in records if r.config.dataset == dataset]
    runs = [(text, r) for r, text in zip(of_set, row_labels(of_set))
            if r.config.seed == seed and r.config.alpha == 1]
    if not runs:
        return []
    ref = min(r.config.ref for _, r in runs)
    return sorted(((text, r) for text, r in runs if r.config.ref == ref), key=lambda p: natural_key(p[0]))


def sample_grids(records: list[Record], dataset: str, out: Path, seed: int = 0) -> Path | None:
    """Each run's samples.png at the smallest reference size, at most SAMPLE_COLUMNS a row, titled
    by its table row (runs of one method made differently are told apart)."""
    runs = sample_grid_runs(records, dataset, seed)
    images = [(text, r.folder / SAMPLES_NAME) for text, r in runs if r.folder is not None]
    images = [(m, p) for m, p in images if p.exists()]
    if not images:
        return None
    ref = runs[0][1].config.ref
    plt = _plt()
    cols = min(SAMPLE_COLUMNS, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, path) in zip(axes.flat, images):
        ax.imshow(plt.imread(path))
        ax.set_title(textwrap.fill(title, 34), fontsize=8)
    fig.suptitle(f"{dataset}: samples at ref {ref:g}, seed {seed}")
    fig.tight_layout()
    return _save(fig, out / "samples.png")


def _save(fig, path: Path) -> Path:
    from .checkpoint import write_bytes

    try:
        write_bytes(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png", dpi=120, bbox_inches="tight"))
    finally:
        _plt().close(fig)
    return path


def main_metrics(long: pd.DataFrame, dataset: str) -> list[str]:
    """The bias and the quality metric a reader came for: bias_l2, then FID or the Fréchet distance."""
    metrics = sorted(long[long.dataset == dataset].metric.unique())
    quality = [m for m in metrics if m == "fid"] or [m for m in metrics if m.startswith("fd_")]
    return ["bias_l2"] * ("bias_l2" in metrics) + quality[:1]


def method_bars(long: pd.DataFrame, dataset: str, out: Path, floors: list[dict] | None = None) -> Path | None:
    """Bias and quality per method at the smallest reference size (mean ± std over seeds), side by
    side: the figure a reader looks at first where there is one reference size."""
    metrics = main_metrics(long, dataset)
    d = by_row(long[(long.dataset == dataset) & (long.alpha == 1)])
    if not metrics or d.empty:
        return None
    ref = d.ref.min()
    d = d[d.ref == ref]
    rows = sorted(set(d.method), key=natural_key)[::-1]
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.32 * len(rows) + 1.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        g = d[d.metric == metric].set_index("method").reindex(rows)
        ax.barh(range(len(rows)), g["mean"], xerr=g["std"], color=[method_color(r) or "tab:cyan" for r in rows],
                capsize=2)
        if metric == "bias_l2":
            for f in floors or []:
                if f["dataset"] == dataset and f["ref"] == ref:
                    ax.axvline(f["sampling"], color="0.4", ls=":", lw=1, label="sampling floor")
                    if f["composition"] is not None:
                        ax.axvline(f["composition"], color="0.4", ls="--", lw=1,
                                   label="reference-composition floor")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(range(len(rows)), rows if ax is axes[0][0] else [""] * len(rows), fontsize=8)
        ax.set_xlabel(f"{metric} (lower is better)")
    fig.suptitle(f"{dataset}, ref {ref:g}: mean ± std over seeds")
    fig.tight_layout()
    return _save(fig, out / "methods.png")


def main_figures(records: list[Record], long: pd.DataFrame, dataset: str, out: Path) -> list[Path]:
    """The figures a reader looks at first: bias and quality against reference size where there
    are several sizes, else both per method at the one size; returns the files written."""
    floors = bias_floors(records)
    made = [p for p in (metric_vs_ref(long, dataset, m, out, floors) for m in main_metrics(long, dataset)) if p]
    return made or [p for p in [method_bars(long, dataset, out, floors)] if p]


def more_figures(records: list[Record], long: pd.DataFrame, dataset: str, out: Path) -> list[Path]:
    """The other figures the records support (further metrics by size, the α trade-off, the ratio's
    error by σ, training curves, sample grids); returns the files written."""
    floors = bias_floors(records)
    main = main_metrics(long, dataset)
    metrics = sorted(long[long.dataset == dataset].metric.unique())
    made = [metric_vs_ref(long, dataset, m, out, floors) for m in metrics
            if m.startswith(("bias_l2", "fd_", "fid")) and m not in main]
    made += [alpha_tradeoff(long, dataset, out), ratio_error_vs_sigma(records, dataset, out),
             training_curves(records, dataset, out), sample_grids(records, dataset, out)]
    return [p for p in made if p is not None]


def all_figures(records: list[Record], long: pd.DataFrame, dataset: str, out: Path) -> list[Path]:
    """Every figure that the records support, the main ones first; returns the files written."""
    return main_figures(records, long, dataset, out) + more_figures(records, long, dataset, out)
