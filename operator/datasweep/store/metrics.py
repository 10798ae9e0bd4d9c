"""The metrics a training Artifact records, read from its manifest's `extra` (`ManifestSummary.metrics`).

The names are those of each kind's `METRICS` (api/stages/), which tests/unit/core/test_objective.py checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# The Artifact status keeps the objective's metric and up to 8 others: a bounded summary (issue 23, item 4).
MAX_RECORDED_METRICS = 9


def metric_number(value: Any) -> float | int | None:
    """A finite number as recorded (floats to 6 places), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(value, 6) if isinstance(value, float) else value


def recorded_metrics(stage: str, extra: Mapping[str, Any]) -> dict[str, float | int]:
    """The numbers a `stage` worker wrote in its manifest's `extra`, under the names of the kind's `METRICS`."""
    found: dict[str, Any] = {}
    if stage == "qa":
        dev = extra.get("dev") or {}
        test = extra.get("test") or {}
        found = {
            "em": dev.get("exact"),
            "f1": dev.get("f1"),
            "bestF1": dev.get("best_f1"),
            "threshold": extra.get("null_threshold"),
            "bestEpoch": extra.get("best_epoch"),
            "testEm": test.get("exact"),
            "testF1": test.get("f1"),
        }
    elif stage == "fomaml":
        before, after = metric_number(extra.get("mean_before_loss")), metric_number(extra.get("mean_after_loss"))
        found = {
            "queryLossBefore": before,
            "queryLossAfter": after,
            "lossDrop": before - after if before is not None and after is not None else None,
            "tokenAccuracy": extra.get("mean_after_token_accuracy"),
            "steps": extra.get("total_steps"),
        }
    elif stage == "moe-steer":
        selected = extra.get("selectedExperts")
        found = {
            "experts": len(selected) if isinstance(selected, list) else None,
            "finalLoss": extra.get("finalLoss"),
            "steps": extra.get("steps"),
        }
    numbers = {name: number for name, value in found.items() if (number := metric_number(value)) is not None}
    return dict(list(numbers.items())[:MAX_RECORDED_METRICS])
