"""The progress display of `evalfleet run` and `retry` on a terminal: samples enqueued while the
submitter streams the datasets, then samples done, the rate and the errors while workers run."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.runs import RunReport


class RunProgress:
    """A context manager; `enqueued(n)` and `update(report)` are safe to call when disabled."""

    def __init__(self, console: Console, enabled: bool, total: int | None = None, label: str = "run"):
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f} samples/s"), TextColumn("[red]{task.fields[errors]} errors"),
            TimeElapsedColumn(), console=console, transient=True,
        )
        self.console = console
        self._stopped = False
        self.total = total
        self.label = label
        self.submitting: TaskID | None = None
        self.running: TaskID | None = None

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
        if not self.enabled:
            return
        if self.submitting is None:
            self.submitting = self.progress.add_task(f"{self.label}: submitting", total=self.total, rate=0.0,
                                                     errors=0)
        elapsed = self._elapsed(self.submitting)
        self.progress.update(self.submitting, completed=sent, rate=sent / elapsed if elapsed else 0.0)

    def update(self, report: RunReport) -> None:
        if not self.enabled:
            return
        if self.running is None:
            if self.submitting is not None:
                self.progress.remove_task(self.submitting)
            self.running = self.progress.add_task(report.evaluation, total=report.total, rate=0.0, errors=0)
        elapsed = self._elapsed(self.running)
        self.progress.update(self.running, completed=report.done, errors=report.errors,
                             rate=report.done / elapsed if elapsed else 0.0)

    def _elapsed(self, task_id: TaskID) -> float:
        return next((t.elapsed or 0.0 for t in self.progress.tasks if t.id == task_id), 0.0)
