"""Coalesced status writes: at most one write per interval, and a stop writes what is pending."""

from __future__ import annotations

import threading
from collections.abc import Hashable

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
