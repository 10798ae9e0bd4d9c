"""The metrics a training Artifact records (from its manifest's `extra`) and the best one for an objective. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datasweep.api.stage_params import metric_names

# The Artifact status keeps the objective's metric and up to 8 others: a bounded summary (issue 23, item 4).
MAX_RECORDED_METRICS = 9


def _number(value: Any) -> float | int | None:
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
        before, after = _number(extra.get("mean_before_loss")), _number(extra.get("mean_after_loss"))
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
    known = metric_names(stage) if found else {}
    numbers = {
        name: number for name, value in found.items() if name in known and (number := _number(value)) is not None
    }
    return dict(list(numbers.items())[:MAX_RECORDED_METRICS])


@dataclass(frozen=True)
class Candidate:
    """A Ready Artifact of the objective's stage: its name, its parameters (point and combination) and metrics."""

    artifact: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]


def best_of(stage: str, metric: str, goal: str, candidates: Iterable[Candidate]) -> dict[str, Any] | None:
    """The Experiment's `status.best`: the candidate with the best `metric` (ties: the first name, and the summary
    says how many share the value, so a flat metric is not read as a winner), or None."""
    scored = [(c, value) for c in candidates if (value := _number(c.metrics.get(metric))) is not None]
    if not scored:
        return None
    sign = 1 if goal == "maximize" else -1
    best, value = min(scored, key=lambda pair: (-sign * pair[1], pair[0].artifact))
    tied = sum(1 for _, other in scored if other == value)
    shown = ", ".join(f"{key}={val}" for key, val in best.params.items())
    if tied > 1:
        shown = f"{shown}; {tied} tied" if shown else f"{tied} tied"
    return {
        "artifact": best.artifact,
        "stage": stage,
        "metric": metric,
        "goal": goal,
        "value": value,
        "params": dict(best.params),
        "candidates": len(scored),
        "tied": tied,
        "summary": f"{metric}={value:g}" + (f" ({shown})" if shown else ""),
    }
