"""A running worker's progress, as a small file in its output directory: `.progress.json`.

The worker rewrites it atomically at most every few seconds (workloads/progress.py); the operator (where it has
the data volume mounted) copies it into the Artifact's status, and `datasweep watch` reads it on a local root. A
dot file: readers of the directory's records skip it, and it is not an output (the manifest does not list it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from datasweep._common import CamelModel
from datasweep.store.atomic import atomic_write_json

PROGRESS_NAME = ".progress.json"


class ProgressReport(CamelModel):
    """Where one stage's worker is: units done of the whole stage (all its phases), and what it spent so far."""

    phase: str = Field(default="", description="The worker's current phase, e.g. generate, validate, qa")
    unit: str = Field(default="", description="requests or steps")
    done: int = Field(default=0, ge=0)
    total: int = Field(default=0, ge=0)
    tokens: int | None = Field(default=None, description="Prompt plus completion tokens so far")
    cost_usd: float | None = Field(default=None, description="Dollars so far (estimated from the price table)")
    loss: float | None = Field(default=None, description="Training: the last loss")
    eta_seconds: float | None = Field(default=None, description="Seconds left at the current rate")
    updated_at: str = Field(default="", description="When the worker wrote it (UTC)")

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_progress(directory: Path, report: ProgressReport) -> None:
    atomic_write_json(directory / PROGRESS_NAME, report.model_dump(mode="json", by_alias=True, exclude_none=True))


def read_progress(directory: Path) -> ProgressReport | None:
    """The last report written there; None when there is none or it cannot be read (an older worker's file, a
    volume gone away): progress is shown where it exists and never stops anything."""
    try:
        raw = json.loads((directory / PROGRESS_NAME).read_text(encoding="utf-8"))
        return ProgressReport.model_validate(raw)
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
