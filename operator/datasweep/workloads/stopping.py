"""Ending cleanly on SIGTERM: how a suspended or deleted Job, a drained node or `datasweep run`'s escalation
stops a worker (the Job controller sends SIGTERM, then SIGKILL after the pod's grace period).

A worker is PID 1 of its container, where a signal with no handler is ignored: without one, SIGTERM did nothing
and the worker went on paying for requests until the SIGKILL, then died mid-write. Every worker installs
`raise_on_sigterm` (the `datasweep worker` group): SIGTERM raises `Stopped`, a SystemExit with code 143, so
`finally` blocks run and atomic writes clean up, and no `except Exception` swallows it. An asyncio worker runs
its work under `run_until_stopped`: SIGTERM cancels it, its `finally` blocks drain the journals, then `Stopped`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
_received: list[int] = []  # the stop signals this process received, first first


class Stopped(SystemExit):
    """The worker was asked to stop (SIGTERM): exit 128 + the signal number, after cleaning up."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def received() -> int | None:
    """The stop signal this process received, if any (e.g. the Batch API backend cancels its batches then)."""
    return _received[0] if _received else None


def _raise(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Stopped(signum)


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises `Stopped` in the main thread."""
    signal.signal(signal.SIGTERM, _raise)


async def run_until_stopped(work: Coroutine[Any, Any, T]) -> T:
    """Await `work` as a task that SIGTERM cancels; once its cleanup ran, raise `Stopped`. (Signals reach the
    main thread only: elsewhere `work` is awaited as it is.)"""
    if threading.current_thread() is not threading.main_thread():
        return await work
    loop = asyncio.get_running_loop()
    _received.clear()
    task = loop.create_task(work)
    previous = signal.getsignal(signal.SIGTERM)

    def stop() -> None:
        _received.append(signal.SIGTERM)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await task
    except asyncio.CancelledError:
        if received() is not None and task.cancelled():
            raise Stopped(signal.SIGTERM) from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if previous is not None:  # None: installed outside Python
            signal.signal(signal.SIGTERM, previous)
