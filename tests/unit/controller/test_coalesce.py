"""Coalesced status writes: at most one write per interval, and a stop writes what is pending."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import pytest

from datasweep.controller.coalesce import Coalescer


def test_marks_within_the_interval_become_one_write_and_a_stop_writes_what_is_pending() -> None:
    written: list[Hashable] = []
    first = threading.Event()

    def flush(key: Hashable) -> None:
        written.append(key)
        first.set()

    coalescer = Coalescer(flush, interval=3600.0).start()
    coalescer.mark("batch")
    assert first.wait(5)
    for _ in range(10):  # due only an hour after the first write
        coalescer.mark("batch")
    coalescer.mark("experiment", delay=3600.0)
    assert written == ["batch"]
    coalescer.stop()  # a graceful stop does not wait out the interval: the last counts are written
    assert sorted(map(str, written)) == ["batch", "batch", "experiment"]
    assert coalescer.idle()


def test_a_failed_write_during_a_stop_is_not_retried_forever() -> None:
    attempts: list[Hashable] = []

    def flush(key: Hashable) -> None:
        attempts.append(key)
        raise RuntimeError("API server away")

    coalescer = Coalescer(flush, interval=3600.0, retry_delay=0.0)
    coalescer.mark("batch", delay=3600.0)
    coalescer.start()
    coalescer.stop(timeout=5)
    assert attempts == ["batch"]


def test_the_suite_runs_on_a_freshly_booted_clock() -> None:
    """tests/conftest.py: a fresh machine's clock, so 0.0-as-long-ago bugs fail here and not only on new CI."""
    assert time.monotonic() < 24 * 3600  # the session started with it near 1 s


def test_the_first_write_is_not_held_back_on_a_freshly_booted_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [5.0]  # up five seconds, interval an hour
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    coalescer = Coalescer(lambda key: None, interval=3600.0)
    coalescer.mark("experiment")
    assert coalescer._due == {"experiment": 5.0}
    coalescer._next()  # due now: taken at once
    coalescer.mark("experiment")
    assert coalescer._due == {"experiment": 3605.0}  # later writes keep the interval
