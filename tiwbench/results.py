"""Run records aggregated over seeds into pandas tables (long CSV, wide Markdown/LaTeX) and the
commands that reproduce them. Torch-free."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from .config import (
    FIELDS,
    RATIO_FIELDS,
    RunConfig,
    cli_flags,
    format_value,
    option_defaults,
    option_values,
    ratio_option_flags,
    unused_fields,
)
from .errors import TiwbenchError
from .estimators.base import DEFAULT_ESTIMATOR, type_of
from .record import Record
from .stats import best_and_ties, bias_floors, paired_to_baseline, row_label, share_floor

LONG_COLUMNS = ["dataset", "method", "ratio", "settings", "ref", "alpha", "metric", "mean", "std", "n"]
# Added columns: `best` (bold: lowest mean or tied with it), the paired difference to a baseline.
PAIRED_COLUMNS = ["best", "diff_vs", "diff_mean", "diff_lo", "diff_hi", "diff_n"]
BASELINE = "dsm_obs"
CELLS_NOTE = ("Cells: mean ± std over seeds (n). Bold: the lowest mean of its column and every row "
              "statistically tied with it (the 95% Student-t interval of the per-seed difference reaches 0; "
              "rows sharing fewer than two seeds with it are not tested). Under each table, each row's "
              "difference to the baseline, paired by seed.")
# attr_acc: the dataset's classifier's; density: best at 1, not highest; fit_gap: a diagnostic of the network
NOT_RANKED = {"attr_acc", "density", "fit_gap"}
HIGHER_IS_BETTER = {"precision", "recall", "coverage"}
METRIC_ORDER = ["bias_l2", "bias_l1", "bias_kl", "fit_gap", "fd_", "precision", "recall", "density", "coverage",
                "corr_err", "ratio_err", "ratio_val_bce", "w_collapse", "attr_acc"]
# Config fields with a column (or label mark) of their own; the others make a run's setting.
OWN_FIELDS = ("dataset", "method", "ref", "alpha", "seed", "ratio", "ratio_options")


def estimator_label(ratio: str) -> str:
    """What a row adds to its method's name for its ratio estimator: nothing for the default
    estimator (and ratio-free methods), `+NAME` for another (`tiw_dsm+exact`)."""
    return "" if ratio in ("", "none", DEFAULT_ESTIMATOR) else f"+{ratio}"


def display_label(method: str, ratio: str, settings: str) -> str:
    """A table row's name: the method, its estimator where not the default, the settings that set
    it apart in parentheses (`tiw_dsm+paper`, `tiw_dsm (holdout=0)`)."""
    return method + estimator_label(ratio) + (f" ({settings})" if settings else "")


def method_label(record: Record) -> str:
    """The method's name, marked with its ratio estimator where that is not the default."""
    return record.config.method + estimator_label(record.ratio_source)


def run_setting(record: Record) -> dict:
    """A run's configuration beyond its own fields, without those it did not use
    (config.unused_fields, the rule resolve_config resets them by); its ratio estimator's
    options by their names, every one at its value."""
    cfg = record.config
    unused = set(unused_fields(cfg, record.ratio_kind, record.train_on, record.stratified_batches))
    setting = {k: v for k, v in cfg.to_dict().items() if k not in OWN_FIELDS and k not in unused}
    if record.ratio_kind:
        setting.update({option_key(k): v
                        for k, v in option_values(cfg.ratio, cfg.ratio_options, record.ratio_kind).items()})
    return setting


def option_key(name: str) -> str:
    """An estimator option's key among a run's settings: its name, unless a run option has it."""
    return name if name not in FIELDS else f"ratio_{name}"


def setting_defaults(records: list[Record], settings: list[dict]) -> dict:
    """Per setting (`settings[i]` is records[i]'s, formatted), the value that goes unmarked: an
    estimator option's declared default, a run option's default where datasets cannot change it,
    else the value most of the records have (a dataset's default, which `table` reads without
    loading the dataset)."""
    counts: dict[str, dict[str, int]] = {}
    declared: dict[str, object] = {}
    for r, setting in zip(records, settings):
        for k, v in setting.items():
            counts.setdefault(k, {}).setdefault(v, 0)
            counts[k][v] += 1
        if r.ratio_kind:
            declared.update({option_key(k): format_value(v) for k, v in option_defaults(r.config.ratio).items()})
    out = {}
    for k, seen in counts.items():
        field = FIELDS.get(k)
        if k in declared:
            out[k] = declared[k]
        elif field is not None and not field.metadata["dataset_default"]:
            out[k] = format_value(field.default)
        else:
            top = max(seen.values())
            common = sorted(v for v, n in seen.items() if n == top)
            out[k] = format_value(field.default) if field is not None and format_value(field.default) in common \
                else common[0]
    return out


