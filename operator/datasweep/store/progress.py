"""A running worker's progress, as a small file in its output directory: `.progress.json`.

The worker rewrites it atomically at most every few seconds (workloads/progress.py); the operator (where it has
the data volume mounted) copies it into the Artifact's status, and `datasweep watch` reads it on a local root. A
dot file: readers of the directory's records skip it, and it is not an output (the manifest does not list it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from datasweep._common import CamelModel
from datasweep.store.atomic import atomic_write_json

PROGRESS_NAME = ".progress.json"
# The manifest's `extra` key of a generate Artifact's final RequestReuseCounts (ManifestSummary carries it to status).
REQUEST_REUSE_KEY = "requestReuse"


class RequestReuseCounts(CamelModel):
    """Request-level reuse of one generate Artifact: which of its requests the volume's request store answered
    (store/requests.py), known right after the worker's lookup, before it sends anything."""

    requests: int = Field(default=0, ge=0, description="Every request of the point (generation and validation)")
    stored: int = Field(default=0, ge=0, description="Requests the request store answered: not sent, not paid")
    to_send: int = Field(
        default=0, ge=0, description="Requests still to send (validation of a row to generate counts as one)"
    )
    rows: int = Field(default=0, ge=0, description="Records of the point")
    rows_reused: int = Field(default=0, ge=0, description="Records whose every request is stored")
    saved_tokens: int = Field(default=0, ge=0, description="Prompt plus completion tokens of the stored answers")
    saved_usd: float | None = Field(
        default=None, description="What the stored answers cost when first paid for (null: an unpriced model)"
    )

    def __add__(self, other: RequestReuseCounts) -> RequestReuseCounts:
        saved = None if self.saved_usd is None and other.saved_usd is None else (self.saved_usd or 0.0)
        return RequestReuseCounts(
            requests=self.requests + other.requests,
            stored=self.stored + other.stored,
            to_send=self.to_send + other.to_send,
            rows=self.rows + other.rows,
            rows_reused=self.rows_reused + other.rows_reused,
            saved_tokens=self.saved_tokens + other.saved_tokens,
            saved_usd=None if saved is None else round(saved + (other.saved_usd or 0.0), 6),
        )

    def sentence(self) -> str:
        """`432 of 480 requests stored ($0.4100 saved), 200 of 240 rows fully; 48 to send`."""
        saved = f" (${self.saved_usd:.4f} saved)" if self.saved_usd else ""
        rows = f", {self.rows_reused:,} of {self.rows:,} rows fully" if self.rows else ""
        return f"{self.stored:,} of {self.requests:,} requests stored{saved}{rows}; {self.to_send:,} to send"

    @classmethod
    def from_raw(cls, raw: Any) -> RequestReuseCounts | None:
        """From a status or manifest field as read back (absent, or written by another version: None)."""
        if not isinstance(raw, Mapping) or not raw:
            return None
        try:
            return cls.model_validate(dict(raw))
        except ValueError:
            return None


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
    request_reuse: RequestReuseCounts | None = Field(
        default=None, description="A generate worker: its requests the request store answered (after its lookup)"
    )

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
