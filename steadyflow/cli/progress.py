"""Progress of ``steadyflow run``: documents done, rate, ETA and where documents ended (by rung).

On a terminal it is a rich bar. Anywhere else (a log file, a pipe, a CI console) it is plain
lines on stderr at a steady interval (``STEADYFLOW_PROGRESS_INTERVAL`` seconds, default 10),
from a timer thread: a slow model shows as a line saying so, not as silence until a chunk ends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from steadyflow.runner.summary import RunSummary

INTERVAL_ENV = "STEADYFLOW_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0


def rung_counts(summary: RunSummary) -> str:
    """'triage: model:small 120, rules 3, quarantined 2' for each stage, in a stable order."""
    parts = []
    for stage, counts in list(summary.by_rung.items()):
        parts.append(f"{stage}: " + ", ".join(f"{rung} {n}" for rung, n in sorted(counts.items())))
    return " | ".join(parts)


def _significant(value: float) -> str:
    """Two significant digits below 10 (0.045, 2.7), whole numbers above."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def rate_text(per_s: float) -> str:
    """'12 docs/s', '2.7 docs/s', '0.045 docs/s (2.7 docs/min)': a low rate never shows as 0.0."""
    if per_s <= 0:
        return "0 docs/s"
    if per_s >= 1:
        return f"{_significant(per_s)} docs/s"
    per_min = per_s * 60
    slower = f"{_significant(per_min)} docs/min" if per_min >= 1 else f"{_significant(per_min * 60)} docs/h"
    return f"{_significant(per_s)} docs/s ({slower})"


def duration_text(seconds: float) -> str:
    """'45s', '12m05s', '3h07m'."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_text(done: int, total: int | None, elapsed_s: float) -> str:
    """Time left at the rate so far; '-' until a document has finished or when the total is unknown."""
    if total is None or done <= 0 or elapsed_s <= 0:
        return "-"
    return duration_text(max(0, total - done) * elapsed_s / done)


def interval_s() -> float:
    """Seconds between progress lines outside a terminal (``STEADYFLOW_PROGRESS_INTERVAL``; bad values: the default)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


class LineProgress:
    """Plain progress lines on a stream at a steady interval, from a daemon thread (the event loop may be busy)."""

    def __init__(self, run_id: str, stream: TextIO, every_s: float) -> None:
        self._run_id, self._stream, self._every = run_id, stream, every_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="steadyflow-progress", daemon=True)
        self._started = 0.0
        self._total: int | None = None
        self._skipped = self._done = 0
        self._rungs = ""

    def start(self, total: int | None, skipped: int) -> None:
        """Start the clock and the timer; the first line comes after one interval."""
        with self._lock:
            self._started, self._total, self._skipped = time.monotonic(), total, skipped
        self._thread.start()

    def update(self, summary: RunSummary, finished: int) -> None:
        """Take the counts now (the timer thread never reads ``summary`` while the batch changes it)."""
        rungs = rung_counts(summary)
        with self._lock:
            self._done, self._rungs = finished, rungs

    def line(self) -> str:
        """'progress: 12/70 documents, 0.045 docs/s (2.7 docs/min), ETA 21m29s, elapsed 4m27s | triage: model:m 12'."""
        with self._lock:
            elapsed = time.monotonic() - self._started
            done, total, skipped, rungs = self._done, self._total, self._skipped, self._rungs
        count = f"{skipped + done}/{total}" if total is not None else f"{skipped + done}"
        left = None if total is None else total - skipped
        text = (
            f"progress {self._run_id}: {count} documents, {rate_text(done / max(elapsed, 1e-6))}, "
            f"ETA {eta_text(done, left, elapsed)}, elapsed {duration_text(elapsed)}"
        )
        return text + (f" | {rungs}" if rungs else "")

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            self._write()

    def _write(self) -> None:
        try:
            self._stream.write(self.line() + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed or full log must not stop the run
            pass

    def stop(self) -> None:
        """Stop the timer and write the final state once."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._write()


class BarProgress:
    """Progress on stderr (stdout stays free for ``--json`` and pipes).

    A rich bar on a terminal, plain lines elsewhere.
    """

    def __init__(self, run_id: str) -> None:
        self.console = Console(stderr=True)
        self._run_id = run_id
        self._lines = None if self.console.is_terminal else LineProgress(run_id, sys.stderr, interval_s())
        self._bar = Progress(
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[rungs]}"),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self._task: TaskID | None = None
        self._started = 0.0
        self._skipped = 0
        self._total: int | None = None

    def start(self, total: int | None, skipped: int) -> None:
        """Show the bar (or start the lines); documents an earlier attempt completed count as done."""
        self._started, self._skipped, self._total = time.monotonic(), skipped, total
        note = f" (resuming: {skipped} already done)" if skipped else ""
        self.console.print(f"run {self._run_id}{note}; resume after a crash with --resume {self._run_id}")
        if self._lines is not None:
            self._lines.start(total, skipped)
            return
        self._bar.start()
        self._task = self._bar.add_task(
            f"run {self._run_id}", total=total, completed=skipped, rate="-", eta="-", rungs=""
        )

    def update(self, summary: RunSummary, finished: int) -> None:
        """``finished`` documents of this attempt are done (each counted as it ends, not per chunk)."""
        if self._lines is not None:
            self._lines.update(summary, finished)
            return
        if self._task is None:
            return
        elapsed = max(time.monotonic() - self._started, 1e-6)
        left = None if self._total is None else self._total - self._skipped
        fields: dict[str, Any] = {
            "rate": rate_text(finished / elapsed),
            "eta": eta_text(finished, left, elapsed),
            "rungs": rung_counts(summary),
        }
        self._bar.update(self._task, completed=self._skipped + finished, **fields)

    def stop(self) -> None:
        """Leave the final state on screen (or write the last line)."""
        if self._lines is not None:
            self._lines.stop()
            return
        self._bar.stop()