def setting_marks(records: list[Record], relevant=lambda field: True) -> list[str]:
    """Each record's settings that set it apart: among the `relevant` ones that differ between the
    records of its dataset, and its estimator's options, those not at their unmarked value
    (setting_defaults), as "key=value, ..." in alphabetical order ("" where none)."""
    all_settings = [{k: format_value(v) for k, v in run_setting(r).items()} for r in records]
    by_dataset: dict[str, tuple[list, list]] = {}
    for r, s in zip(records, all_settings):
        by_dataset.setdefault(r.config.dataset, ([], []))
        by_dataset[r.config.dataset][0].append(r)
        by_dataset[r.config.dataset][1].append(s)
    defaults = {name: setting_defaults(rs, ss) for name, (rs, ss) in by_dataset.items()}
    settings = [{k: v for k, v in s.items() if relevant(k)} for s in all_settings]
    seen: dict[str, dict[str, set]] = {}
    for r, s in zip(records, settings):
        for k, v in s.items():
            seen.setdefault(r.config.dataset, {}).setdefault(k, set()).add(v)
    marks = []
    for r, s in zip(records, settings):
        unmarked = defaults[r.config.dataset]
        # an estimator option off its declared default is a variant even where every row shares it
        # (a table of records made before the default changed)
        declared = {option_key(k) for k in option_defaults(r.config.ratio)} if r.ratio_kind else set()
        varying = sorted(k for k, values in seen[r.config.dataset].items()
                         if (len(values) > 1 or k in declared) and k in s and s[k] != unmarked.get(k))
        marks.append(", ".join(s[k] if k == "dataset_options" else f"{k}={s[k]}" for k in varying if s[k] != ""))
    return marks


def row_labels(records: list[Record]) -> list[str]:
    """Each record's row: its method label and the settings that set it apart (setting_marks),
    so that runs made differently are never pooled into one mean."""
    return [display_label(r.config.method, r.ratio_source, mark)
            for r, mark in zip(records, setting_marks(records))]


def of_dataset(records: list[Record], dataset: str | None) -> list[Record]:
    return [r for r in records if dataset is None or r.config.dataset == dataset]


