"""Coalesced status writes: mark an object dirty as often as you like; it is written at most once per interval.

One worker thread writes, so at most one patch per object is in flight and they never overtake each other;
the write computes the status when it runs (from Kopf's indices), so the latest state wins and a stale
snapshot is never written last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

LOG = logging.getLogger("datasweep.coalesce")


class Coalescer:
    def __init__(self, flush: Callable[[Hashable], None], interval: float, retry_delay: float = 5.0) -> None:
        self._flush = flush
        self._interval = interval
        self._retry_delay = retry_delay
        self._due: dict[Hashable, float] = {}
        self._last: dict[Hashable, float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="datasweep-status", daemon=True)

    def start(self) -> Coalescer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending now (a graceful stop leaves statuses current), then end the writer."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def mark(self, key: Hashable, delay: float = 0.0) -> None:
        """Write `key` soon: not before `interval` after its last write; a pending mark is kept, not repeated."""
        with self._cond:
            earliest = time.monotonic() + delay
            last = self._last.get(key)
            if last is not None:  # never written: no lower bound (monotonic time counts from boot, not from 0)
                earliest = max(earliest, last + self._interval)
            if key in self._due and self._due[key] <= earliest:
                return
            self._due[key] = earliest
            self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._due and not self._busy

    def _next(self) -> Hashable | None:
        with self._cond:
            while True:
                if self._due:
                    key, due = min(self._due.items(), key=lambda item: item[1])
                    wait = due - time.monotonic()
                    if wait <= 0 or self._stopped:
                        del self._due[key]
                        self._last[key] = time.monotonic()
                        self._busy = True
                        return key
                    self._cond.wait(wait)
                elif self._stopped:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (key := self._next()) is not None:
            try:
                self._flush(key)
            except Exception:  # the API server may be away for a moment: write again later
                LOG.exception("status of %s not written; retrying in %.0fs", key, self._retry_delay)
                if not self._stopped:  # stopping: the next operator recomputes it at start-up
                    self.mark(key, delay=self._retry_delay)
            finally:
                with self._cond:
                    self._busy = False
