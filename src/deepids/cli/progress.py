"""Progress bars of the command, drawn on stderr from the callbacks the library calls.

The library never draws: the training loop calls `progress(report)` after each epoch, the
scorer calls `progress(done, total)` after each chunk. These context managers yield such a
callback (or None when the bar is off) and own the rich bar around it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from deepids.cli.render import err


@contextmanager
def epoch_bar(enabled: bool):
    """A bar per training task, fed by the training loop's `progress(report)` after each epoch
    (see deepids.models.training); yields that callback, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                   TextColumn("{task.completed}/{task.total} epochs"), TextColumn("{task.fields[info]}", markup=False),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)
    tasks: dict[str, int] = {}

    def progress(report) -> None:
        if report.description not in tasks:
            tasks[report.description] = bar.add_task(report.description, total=report.epochs, info="")
        bar.update(tasks[report.description], completed=report.epoch, total=report.epochs,
                   info=f"loss {report.train_loss:.4f}  val {report.val_loss:.4f}  best {report.best_val_loss:.4f}")

    with bar:
        yield progress


@contextmanager
def record_bar(enabled: bool, what: str = "scoring", unit: str = "records"):
    """A spinner (a bar when the total is known) fed by `progress(done, total)`: records (or files,
    ...: `unit`) done so far and, when the reader can estimate it, about how many there are in all."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn(what, markup=False), BarColumn(),
                   TextColumn("{task.completed:,} " + unit, markup=False), TextColumn("{task.fields[rate]}", markup=False),
                   TimeElapsedColumn(), console=err, transient=True)
    started = time.perf_counter()
    task = bar.add_task(what, total=None, rate="")

    def progress(done: int, total: int | None = None) -> None:
        bar.update(task, completed=done, total=max(total, done) if total else None,
                   rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f}/s")

    with bar:
        yield progress