def long_table(records: list[Record], dataset: str | None = None, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per dataset, method, ratio estimator, setting (see row_labels), ref, alpha and metric
    (tidy: each its own column): mean, std (ddof 1) and n over seeds; `best` (the lowest mean of its
    column or statistically tied with it) and the paired difference to `baseline` (stats.py)."""
    records = of_dataset(records, dataset)
    marks = setting_marks(records)
    labels = [display_label(r.config.method, r.ratio_source, m) for r, m in zip(records, marks)]
    parts = {label: (r.config.method, "" if r.ratio_source == "none" else r.ratio_source, mark)
             for r, label, mark in zip(records, labels, marks)}
    rows = [{"dataset": r.config.dataset, "method": label, "ref": r.config.ref,
             "alpha": r.config.alpha, "seed": r.config.seed, "metric": k, "value": v}
            for r, label in zip(records, labels) for k, v in r.metrics.items()]
    if not rows:
        where = f" for dataset {dataset!r}" if dataset else ""
        raise TiwbenchError(f"no finished runs{where}")
    check_baseline(baseline, labels)
    df = pd.DataFrame(rows)
    keys = ["dataset", "method", "ref", "alpha", "metric"]
    agg = (df.groupby(keys, sort=True)["value"].agg(mean="mean", std="std", n="count").reset_index())
    agg["std"] = agg["std"].fillna(0.0)
    ranked = df[~df.metric.isin(NOT_RANKED)]
    lower_better = ranked.assign(value=ranked.value.where(~ranked.metric.isin(HIGHER_IS_BETTER), -ranked.value))
    best = best_and_ties(lower_better) if len(ranked) else {}
    agg["best"] = [bool(best.get((d, m, r, row_label(meth, a)), False))
                   for d, meth, r, a, m in zip(agg.dataset, agg.method, agg.ref, agg.alpha, agg.metric)]
    agg = agg.merge(paired_to_baseline(ranked, baseline), on=keys, how="left")
    agg["ratio"] = [parts[label][1] for label in agg.method]
    agg["settings"] = [parts[label][2] for label in agg.method]
    agg["method"] = [parts[label][0] for label in agg.method]
    return agg[LONG_COLUMNS + PAIRED_COLUMNS]


def row_names(long: pd.DataFrame) -> list[str]:
    """The row label of each line of a long table (display_label of its tidy columns)."""
    return [display_label(m, r, s)
            for m, r, s in zip(long.method, long.ratio.fillna(""), long.settings.fillna(""))]


MAIN_METRICS = ("bias_l2", "bias_l2_corrected", "fit_gap", "fid", "fd_", "precision", "recall")


def main_table(long: pd.DataFrame, dataset: str, ref: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The compact table a reader looks at first: a row per method (α = 1), the main metrics as
    columns (bias, bias through the classifier's confusion where it differs, FID or the Fréchet
    distance, precision, recall), `mean ± std` to three significant digits; and the bold mask
    (lowest or tied, as in the full tables)."""
    d = long[(long.dataset == dataset) & (long.ref == ref) & (long.alpha == 1)]
    d = d.assign(row=row_names(d))
    metrics = [m for prefix in MAIN_METRICS for m in sorted(set(d.metric)) if m == prefix or (
        prefix.endswith("_") and m.startswith(prefix))]
    if "bias_l2_corrected" in metrics and np.allclose(d[d.metric == "bias_l2"]["mean"].to_numpy(),
                                                      d[d.metric == "bias_l2_corrected"]["mean"].to_numpy()):
        metrics.remove("bias_l2_corrected")  # a perfect classifier: the same numbers
    d = d[d.metric.isin(metrics)].set_index(["row", "metric"])
    cells = d.apply(lambda r: f"{r['mean']:.3g} ± {r['std']:.2g}" if r["n"] > 1 else f"{r['mean']:.3g}",
                    axis=1).unstack().reindex(columns=metrics).fillna("–")
    best = d["best"].astype(bool).unstack().reindex_like(cells).fillna(False).astype(bool)
    rows = sorted(cells.index, key=natural_key)
    return cells.loc[rows], best.loc[rows]


def check_baseline(baseline: str, labels: list[str]) -> None:
    """A baseline other than the default must name a row (its method label, e.g. `tiw_dsm+exact`,
    with or without its setting marks): a misspelt one would silently drop every paired
    difference. The default may be absent (a study without dsm_obs)."""
    if baseline == BASELINE or any(label == baseline or label.startswith(baseline + " (") for label in labels):
        return
    rows = sorted({label.split(" (")[0] for label in labels})
    raise TiwbenchError(f"--baseline {baseline!r} is no row of these runs; choose from {', '.join(rows)}")


def metric_sort_key(metric: str) -> int:
    return next((i for i, p in enumerate(METRIC_ORDER) if metric.startswith(p)), len(METRIC_ORDER))


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.4g} ± {std:.2g} ({n})" if n > 1 else f"{mean:.4g} (1)"


def _delta(mean: float, low: float, high: float, n: int) -> str:
    return f"{mean:+.3g} [{low:+.3g}, {high:+.3g}] ({n})" if n > 1 else f"{mean:+.3g} (1)"


def wide_tables(long: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame, pd.DataFrame | None]]:
    """(dataset, metric, cells, bold mask, paired-difference cells or None) per metric: methods as
    rows, reference sizes as columns. Bold is the lowest mean and every row tied with it."""
    long = long.assign(row=[row_label(m, a) for m, a in zip(row_names(long), long.alpha)])
    out = []
    for (dataset, metric), g in long.groupby(["dataset", "metric"], sort=False):
        g = g.set_index(["row", "ref"])
        cells = g.apply(lambda r: _cell(r["mean"], r["std"], int(r["n"])), axis=1).unstack().fillna("–")
        best = g["best"].astype(bool).unstack().reindex_like(cells).fillna(False).astype(bool)
        rows = sorted(cells.index, key=natural_key)
        paired = g.dropna(subset=["diff_mean"])
        delta = None
        if len(paired):
            delta = paired.apply(lambda r: _delta(r.diff_mean, r.diff_lo, r.diff_hi, int(r.diff_n)), axis=1)
            delta = delta.unstack().reindex(columns=cells.columns).astype(object).fillna("–")
            delta = delta.loc[sorted(delta.index, key=natural_key)]
        out.append((dataset, metric, cells.loc[rows], best.loc[rows], delta))
    return sorted(out, key=lambda t: (t[0], metric_sort_key(t[1]), t[1]))


