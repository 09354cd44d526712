"""The progress display of `evalfleet run` and `retry` on a terminal: samples done, queued (the
submitter feeds a window at a time while workers run), the rate and the errors."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.runs import RunReport


class RunProgress:
    """A context manager; `enqueued(n)` and `update(report)` are safe to call when disabled (and
    from the feeding thread). One bar: samples done out of the total, with how many are queued
    (samples go out a window at a time while results come in), the rate and the errors."""

    def __init__(self, console: Console, enabled: bool, total: int | None = None, label: str = "run"):
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[queued]} queued"),
            TextColumn("{task.fields[rate]:.0f} samples/s"), TextColumn("[red]{task.fields[errors]} errors"),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.console = console
        self._stopped = False
        self.total = total
        self.label = label
        self.task: TaskID | None = None
        self.sent = 0
        self.done = 0

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.enabled and not self._stopped:
            self._stopped = True
            self.progress.__exit__(None, None, None)

    def say(self, message: str) -> None:
        """A line on the console above the bar (the bar itself stays)."""
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def enqueued(self, sent: int) -> None:
        """Samples handed to the broker (or served from the result store) so far."""
        self.sent = sent
        if self.enabled:
            self._show(self.label, self.total)

    def update(self, report: RunReport) -> None:
        self.done = report.done
        if self.enabled:
            self._show(report.evaluation, report.total, report.errors)

    def _show(self, description: str, total: int | None, errors: int | None = None) -> None:
        if self.task is None:
            self.task = self.progress.add_task(description, total=total, rate=0.0, errors=0, queued=0)
        elapsed = next((t.elapsed or 0.0 for t in self.progress.tasks if t.id == self.task), 0.0)
        fields = {"queued": max(0, self.sent - self.done), "rate": self.done / elapsed if elapsed else 0.0}
        if errors is not None:
            fields["errors"] = errors
        self.progress.update(self.task, completed=self.done, total=total, description=description, **fields)
