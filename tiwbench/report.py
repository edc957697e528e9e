"""One self-contained HTML page per dataset: tables, figures (inlined), commands and versions."""

from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from . import DEFAULT_RESULTS, default_out
from .checkpoint import write_text
from .errors import TiwbenchError
from .record import RECORD_NAME, Record, load_records
from .results import (
    BASELINE,
    CELLS_NOTE,
    RATIO_ERRORS,
    delta_heading,
    long_table,
    main_table,
    metric_heading,
    of_dataset,
    ratio_error_by_kind,
    ratio_error_markdown,
    ratio_error_table,
    ratio_title,
    ref_heading,
    render,
    reproduce_commands,
    table_notes,
    wide_tables,
)

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
code,pre{background:#f5f5f5;padding:.2em .4em}pre{white-space:pre-wrap}"""


def _folded(title: str, parts: list[str]) -> str:
    """A section the reader opens on demand."""
    return f"<details><summary><b>{html.escape(title)}</b></summary>{''.join(parts)}</details>"


def _table_html(cells: pd.DataFrame, best: pd.DataFrame | None = None, ref: float | None = None) -> str:
    """A wide table (reference sizes as columns), or with `ref`, the main table (metrics as columns)."""
    head = "".join(f"<th>{html.escape(str(c)) if ref is not None else f'ref {c:g}'}</th>" for c in cells.columns)

    def cell(row, c, v):
        bold = best is not None and best.loc[row, c]
        return f"<td>{'<b>' if bold else ''}{html.escape(v)}{'</b>' if bold else ''}</td>"

    body = "".join("<tr><td>" + html.escape(str(row)) + "</td>"
                   + "".join(cell(row, c, v) for c, v in cells.loc[row].items()) + "</tr>" for row in cells.index)
    return f"<table><tr><th>method</th>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def render_report(records: list[Record], long: pd.DataFrame, ratio: pd.DataFrame | None, dataset: str,
                  figures: list[Path], commands: list[str], summary: str = "", main_figures: int = 1) -> str:
    """The page's HTML; figures are embedded as data URIs so the file stands alone. `ratio` is
    the ratio-error table, if the dataset has one; `commands` reproduce the runs, then this page.
    The first `main_figures` figures come before the tables (bias and quality against reference
    size), the others folded after them."""
    runs = of_dataset(records, dataset)
    if not runs:
        raise TiwbenchError(f"no finished runs for dataset {dataset!r}")
    versions = sorted({tuple(sorted(r.versions.items())) for r in runs})
    devices = sorted({r.device for r in runs})
    parts = [f"<h1>tiwbench — {html.escape(dataset)}</h1>",
             f"<p>{len(runs)} finished runs; the commands that made them are at the end.</p>"]
    if summary:  # the author's reading, paragraph by paragraph, as text
        parts += ["<h2>What the numbers say</h2>"] + [f"<p>{html.escape(p)}</p>" for p in summary.split("\n\n")]
    parts += [_image(p) for p in figures[:main_figures]]
    for ref in sorted(set(long[long.dataset == dataset].ref)):
        cells, best = main_table(long, dataset, ref)
        parts += [f"<h2>Main metrics at ref {ref:g}</h2>",
                  "<p>Mean ± std over seeds; bold: the lowest mean and every row tied with it (paired by "
                  "seed). Lower is better except precision and recall.</p>", _table_html(cells, best, ref)]
    detail = [f"<p>{html.escape(CELLS_NOTE)}</p>"]
    notes = table_notes(records, dataset)
    for _, metric, cells, best, delta in wide_tables(long[long.dataset == dataset]):
        detail += [f"<h3>{html.escape(metric_heading(metric))}</h3>", _table_html(cells, best)]
        if (dataset, metric) in notes:
            detail.append(f"<p>{html.escape(notes[(dataset, metric)])}</p>")
        if delta is not None:
            detail += [f"<p>{html.escape(delta_heading(long, dataset, metric))}</p>", _table_html(delta)]
    parts.append(_folded("Every metric, with paired differences and floors", detail))
    if ratio is not None:
        errors = ["<p>Against the exact ratio, mean over seeds: the error of log r, and for "
                  "time-dependent ratios the error of TIW-DSM's correction σ²∇log r beside the "
                  "exact correction's RMS size.</p>"]
        for value, what in RATIO_ERRORS.items():
            for kind, sub in ratio_error_by_kind(ratio, value):
                head = "".join(f"<th>{html.escape(ref_heading(r))}</th>" for r in sub.columns)
                body = "".join(f"<tr><td>{s:.3g}</td>" + "".join(f"<td>{v:.3g}</td>" for v in row) + "</tr>"
                               for s, row in zip(sub.index, sub.to_numpy()))
                errors += [f"<h3>{html.escape(ratio_title(kind))}: {html.escape(what)}</h3>",
                           f"<table><tr><th>σ</th>{head}</tr>{body}</table>"]
        parts.append(_folded("Density-ratio error by σ", errors))
    parts.append(_folded("More figures", [_image(p) for p in figures[main_figures:]]))
    parts.append(_folded("How these runs were made", [
        "<p>Reproduce the runs, then this page:</p>", f"<pre>{html.escape(chr(10).join(commands))}</pre>",
        "<ul>" + "".join(f"<li>{html.escape(', '.join(f'{k} {v}' for k, v in v_))}</li>" for v_ in versions)
        + "</ul>", f"<p>devices: {html.escape(', '.join(devices))}</p>"]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tiwbench {html.escape(dataset)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def feature_space_note(records: list[Record], dataset: str) -> str:
    """Which feature space each Fréchet distance of this dataset was computed in."""
    spaces = sorted({r.feature_space for r in of_dataset(records, dataset)})
    says = {"data": "`fd_data` is the Fréchet distance in data space (the raw coordinates), not FID"}
    parts = [says.get(s, f"`fd_{s}` is the Fréchet distance in the penultimate layer of the attribute "
                          f"classifier that tiwbench trains for this dataset, not FID") for s in spaces]
    names = {"eval": "the evaluation set", "train": "the balanced training set"}
    protocols = sorted({(p["samples"], p["reference"], p["reference_size"]) for r in of_dataset(records, dataset)
                        if (p := r.fid_protocol)})
    if any("fid" in r.metrics for r in of_dataset(records, dataset)):
        parts.append("`fid` uses clean-fid's Inception features" + "".join(
            f"; {n:,} samples against the statistics of {names.get(ref, ref)} ({size:,} images)"
            for n, ref, size in protocols))
    return "; ".join(parts) + "."


def _stale_record_of(path: Path, dataset: str) -> bool:
    """Whether `path` is a run folder of `dataset` that a report may remove: a real folder (not a
    link) holding only a readable record of that dataset and its samples figure. Anything else
    (other datasets' runs, caches, unfinished runs, files of the user's) is never deleted."""
    if path.is_symlink() or not path.is_dir():
        return False
    if {p.name for p in path.iterdir()} - {RECORD_NAME, "samples.png"}:
        return False
    try:
        return Record.read(path / RECORD_NAME).config.dataset == dataset
    except TiwbenchError:
        return False


def write_records(records: list[Record], dataset: str, out: Path) -> Path:
    """Copy the dataset's run records (metrics.json: config, metrics, ratio-error curves; and the
    samples.png of the runs the samples figure shows, where they have one, so that a report made
    from the records draws it too) to OUT/runs/<run id>/, the layout `--results` reads, and remove
    the records of this dataset that a previous report wrote and that are no longer among them, so
    that the committed records and tables cannot disagree (nothing else in OUT/runs is touched)."""
    from .plot import SAMPLES_NAME, sample_grid_runs

    folder = out / "runs"
    keep = {r.run_id: r for r in of_dataset(records, dataset)}
    if folder.is_dir():
        for old in folder.iterdir():
            if old.name not in keep and _stale_record_of(old, dataset):
                shutil.rmtree(old)
    shown = {r.run_id for _, r in sample_grid_runs(records, dataset)}
    for run_id, record in keep.items():
        source = record.folder / RECORD_NAME
        target = folder / run_id / RECORD_NAME
        if not (target.exists() and target.samefile(source)):
            write_text(target, source.read_text())
        samples = record.folder / SAMPLES_NAME
        if run_id in shown and samples.exists() and not (folder / run_id / SAMPLES_NAME).exists():
            shutil.copyfile(samples, folder / run_id / SAMPLES_NAME)
    return folder


def write_report(results: Path, dataset: str, out: Path, records_out: bool = True,
                 baseline: str = BASELINE, summary: Path | None = None) -> list[Path]:
    """Everything a dataset's results folder holds: table.md, table.csv, figures, report.html and
    (with `records_out`) the run records behind them under OUT/runs. `summary` (Markdown) closes
    table.md and the page under "What the numbers say"."""
    from .plot import main_figures, more_figures

    summary_text = read_summary(summary)
    if out.exists() and not out.is_dir():
        raise TiwbenchError(f"--out {out} is a file, not a folder")
    records = load_records(results)
    long = long_table(records, dataset, baseline)
    folder = "" if results == DEFAULT_RESULTS else f" --results {results}"
    sweeps = [c + folder for c in reproduce_commands(records, dataset)]
    report = (f"tiwbench report --dataset {dataset}{folder}"
              + ("" if out == default_out(dataset) else f" --out {out}")
              + ("" if baseline == BASELINE else f" --baseline {baseline}")
              + (f" --summary {summary}" if summary is not None else ""))
    listed = "\n".join(f"    {c}" for c in sweeps)
    md = (f"# {dataset}\n\nMade by `{report}` from the runs of\n\n"
          f"{listed}\n\n{CELLS_NOTE}\n\n"
          f"{feature_space_note(records, dataset)}\n\n" + render(long, "md", table_notes(records, dataset)))
    try:
        ratio = ratio_error_table(records, dataset)
        md += "\n" + ratio_error_markdown(ratio)
    except TiwbenchError:  # no trained ratio on a dataset with an exact one
        ratio = None
    if summary_text:
        md += f"\n## What the numbers say\n\n{summary_text}\n"
    try:  # everything is made in a staging folder, then renamed into OUT: all of it or nothing
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    except OSError as e:
        raise TiwbenchError(f"cannot write into {out}: {e.strerror or e}") from None
    try:
        write_text(stage / "table.md", md)
        write_text(stage / "table.csv", render(long, "csv"))
        main = main_figures(records, long, dataset, stage)
        figures = main + more_figures(records, long, dataset, stage)
        write_text(stage / "report.html", render_report(records, long, ratio, dataset, figures,
                                                        sweeps + [report], summary_text, len(main)))
        runs = [write_records(records, dataset, out)] if records_out else []  # the page's sources first
        staged = [stage / "table.md", stage / "table.csv", *figures, stage / "report.html"]
        for path in staged:
            os.replace(path, out / path.relative_to(stage))
    except OSError as e:
        raise TiwbenchError(f"cannot write the report into {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / p.relative_to(stage) for p in staged] + runs


SUMMARY_MAX_BYTES = 1_000_000


def read_summary(summary: Path | None) -> str:
    """`--summary`: a regular UTF-8 text file of at most a megabyte (a device or a binary file is
    refused at once, not read forever or pasted into the page)."""
    if summary is None:
        return ""
    try:
        if not summary.is_file():
            raise TiwbenchError(f"--summary {summary} is not a regular file")
        if summary.stat().st_size > SUMMARY_MAX_BYTES:
            raise TiwbenchError(f"--summary {summary} is larger than {SUMMARY_MAX_BYTES:,} bytes")
        data = summary.read_bytes()
    except OSError as e:
        raise TiwbenchError(f"--summary: cannot read {summary}: {e.strerror}") from None
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TiwbenchError(f"--summary {summary} is not a UTF-8 text file") from None
