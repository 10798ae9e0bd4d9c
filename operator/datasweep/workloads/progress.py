"""Progress of a long step (requests, training steps) that people can watch: a rich bar on a terminal, and
plain log lines elsewhere (a Job's `kubectl logs`, `datasweep run`'s worker logs), one every
$DATASWEEP_PROGRESS_INTERVAL seconds (default 15) and one at the end, never control characters."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

INTERVAL_ENV = "DATASWEEP_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 15.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _field(name: str, value: Any) -> str:
    if name == "cost" and isinstance(value, int | float):
        return f"${value:.4f}"
    if name == "tokens" and isinstance(value, int):
        return f"{value:,} tokens"
    if isinstance(value, float):
        return f"{name} {value:.4f}"
    return f"{name} {value}"


class Progress:
    """`update(done, loss=..., tokens=..., cost=...)` as work finishes; `close()` at the end."""

    def __init__(self, label: str, total: int, unit: str, *, initial: int = 0, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.initial = initial
        self.done = initial
        self.fields: dict[str, Any] = {}
        self.stream = stream or sys.stderr
        self.interval = _interval()
        self.started = time.monotonic()
        self.last_line = -1.0
        self.closed = False
        self._bar: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task(label, total=total, completed=initial, status="")
            self._bar.start()

    def status(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = duration(left / rate) if rate > 0 else "?"
        parts = [f"{rate:.2f} {self.unit}/s", f"ETA {eta}" if left > 0 else f"took {duration(elapsed)}"]
        parts += [_field(k, v) for k, v in self.fields.items() if v is not None]
        return ", ".join(parts)

    def line(self) -> str:
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({self.status()})"

    def update(self, done: int, **fields: Any) -> None:
        self.done = done
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=self.status())
            return
        now = time.monotonic()
        # The last line is close()'s, once, with the final fields (a watcher and the final tally may both report
        # done == total).
        if done < self.total and (self.last_line < 0 or now - self.last_line >= self.interval):
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """The final line (also where a failure or an interrupt stopped it); a second close says nothing."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        print(self.line(), file=self.stream, flush=True)
