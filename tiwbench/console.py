"""Messages and progress bars on stderr; under torchrun only process 0 shows them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
_live: list[Progress] = []  # the progress display in use, if any: bars nest into it


def is_main_process() -> bool:
    """Process 0 of a torchrun job (or a plain process); read from the environment, so that it
    holds before the process group exists."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    """Print a message (rich markup allowed) on stderr, from process 0 only."""
    if is_main_process():
        console.print(message)


def warn(message: str) -> None:
    say(f"[yellow]warning:[/yellow] {message}")


def print_main_tables(long, results, underfit: dict | None = None) -> None:
    """`tiwbench table` in a terminal: one compact rich table per dataset and reference size
    (results.main_table), each followed by its under-fitted rows (results.underfit_rows), then
    where the full tables and the report are."""
    from rich.table import Table

    from .results import main_table, underfit_message

    out = Console() if console.is_terminal else Console(width=200)  # piped: no wrapping
    for dataset in sorted(set(long.dataset)):
        for ref in sorted(set(long[long.dataset == dataset].ref)):
            cells, best = main_table(long, dataset, ref)
            n = int(long[(long.dataset == dataset) & (long.ref == ref)]["n"].max())
            out.print(f"[bold]{dataset}, ref {ref:g}[/bold] — mean ± std over {n} seed{'s' * (n > 1)}; "
                      f"{'bold' if out.is_terminal else '*'}: best or tied (paired by seed)")
            table = Table()
            table.add_column("method", no_wrap=True)
            for metric in cells.columns:
                table.add_column(metric, justify="right", no_wrap=True)
            for row in cells.index:
                marked = [(f"[bold]{v}[/bold]" if out.is_terminal else f"{v} *") if best.loc[row, c] else v
                          for c, v in cells.loc[row].items()]
                table.add_row(row, *marked)
            out.print(table)
            flagged = (underfit or {}).get((dataset, ref))
            if flagged:
                out.print(f"[yellow]{underfit_message(flagged)}[/yellow]")
    from . import DEFAULT_RESULTS

    where = f" --results {results}" if results != DEFAULT_RESULTS else ""
    out.print(f"Lower is better except precision and recall. Every metric, with paired differences and "
              f"floors: tiwbench table{where} --format md (or latex, csv); figures and a page: "
              f"tiwbench report --dataset NAME{where}", highlight=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator:
    """A rich progress bar; yields `update(completed)`. Inside another bar (a sweep), it is a
    transient row of the same display, since rich allows one live display at a time. Processes
    other than 0 get a bar that shows nothing."""
    if not is_main_process():
        yield lambda done, **fields: None
        return
    if _live:
        progress = _live[-1]
        task = progress.add_task(description, total=total)
        try:
            yield lambda done, **fields: progress.update(task, completed=done, **fields)
        finally:
            progress.remove_task(task)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        _live.append(progress)
        try:
            task = progress.add_task(description, total=total)
            yield lambda done, **fields: progress.update(task, completed=done, **fields)
        finally:
            _live.pop()
