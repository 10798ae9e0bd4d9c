"""Conditions per the Kubernetes API conventions: lastTransitionTime moves only when status changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    value = status if isinstance(status, str) else ("True" if status else "False")
    result = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    unchanged = previous is not None and previous.get("status") == value
    condition: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous.get("lastTransitionTime", now()) if previous and unchanged else now(),
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    result.append(condition)
    return result


def condition_status(conditions: list[dict[str, Any]] | None, type_: str) -> str | None:
    return next((c.get("status") for c in conditions or [] if c.get("type") == type_), None)