def delta_heading(long: pd.DataFrame, dataset: str, metric: str) -> str:
    bases = sorted(set(long[(long.dataset == dataset) & (long.metric == metric)].diff_vs.dropna()))
    return (f"difference to {', '.join(bases)}, paired by seed: mean [95% t-interval] (seeds); "
            f"an interval that excludes 0 is a significant difference")


def natural_key(label: str) -> list:
    """Sort key that orders numbers inside labels by value (ratio_steps=500 before 6000)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", label)
    return [float(p) if i % 2 else p for i, p in enumerate(parts)]


def metric_heading(metric: str) -> str:
    """'bias_l2 (lower is better)'; unranked metrics (attr_acc) bare."""
    if metric in NOT_RANKED:
        return metric
    return f"{metric} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better)"


def _title(dataset: str, metric: str) -> str:
    return f"{dataset} — {metric_heading(metric)}"


def _md_table(cells: pd.DataFrame, best: pd.DataFrame | None = None) -> list[str]:
    header = ["method"] + [f"ref {c:g}" for c in cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in cells.index:
        vals = [f"**{v}**" if best is not None and best.loc[row, c] else v for c, v in cells.loc[row].items()]
        lines.append(f"| {row} | " + " | ".join(vals) + " |")
    return lines


CHANCE_BCE_NOTE = (
    "Chance: a ratio model that says nothing (log w ≡ 0) scores log 2 = 0.693 on the class-balanced held-out "
    "data; a mean above it means the kept discriminator is worse than no ratio at all there (the records give "
    "each σ band's value, `ratio_fit.val_bce`).")


def table_notes(records: list[Record], dataset: str | None = None) -> dict[tuple[str, str], str]:
    """What a reader needs under some tables: the bias_l2 floors of each dataset (stats.bias_floors)
    and the chance level of the discriminator's held-out BCE."""
    notes: dict[tuple[str, str], list[str]] = {}
    floors = bias_floors(of_dataset(records, dataset))
    for f in sorted(floors, key=lambda f: (f["dataset"], f["ref"], str(f["stratified"]))):
        notes.setdefault((f["dataset"], "bias_l2"), []).append(
            f"ref {f['ref']:g}: sampling {f['sampling']:.3g} (N = {f['samples']:,}), reference composition "
            + ("none (stratified " if f["composition"] is None else f"{f['composition']:.3g} ("
               + ("i.i.d. " if f["stratified"] is False else ""))
            + f"|D_ref| = {f['n_ref']:,})")
    out = {key: ("Floors of bias_l2, as root mean squares (the mean is a little lower: 0.92 of it for "
                 "four equal shares) — sampling: √(Σ t(1−t)/N), what N samples of a perfect model "
                 "score; reference composition: √(Σ t(1−t)/|D_ref|), what a method that "
                 "reproduces an i.i.d.-drawn D_ref's own composition scores (none where "
                 "D_ref is drawn with exactly the target shares: digits_lt, the real datasets, "
                 "`--dataset-option ref_sampling=stratified` on gmm2d and gmm_hd). " + "; ".join(lines) + ".")
           for key, lines in notes.items()}
    for name in sorted({r.config.dataset for r in of_dataset(records, dataset) if "fit_gap" in r.metrics}):
        out[(name, "fit_gap")] = fit_gap_note([r for r in of_dataset(records, name) if "fit_gap" in r.metrics])
    for name in sorted({r.config.dataset for r in of_dataset(records, dataset) if "ratio_val_bce" in r.metrics}):
        out[(name, "ratio_val_bce")] = CHANCE_BCE_NOTE + tilt_weights_note(of_dataset(records, name))
    return out


