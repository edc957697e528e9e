"""Paired statistics over seeds. Runs with the same seed share D_bias and D_ref across methods, so
methods are compared through per-seed differences with a 95% Student-t interval over seeds, not
through two means ± std. Torch-free."""

from __future__ import annotations

import math

import pandas as pd

LEVEL = 0.95
KEYS = ["dataset", "metric", "ref"]  # one column of a wide table


def t_interval(diffs: list[float]) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the mean of `diffs`, a 95% Student-t interval (NaN for n < 2)."""
    from scipy.special import stdtrit  # the t quantile; scipy.stats would cost `table` a second to import

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.nan, math.nan, n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n


def row_label(method: str, alpha: float) -> str:
    """A wide table's row: the method label, with α where it is not 1."""
    return method if alpha == 1 else f"{method} (α={alpha:g})"


def _paired(a: pd.Series, b: pd.Series) -> tuple[float, float, float, int]:
    """t_interval of a − b over the seeds both have (Series indexed by seed)."""
    common = a.index.intersection(b.index)
    return t_interval([float(a[s] - b[s]) for s in common]) if len(common) else (math.nan,) * 3 + (0,)


def best_and_ties(per_seed: pd.DataFrame) -> pd.Series:
    """Per (dataset, metric, ref, row): True for the row with the lowest mean and for every row
    whose paired difference to it has an interval reaching 0 (a tie); rows sharing fewer than two
    seeds with the best cannot be tested and are not marked."""
    per_seed = per_seed.assign(row=[row_label(m, a) for m, a in zip(per_seed.method, per_seed.alpha)])
    out = {}
    for key, g in per_seed.groupby(KEYS):
        by_row = {row: s.set_index("seed")["value"] for row, s in g.groupby("row")}
        best = min(by_row, key=lambda r: by_row[r].mean())
        for row, values in by_row.items():
            _, low, _, n = _paired(values, by_row[best])
            out[(*key, row)] = row == best or (n >= 2 and low <= 0)
    return pd.Series(out, name="best")


def paired_to_baseline(per_seed: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each row's per-seed difference to `baseline` (the run with the same seed, dataset and ref,
    and the same setting marks where the baseline has such a row): mean and 95% interval."""
    rows = []
    for (dataset, ref, metric), g in per_seed.groupby(["dataset", "ref", "metric"]):
        labels = set(g.method)
        for (method, alpha), s in g.groupby(["method", "alpha"]):
            mark = method[method.index(" "):] if " " in method else ""
            base = baseline + mark if baseline + mark in labels else baseline
            if method == base or base not in labels:
                continue
            base_values = g[(g.method == base) & (g.alpha == 1)].set_index("seed")["value"]
            mean, low, high, n = _paired(s.set_index("seed")["value"], base_values)
            if n:
                rows.append({"dataset": dataset, "method": method, "ref": ref, "alpha": alpha, "metric": metric,
                             "diff_vs": base, "diff_mean": mean, "diff_lo": low, "diff_hi": high, "diff_n": n})
    columns = ["dataset", "method", "ref", "alpha", "metric", "diff_vs", "diff_mean", "diff_lo", "diff_hi",
               "diff_n"]
    return pd.DataFrame(rows, columns=columns)


def share_floor(target: list[float], n: int) -> float:
    """The root mean square of bias_l2 over n i.i.d. draws with the target shares, √(Σ t(1 − t) / n):
    exact, where the mean bias_l2 has no closed form and is a little lower (Jensen)."""
    return math.sqrt(sum(t * (1 - t) for t in target) / n)


def bias_floors(records) -> list[dict]:
    """Per (dataset, ref, D_ref drawn stratified or not): the sampling floor of bias_l2 (N
    generated samples from a perfect model) and the reference-composition floor (a D_ref drawn
    i.i.d. from p_data: a method that learns D_ref's own composition stays this far off, in root
    mean square; None where D_ref holds exactly the target shares), from the records' sizes and
    target shares. Records without sizes (older runs) are left out."""
    seen = {}
    for r in records:
        if not r.sizes:
            continue
        stratified = r.sizes.get("ref_stratified")  # None: a record from before it was recorded
        stratified = None if stratified is None else bool(stratified)
        key = (r.config.dataset, r.config.ref, stratified)
        seen.setdefault(key, {"dataset": key[0], "ref": key[1], "samples": r.sizes["samples"],
                              "n_ref": r.sizes["ref"], "target": r.target_shares, "stratified": stratified})
    known = {key[:2] for key in seen if key[2] is not None}  # older records join the newer ones
    return [{**f, "sampling": share_floor(f["target"], f["samples"]),
             "composition": None if f["stratified"] is True else share_floor(f["target"], f["n_ref"])}
            for key, f in seen.items() if not (key[2] is None and key[:2] in known)]
