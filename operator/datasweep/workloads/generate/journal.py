"""The done-record journal: one fsynced jsonl line per answered request, so a restart never pays again.

Writes are group-committed (one fsync for every line that arrived meanwhile, in a thread) so that a
journal does not slow a fast API down; a line is durable once `drain()` returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        # A failed write (a full volume): raised by every later add() and drain(), so that no more answers are
        # paid for that cannot be recorded, and none is taken for durable.
        self._error: OSError | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_and_load()
        self._handle = path.open("a", encoding="utf-8")

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # a kill mid-append left a torn last line: drop it (its request is redone)
            keep = raw.rfind(b"\n") + 1
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())
            raw = raw[:keep]
        for line in raw.decode("utf-8").splitlines():
            if not line.strip():
                continue
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict) and "custom_id" in entry:
                    self.done[str(entry["custom_id"])] = entry

    def __contains__(self, custom_id: str) -> bool:
        return custom_id in self.done

    def add(self, entry: dict[str, Any]) -> None:
        """Record an answer; durable after the next `drain()` (or `add_now`)."""
        if self._error is not None:
            raise self._error
        custom_id = str(entry["custom_id"])
        if custom_id in self.done:
            return  # already recorded (a resumed batch is ingested again): nothing new
        self.done[custom_id] = entry
        self._pending.append(json.dumps(entry, ensure_ascii=False) + "\n")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def add_now(self, entry: dict[str, Any]) -> None:
        """Synchronous variant for callers outside an event loop."""
        custom_id = str(entry["custom_id"])
        if custom_id in self.done:
            return
        self.done[custom_id] = entry
        self._write([json.dumps(entry, ensure_ascii=False) + "\n"])

    def _write(self, lines: list[str]) -> None:
        self._handle.write("".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    async def _flush_loop(self) -> None:
        while self._pending:
            lines, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, lines)
            except OSError as error:
                self._error = error
                self._pending = []
                return

    async def drain(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        if self._error is not None:
            raise self._error
        if self._pending:
            lines, self._pending = self._pending, []
            self._write(lines)

    def close(self) -> None:
        if self._error is not None:
            # What the failed write left buffered would be written (and fail) again at close: drop it; the
            # torn line already on disk is repaired on the next load.
            with contextlib.suppress(OSError):
                self._handle.close()
            return
        self._handle.close()