def fit_gap_note(records: list[Record]) -> str:
    """What fit_gap measures and its sampling floor, √(Σ f(1−f)/N) for the shares f a perfect fit
    generates (stats.share_floor), per row label over its records."""
    floors: dict[str, list[float]] = {}
    for r, label in zip(records, row_labels(records)):
        floors.setdefault(label, []).append(share_floor(r.fit_shares, len_samples(r)))
    spans = "; ".join(f"{label} {min(v):.3g}" + (f"–{max(v):.3g}" if max(v) - min(v) >= 5e-4 else "")
                      for label, v in sorted(floors.items(), key=lambda kv: natural_key(kv[0])))
    flagged = "; ".join(f"ref {ref:g}: {', '.join(rows)}" for (_, ref), rows in underfit_rows(records).items())
    return ("fit_gap: the L2 distance of the samples' group shares to those a perfect fit of the method's own "
            "objective generates — the target for the debiasing methods, the training mixture as the "
            "attribute classifier sees it for dsm_obs, dsm_mix and dsm_ref (none for tiw_nocorr, whose "
            "minimiser is neither). Above its sampling floor the samples miss what the row's objective "
            "generates: for a row without a learned ratio the network has not learned what it was trained on "
            "and part of its bias is under-fitting rather than the method; for a row with one, whose fit is "
            "the target, fit_gap is its bias and holds the ratio's error too. Sampling floors "
            f"(root mean square, √(Σ f(1−f)/N)): {spans}."
            + (f" Above twice the floor, among the rows without a learned ratio (whose fit_gap holds no "
               f"ratio's error): {flagged}." if flagged else ""))


# An exact fit's fit_gap exceeds twice its RMS floor with probability 0.7 % for four equal shares
# (χ²₃ > 12) and at most 4.6 % (all variance in one direction, χ²₁ > 4); a mean over seeds, less.
UNDERFIT_FACTOR = 2.0


NETWORK_ONLY_SOURCES = ("none", "exact", "oracle")  # rows whose fit_gap no ratio model's error enters


def underfit_message(flagged: list[str]) -> str:
    """What `run` and `table` say of the rows underfit_rows names."""
    return (f"fit_gap above twice its sampling floor: {', '.join(flagged)} — part of the bias is the "
            "network's under-fitting, not the method; train longer (--steps)")


def underfit_rows(records: list[Record], dataset: str | None = None) -> dict[tuple[str, float], list[str]]:
    """Per (dataset, ref): the rows at α = 1 whose mean fit_gap is above UNDERFIT_FACTOR times their
    mean sampling floor, as "label gap (floor f)": rows where part of the bias is the network's
    under-fitting. Only rows without a learned ratio: where one is used, fit_gap (then the distance
    to the target) holds the ratio's error too. Labels as in the tables (over the dataset's records)."""
    mine = of_dataset(records, dataset)
    gaps: dict[tuple[str, float, str], list[tuple[float, float]]] = {}
    for r, label in zip(mine, row_labels(mine)):
        if ("fit_gap" in r.metrics and r.fit_shares and r.config.alpha == 1
                and r.ratio_source in NETWORK_ONLY_SOURCES):
            floor = share_floor(r.fit_shares, len_samples(r))
            gaps.setdefault((r.config.dataset, r.config.ref, label), []).append((r.metrics["fit_gap"], floor))
    flagged: dict[tuple[str, float], list[str]] = {}
    for (name, ref, label), values in sorted(gaps.items(), key=lambda kv: (*kv[0][:2], natural_key(kv[0][2]))):
        gap, floor = (sum(v) / len(values) for v in zip(*values))
        if gap > UNDERFIT_FACTOR * floor:
            flagged.setdefault((name, ref), []).append(f"{label} {gap:.2g} (floor {floor:.2g})")
    return flagged


def len_samples(record: Record) -> int:
    """The number of samples a record's shares were measured on."""
    return record.sizes.get("samples") or record.config.num_samples


def tilt_weights_note(records: list[Record]) -> str:
    """Which clean weights held-out selection gave the tilted base (`tilt_weights=select`,
    recorded in `ratio_fit.tilt`), per row and reference size, seed by seed; "" where none chose."""
    chosen: dict[tuple[str, float], dict[str, list[str]]] = {}
    rows = sorted(zip(records, row_labels(records)), key=lambda p: (p[1], p[0].config.ref, p[0].config.seed))
    for r, label in rows:
        tilt = (r.ratio_fit or {}).get("tilt")
        if tilt is not None and len(tilt["clean_val_bce"]) > 1:
            seeds = chosen.setdefault((label, r.config.ref), {}).setdefault(tilt["weights"], [])
            seeds.append(str(r.config.seed))
    if not chosen:
        return ""

    def seeds_of(name: str, seeds: list[str]) -> str:
        return f"{name} (seed{'s' * (len(seeds) > 1)} {', '.join(seeds)})"

    return (" The tilted base's clean weights, chosen by held-out clean BCE "
            "(`--ratio-option tilt_weights=select`): "
            + "; ".join(f"{label}, ref {ref:g}: " + ", ".join(seeds_of(*item) for item in by_name.items())
                        for (label, ref), by_name in chosen.items()) + ".")


