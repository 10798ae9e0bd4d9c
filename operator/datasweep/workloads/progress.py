"""Progress of a long step (requests, training steps) that people can watch: a rich bar on a terminal, and
plain log lines elsewhere (a Job's `kubectl logs`, `datasweep run`'s worker logs), one every
$DATASWEEP_PROGRESS_INTERVAL seconds (default 15) and one at the end, never control characters.

A worker that runs its stage inside `recording_progress(its output directory)` also keeps the stage's progress
file there (store/progress.py), rewritten at most every $DATASWEEP_PROGRESS_FILE_INTERVAL seconds (default 5)
and at the end of each phase: what the operator shows in the Artifact's status and `datasweep watch` reads."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from datasweep.store.progress import ProgressReport, RequestReuseCounts, now_iso, write_progress

INTERVAL_ENV = "DATASWEEP_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 15.0
FILE_INTERVAL_ENV = "DATASWEEP_PROGRESS_FILE_INTERVAL"
DEFAULT_FILE_INTERVAL_S = 5.0
LOG = logging.getLogger("datasweep.progress")


def _interval(name: str = INTERVAL_ENV, default: float = DEFAULT_INTERVAL_S) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def _add(carried: Any, value: Any) -> Any:
    """A sum over phases that stays None while no phase reported the field (an unpriced model has no cost)."""
    if value is None:
        return carried
    return value if carried is None else carried + value


class ProgressFile:
    """The stage's progress file: the Progress of each phase of one worker process (generate, then validate),
    summed, so that done, tokens and dollars never go backwards when a phase ends and the next one starts."""

    def __init__(self, directory: Path, interval: float) -> None:
        self.directory = directory
        self.interval = interval
        self.planned = 0  # units of the whole stage over all its phases, when the worker knows them
        self.done = self.total = 0  # of the phases that ended
        self.tokens: int | None = None
        self.cost: float | None = None
        self.request_reuse: RequestReuseCounts | None = None  # a generate worker's, from its request store lookup
        self.last_write = -math.inf
        self.warned = False

    def carry(self, done: int, total: int, tokens: int | None = None, cost: float | None = None) -> None:
        """A phase ended (or was found done by a resumed worker): its units and spending count from now on."""
        self.done += done
        self.total += total
        self.tokens, self.cost = _add(self.tokens, tokens), _add(self.cost, cost)

    def write(self, report: ProgressReport) -> None:
        try:
            write_progress(self.directory, report)
        except OSError as exc:  # progress is for people: a full or flaky volume must not fail the work
            if not self.warned:
                self.warned = True
                LOG.warning("progress file not written in %s: %s", self.directory, exc)

    def report(self, progress: Progress, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_write < self.interval:
            return
        self.last_write = now
        done = self.done + progress.done
        total = max(self.planned, self.total + progress.total)
        fields = progress.fields
        tokens, cost = _add(self.tokens, fields.get("tokens")), _add(self.cost, fields.get("cost"))
        loss = fields.get("loss", fields.get("query_loss"))
        elapsed = now - progress.started
        rate = (progress.done - progress.initial) / elapsed if elapsed > 0 else 0.0
        eta = 0.0 if done >= total else (round((total - done) / rate, 1) if rate > 0 else None)
        report = ProgressReport(
            phase=progress.label,
            unit=progress.unit,
            done=done,
            total=total,
            tokens=tokens,
            cost_usd=round(cost, 6) if cost is not None else None,
            loss=float(loss) if isinstance(loss, int | float) else None,
            eta_seconds=eta,
            updated_at=now_iso(),
            request_reuse=self.request_reuse,
        )
        self.write(report)
        if final:
            self.carry(progress.done, progress.total, fields.get("tokens"), fields.get("cost"))


_FILE: ProgressFile | None = None


@contextlib.contextmanager
def recording_progress(directory: Path) -> Iterator[ProgressFile]:
    """While the block runs, every Progress of this process keeps the stage's progress file in `directory` (a
    worker's output directory)."""
    global _FILE
    previous = _FILE
    _FILE = ProgressFile(directory, _interval(FILE_INTERVAL_ENV, DEFAULT_FILE_INTERVAL_S))
    try:
        yield _FILE
    finally:
        _FILE = previous


def plan_progress(total: int) -> None:
    """The stage's units over all its phases (generate + validate requests), known before the first starts."""
    if _FILE is not None:
        _FILE.planned = total


def report_request_reuse(reuse: RequestReuseCounts, phase: str, done: int) -> None:
    """A generate worker's request store lookup, written at once (before it sends anything) and kept in every
    later report; `done`: the phase's requests answered so far."""
    if _FILE is None:
        return
    _FILE.request_reuse = reuse
    _FILE.write(
        ProgressReport(
            phase=phase,
            unit="requests",
            done=_FILE.done + done,
            total=max(_FILE.planned, _FILE.total),
            tokens=_FILE.tokens,
            cost_usd=round(_FILE.cost, 6) if _FILE.cost is not None else None,
            updated_at=now_iso(),
            request_reuse=reuse,
        )
    )


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
        if _FILE is not None:
            _FILE.report(self)
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
        if _FILE is not None:
            _FILE.report(self, final=True)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        print(self.line(), file=self.stream, flush=True)
