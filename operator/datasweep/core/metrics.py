"""The best of the metrics training Artifacts record (store/metrics.py reads them) for an objective. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datasweep.store.metrics import MAX_RECORDED_METRICS as MAX_RECORDED_METRICS
from datasweep.store.metrics import metric_number
from datasweep.store.metrics import recorded_metrics as recorded_metrics  # below store/manifest.py, which uses it


@dataclass(frozen=True)
class Candidate:
    """A Ready Artifact of the objective's stage: its name, its parameters (point and combination) and metrics."""

    artifact: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]


def best_of(stage: str, metric: str, goal: str, candidates: Iterable[Candidate]) -> dict[str, Any] | None:
    """The Experiment's `status.best`: the candidate with the best `metric` (ties: the first name, and the summary
    says how many share the value, so a flat metric is not read as a winner), or None."""
    scored = [(c, value) for c in candidates if (value := metric_number(c.metrics.get(metric))) is not None]
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