def to_markdown(long: pd.DataFrame, notes: dict[tuple[str, str], str] | None = None) -> str:
    parts = []
    for dataset, metric, cells, best, delta in wide_tables(long):
        lines = [f"### {_title(dataset, metric)}", "", *_md_table(cells, best)]
        if notes and (dataset, metric) in notes:
            lines += ["", notes[(dataset, metric)]]
        if delta is not None:
            lines += ["", f"{delta_heading(long, dataset, metric)}:", "", *_md_table(delta)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _tex(s: str) -> str:
    return (s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("±", "$\\pm$")
            .replace("α", "$\\alpha$").replace("–", "--"))


def to_latex(long: pd.DataFrame) -> str:
    parts = []
    for dataset, metric, cells, best, _ in wide_tables(long):
        cols = list(cells.columns)
        lines = [f"% {_title(dataset, metric)}", "\\begin{tabular}{l" + "c" * len(cols) + "}",
                 "\\hline", "method & " + " & ".join(f"ref {c:g}" for c in cols) + " \\\\", "\\hline"]
        for row in cells.index:
            vals = [f"\\textbf{{{_tex(v)}}}" if best.loc[row, c] else _tex(v)
                    for c, v in cells.loc[row].items()]
            lines.append(f"{_tex(row)} & " + " & ".join(vals) + " \\\\")
        lines += ["\\hline", "\\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render(long: pd.DataFrame, fmt: str, notes: dict[tuple[str, str], str] | None = None) -> str:
    """The aggregated table as Markdown or LaTeX (wide, per metric) or CSV (long); `notes` go under
    the Markdown tables they name (dataset, metric)."""
    if fmt == "md":
        return to_markdown(long, notes)
    if fmt == "latex":
        return to_latex(long)
    if fmt == "csv":
        return long.to_csv(index=False, float_format="%.6g")
    raise TiwbenchError(f"--format must be md, latex or csv, got {fmt!r}")


def ratio_setting(field: str) -> bool:
    """The settings a ratio model's error depends on: its training (the shared ratio options and
    its estimator's own), the data, and π (ref_share)."""
    return field not in FIELDS or field in RATIO_FIELDS or field in ("dataset_options", "ref_share")


def is_estimate(record: Record) -> bool:
    """Whether the record's ratio was fitted (not ratio-free, not the exact ratio itself): its
    error against the exact ratio is worth a table (the label-informed bound's included)."""
    if record.ratio_source == "none" or not record.ratio_kind:
        return False
    try:
        return not type_of(record.ratio_source).needs_exact
    except TiwbenchError:  # an estimator not installed here
        return True


def ratio_error_table(records: list[dict], dataset: str | None = None) -> pd.DataFrame:
    """Learned-ratio error against the exact ratio (on images: the label-informed one) by σ (the
    paper's Figure 2 as a table):
    mean over seeds of each error, one row per dataset, ratio kind (with its estimator where not
    the default, and its training setting where those differ), ref and σ. Methods sharing a ratio
    model (tiw_dsm, tiw_nocorr) count once."""
    records = [r for r in of_dataset(records, dataset) if r.ratio_error and is_estimate(r)]
    marks = setting_marks(records, ratio_setting)
    rows = [{"dataset": r.config.dataset, "ratio": r.ratio_kind + estimator_label(r.ratio_source)
             + (f" ({mark})" if mark else ""), "ref": r.config.ref, "seed": r.config.seed, "against": "exact", **e}
            for r, mark in zip(records, marks) for e in r.ratio_error]
    if not rows:
        raise TiwbenchError("no finished runs with a learned ratio on a dataset with an exact or "
                            "label-informed one")
    df = pd.DataFrame(rows).drop_duplicates(["dataset", "ratio", "ref", "seed", "sigma"])
    if "corr_norm" not in df:  # records before the exact size was kept
        df["corr_norm"] = float("nan")
    return (df.groupby(["dataset", "against", "ratio", "ref", "sigma"])
            .agg(log_r_rmse=("log_r_rmse", "mean"), grad_rmse=("grad_rmse", "mean"),
                 corr_rmse=("corr_rmse", "mean"), corr_norm=("corr_norm", "mean"),
                 n=("seed", "count")).reset_index())


# What the ratio-error tables show: the error of log r, and for time-dependent ratios the error of
# TIW-DSM's correction σ²∇log r (beside the exact correction's size).
RATIO_ERRORS = {"log_r_rmse": "RMSE of log r", "corr_rmse": "RMSE of σ²∇log r (TIW-DSM's correction)"}


def ratio_error_by_kind(df: pd.DataFrame, value: str = "log_r_rmse") -> list[tuple[str, pd.DataFrame]]:
    """(ratio kind, `value` with σ as rows and refs as columns), time-dependent first; for the
    correction error, time-dependent kinds only, with the exact correction's RMS size (exact size)."""
    if value == "corr_rmse":
        df = df[df.ratio.str.startswith("time_dependent")]
    wide = df.pivot_table(index="sigma", columns=["ratio", "ref"], values=value)
    kinds = sorted(dict.fromkeys(wide.columns.get_level_values(0)), key=natural_key)
    out = []
    for kind in kinds:
        table = wide[kind]
        if value == "corr_rmse":
            table = table.assign(**{"exact size": df[df.ratio == kind].groupby("sigma").corr_norm.mean()})
        out.append((kind, table))
    return out


def ratio_title(kind: str) -> str:
    """'time_dependent+paper (ratio_steps=500)' -> 'time-dependent ratio+paper (ratio_steps=500)'."""
    name, _, marks = kind.partition(" ")
    name, plus, estimator = name.partition("+")
    return f"{name.replace('_', '-')} ratio" + (f" ({estimator})" if plus else "") + (f" {marks}" if marks else "")


def ratio_error_markdown(df: pd.DataFrame) -> str:
    """log r and correction RMSE by σ, one table per dataset, error and ratio kind."""
    parts = []
    for (dataset, against), g in df.groupby(["dataset", "against"]):
        n = int(g["n"].min())
        reference = "the label-informed ratio" if against == "labels" else "the exact ratio"
        for value, what in RATIO_ERRORS.items():
            for kind, table in ratio_error_by_kind(g, value):
                header = ["σ"] + [ref_heading(ref) for ref in table.columns]
                lines = [f"### {dataset} — {ratio_title(kind)}: {what} against {reference}, by σ "
                         f"(mean of {n}+ seeds)", "",
                         "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += [f"| {s:.3g} | " + " | ".join(f"{v:.3g}" for v in row) + " |"
                          for s, row in zip(table.index, table.to_numpy())]
                parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def ref_heading(column) -> str:
    """'ref 0.05' for a reference size, the name itself for an extra column (exact size)."""
    return column if isinstance(column, str) else f"ref {column:g}"


def reproduce_commands(records: list[Record], dataset: str) -> list[str]:
    """`tiwbench sweep` commands that make these records: one per setting (see run_setting) and
    ratio source, the runs at α ≠ 1 as a sweep of their own, so that no command makes runs not shown."""
    runs = [(r.config, run_setting(r)) for r in of_dataset(records, dataset)]
    if not runs:
        raise TiwbenchError(f"no finished runs for dataset {dataset!r}")
    # shared setting -> the flags of the ratio setting -> (one such setting, configs): runs whose
    # ratio settings differ only where the command line cannot tell them apart (the options a
    # clean-data model ignores) share one command
    groups: dict[str, dict[str, tuple[dict, list]]] = {}
    for cfg, setting in runs:
        shared = json.dumps({k: v for k, v in setting.items() if not ratio_field(k)}, sort_keys=True)
        ratio = {} if cfg.ratio == "none" else {"ratio": cfg.ratio, **{k: v for k, v in setting.items()
                                                                      if ratio_field(k)}}
        if cfg.ratio == "none" and "ref_share" in setting:  # dsm_mix: its batch share sets it apart
            ratio = {"ref_share": setting["ref_share"]}
        flags = json.dumps(_setting_flags(dataset, ratio)) if ratio else ""
        groups.setdefault(shared, {}).setdefault(flags, (ratio, []))[1].append(cfg)
    commands = []
    for shared, by_ratio in groups.items():
        ratio_free = by_ratio.pop("", ({}, []))[1]
        # ratio-free runs go with the ratio setting that needs the fewest options (the defaults')
        ordered = sorted(by_ratio.items(), key=lambda item: len(json.loads(item[0])))
        for i, (_, (ratio, cfgs)) in enumerate(ordered or [("[]", ({}, []))]):
            cfgs = cfgs + (ratio_free if i == 0 else [])
            setting = json.loads(shared) | ratio
            main = [c for c in cfgs if c.alpha == 1]
            other = [c for c in cfgs if c.alpha != 1]
            if main:
                commands += [_sweep_command(dataset, grid, setting) for grid in _grids(main)]
            if other:
                pairs = {(c.method, c.ref) for c in other}
                with_one = [c for c in main if (c.method, c.ref) in pairs]
                commands += [_sweep_command(dataset, grid, setting) for grid in _grids(other + with_one)]
    return list(dict.fromkeys(commands))  # a grid of α = 1 runs can come from both lists


def _grids(runs: list[RunConfig]) -> list[list[RunConfig]]:
    """The runs as sweeps that make exactly them: methods with the same (ref, seed, α) cells
    together; cells that are not a full refs × seeds × α grid split by ref, then by α."""
    cells_of: dict[str, set] = {}
    for c in runs:
        cells_of.setdefault(c.method, set()).add((c.ref, c.seed, c.alpha))
    methods_of: dict[frozenset, list[str]] = {}
    for method, cells in cells_of.items():
        methods_of.setdefault(frozenset(cells), []).append(method)

    def blocks(cells: frozenset) -> list[set]:
        refs, seeds, alphas = ({cell[i] for cell in cells} for i in range(3))
        if len(cells) == len(refs) * len(seeds) * len(alphas):
            return [set(cells)]
        refs_of: dict[frozenset, set] = {}  # the refs that share their (seed, α) cells, a block each
        for r in sorted(refs):
            refs_of.setdefault(frozenset(cell[1:] for cell in cells if cell[0] == r), set()).add(r)
        if len(refs_of) > 1:
            return [b for rs in refs_of.values() for b in blocks(frozenset(c for c in cells if c[0] in rs))]
        # every ref has the same (seed, α) cells, not a full seeds × α grid: one block per α
        return [b for a in sorted(alphas) for b in blocks(frozenset(c for c in cells if c[2] == a))]

    return [[c for c in runs if c.method in methods and (c.ref, c.seed, c.alpha) in block]
            for cells, methods in methods_of.items() for block in blocks(cells)]


def ratio_field(key: str) -> bool:
    """Whether a setting (run_setting's key) is one that ratio-free runs may lack: a shared ratio
    option, an estimator's own, or the batch share (which dsm_obs and dsm_ref do not use)."""
    return key not in FIELDS or key in RATIO_FIELDS or key == "ref_share"


def _sweep_command(dataset: str, runs: list[RunConfig], setting: dict) -> str:
    """One `tiwbench sweep` over the runs' methods, refs, seeds and α, with the setting's options
    where they differ from the defaults."""

    def join(key: str) -> str:
        return ",".join(format_value(v) for v in sorted({getattr(c, key) for c in runs}))

    parts = [f"tiwbench sweep --dataset {dataset}", f"--methods {join('method')}", f"--refs {join('ref')}",
             f"--seeds {join('seed')}"]
    if {c.alpha for c in runs} != {1.0}:
        parts.append(f"--alphas {join('alpha')}")
    return " ".join(parts + _setting_flags(dataset, setting))


def _setting_flags(dataset: str, setting: dict) -> list[str]:
    """The command-line options that give a run setting, where it differs from the defaults of
    the fields, the dataset and the ratio estimator (cli_flags: the inverse of the CLI's parsing)."""
    from . import registry

    fields_only = {k: v for k, v in setting.items() if k in FIELDS}
    fields_only["dataset_options"] = [tuple(o) for o in setting.get("dataset_options", [])]
    defaults = {name: f.default for name, f in FIELDS.items()} | registry.load("dataset", dataset).defaults
    options = {k: v for k, v in setting.items() if k not in FIELDS}
    return cli_flags(fields_only, defaults) + (ratio_option_flags(setting["ratio"], options) if options else [])
