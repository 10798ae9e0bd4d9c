"""Suspend and cancel: whether an Artifact may have a Job running, from the Experiments that consume it. Pure.

An Artifact runs for its consumers. It stops (no Job starts; a Job in flight is suspended) when it has at least
one consumer and none of them is running: each is suspended (`spec.suspend: true`) or deleted. An Artifact with
no recorded consumer (made by hand) is never stopped here, and one that a running Experiment still consumes
keeps running: suspending or deleting one Experiment never stops another's work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

LISTED = 3  # consumers named in a message; the rest are counted


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def stop_reason(consumers: Sequence[str], suspended: Mapping[str, bool], left: Sequence[str] = ()) -> str | None:
    """Why an Artifact must not run now, or None when it may.

    `consumers`: every Experiment recorded as consuming it; `suspended`: Experiment name -> its spec.suspend,
    for the Experiments that exist (a consumer missing from it was deleted); `left`: the Experiments whose plans
    it left (their grids shrank): with no consumer but those, it stops as if they had been deleted."""
    if not consumers:
        if not left:
            return None
        return f"no Experiment plans it any more (it left the plan of {_names(left)}); it starts again when one does"
    if any(suspended.get(name) is False for name in consumers):
        return None
    paused = [name for name in consumers if suspended.get(name)]
    gone = [name for name in consumers if name not in suspended]
    parts = [f"suspended: {_names(paused)}"] if paused else []
    parts += [f"deleted: {_names(gone)}"] if gone else []
    message = f"no running Experiment consumes it ({'; '.join(parts)})"
    if paused:
        message += f"; it resumes when one does (datasweep resume {paused[0]}, or spec.suspend: false)"
    return message
