"""The progress bar of ``steadyflow run``: documents per second, ETA and where documents ended (by rung)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from steadyflow.flows.summary import RunSummary


def rung_counts(summary: RunSummary) -> str:
    """'triage: model:small 120, rules 3, quarantined 2' for each stage, in a stable order."""
    parts = []
    for stage, counts in summary.by_rung.items():
        parts.append(f"{stage}: " + ", ".join(f"{rung} {n}" for rung, n in sorted(counts.items())))
    return " | ".join(parts)


class BarProgress:
    """A rich progress bar on stderr; stdout stays free for ``--json`` and pipes."""

    def __init__(self, run_id: str) -> None:
        self.console = Console(stderr=True)
        if not self.console.is_terminal:  # a log file: print the last state once, at full width
            self.console = Console(stderr=True, width=240)
        self._bar = Progress(
            BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("{task.fields[rate]} docs/s"),
            TextColumn("ETA"), TimeRemainingColumn(compact=True), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("{task.fields[rungs]}"),
            console=self.console, transient=False, refresh_per_second=4,
        )
        self._task: TaskID | None = None
        self._run_id = run_id
        self._started = 0.0
        self._skipped = 0

    def start(self, total: int | None, skipped: int) -> None:
        """Show the bar; documents an earlier attempt completed count as done."""
        self._started, self._skipped = time.monotonic(), skipped
        note = f" (resuming: {skipped} already done)" if skipped else ""
        self.console.print(f"run {self._run_id}{note}; resume after a crash with --resume {self._run_id}")
        self._bar.start()
        self._task = self._bar.add_task(f"run {self._run_id}", total=total, completed=skipped, rate="-", rungs="")

    def update(self, summary: RunSummary) -> None:
        """Advance to the documents finished so far."""
        if self._task is None:
            return
        elapsed = max(time.monotonic() - self._started, 1e-6)
        fields: dict[str, Any] = {"rate": f"{summary.documents / elapsed:.1f}", "rungs": rung_counts(summary)}
        self._bar.update(self._task, completed=self._skipped + summary.documents, **fields)

    def stop(self) -> None:
        """Leave the final state of the bar on screen."""
        self._bar.stop()
