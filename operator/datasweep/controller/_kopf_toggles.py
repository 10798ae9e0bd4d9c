"""One waiter per toggle set in Kopf's start-up gate, instead of one per object.

Kopf holds every object's handlers until all indices are filled: each object of the initial listing adds a
toggle to one `ToggleSet` and drops it once indexed, and its worker then waits in `ToggleSet.wait_for(True)`
on the set's `asyncio.Condition`. Every add and drop notifies all waiters, and each re-checks the whole set:
with N objects listed that is O(N²) wake-ups. Measured on a namespace of 10,000 Artifacts (kopf 1.45): the
operator spent minutes at 100% of a core in `Condition.wait_for` before its first handler ran.

Here one task per set and state waits on the condition (woken per change, O(N) in all) and releases every
caller through one `asyncio.Event`. Same semantics: `wait_for(state)` returns once the set's state has been
`state`. Installed only where Kopf's class still looks as expected; otherwise Kopf's own code runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.aiokits import aiotoggles

_ORIGINAL = aiotoggles.ToggleSet.wait_for
_WAITERS: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


async def _shared_wait_for(self: Any, state: bool) -> None:
    wanted = bool(state)
    if self.is_on() == wanted:
        return
    events: dict[bool, asyncio.Event] = self.__dict__.setdefault("_datasweep_events", {})
    event = events.get(wanted)
    if event is None:
        event = events[wanted] = asyncio.Event()

        async def wait_once(event: asyncio.Event = event) -> None:
            try:
                await _ORIGINAL(self, wanted)
            finally:
                if events.get(wanted) is event:
                    del events[wanted]
                event.set()

        task = asyncio.get_running_loop().create_task(wait_once())
        _WAITERS.add(task)
        task.add_done_callback(_WAITERS.discard)
    await event.wait()


def install() -> bool:
    """Replace `ToggleSet.wait_for` (once). False when Kopf's internals are not the ones this was written for."""
    toggle_set = aiotoggles.ToggleSet
    if getattr(toggle_set, "wait_for", None) is _shared_wait_for:
        return True
    if not all(hasattr(toggle_set, name) for name in ("is_on", "make_toggle", "drop_toggle")):
        return False
    toggle_set.wait_for = _shared_wait_for  # type: ignore[method-assign]
    return True
