"""A sweep's progress summed from its stages (pure): the operator's Experiment and Batch status, and
`datasweep watch` on a local root, compute it the same way."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from datasweep.api.experiment import SweepProgress
from datasweep.store.manifest import Usage
from datasweep.store.progress import ProgressReport, RequestReuseCounts

# The rate behind an ETA is measured over at least this long (the first seconds of a sweep say little).
MIN_ETA_WINDOW_S = 10.0


@dataclass(frozen=True)
class StageState:
    """One planned Artifact of the sweep as its status (or the local registry) says now."""

    phase: str
    produced: bool  # made for this sweep, not reused: its usage is this sweep's spending
    usage: Usage
    progress: ProgressReport | None
    # a generate stage's request-level reuse: its worker's last report, or its manifest's once Ready
    request_reuse: RequestReuseCounts | None = None


def cost_text(cost_usd: float) -> str:
    return f"${cost_usd:,.2f}" if cost_usd >= 100 else f"${cost_usd:.4f}"


def saved_text(requests: int, saved_usd: float) -> str:
    """The SAVED column: `432 requests, $0.4100` (empty while the request store answered none)."""
    if not requests:
        return ""
    return f"{requests:,} request{'s' if requests != 1 else ''}" + (f", {cost_text(saved_usd)}" if saved_usd else "")


def request_reuse_sum(stages: Iterable[StageState]) -> RequestReuseCounts:
    """The request-level reuse of the stages produced for the sweep (one reused whole saved all its requests:
    that is savedByReuse)."""
    total = RequestReuseCounts(saved_usd=0.0)
    for stage in stages:
        if stage.produced and stage.request_reuse is not None:
            total = total + stage.request_reuse
    return total


def _fraction(stage: StageState) -> float:
    """Ready is done; a running (or retrying: the next attempt resumes) stage is as far as its worker reported."""
    if stage.phase == "Ready":
        return 1.0
    if stage.phase in ("Running", "Retrying") and stage.progress is not None:
        return stage.progress.fraction
    return 0.0


def sweep_fraction(stages: Iterable[StageState], planned: int) -> float:
    return sum(_fraction(s) for s in stages) / planned if planned > 0 else 0.0


def sweep_progress(stages: Iterable[StageState], planned: int, eta_seconds: int | None = None) -> SweepProgress:
    """`planned` Artifacts in all (those not created yet count as not started). Dollars and tokens so far: the
    usage of what was produced for this sweep, plus what unfinished stages' workers reported (a failed or
    retried attempt's requests were paid, and a resumed attempt goes on from them)."""
    stages = list(stages)
    fraction = sweep_fraction(stages, planned)
    cost = 0.0
    tokens = requests_done = requests_total = steps_done = steps_total = 0
    for stage in stages:
        if stage.phase == "Ready":
            if stage.produced:
                cost += stage.usage.cost_usd
                tokens += stage.usage.prompt_tokens + stage.usage.completion_tokens
            continue
        report = stage.progress
        if report is None:
            continue
        cost += report.cost_usd or 0.0
        tokens += report.tokens or 0
        if stage.phase == "Running" and report.unit == "requests":
            requests_done, requests_total = requests_done + report.done, requests_total + report.total
        elif stage.phase == "Running" and report.unit == "steps":
            steps_done, steps_total = steps_done + report.done, steps_total + report.total
    percent = math.floor(fraction * 100 + 1e-9)
    cost = round(cost, 6)
    reuse = request_reuse_sum(stages)
    saved_usd = round(reuse.saved_usd or 0.0, 6)
    return SweepProgress(
        percent=percent,
        summary=f"{percent}%",
        cost=cost_text(cost),
        cost_usd=cost,
        tokens=tokens,
        requests_done=requests_done,
        requests_total=requests_total,
        steps_done=steps_done,
        steps_total=steps_total,
        eta_seconds=0 if percent >= 100 else eta_seconds,
        requests_stored=reuse.stored,
        requests_to_send=reuse.to_send,
        rows_reused=reuse.rows_reused,
        saved_usd=saved_usd,
        saved=saved_text(reuse.stored, saved_usd),
    )


def eta_seconds(origin: tuple[float, float] | None, now: float, fraction: float) -> int | None:
    """Seconds left at the rate seen since `origin` (time, fraction then); None until there is a rate."""
    if fraction >= 1.0:
        return 0
    if origin is None:
        return None
    since, start = origin
    elapsed, gained = now - since, fraction - start
    if elapsed < MIN_ETA_WINDOW_S or gained <= 0:
        return None
    return round((1.0 - fraction) * elapsed / gained)


def combine(parts: Iterable[tuple[SweepProgress, int]]) -> SweepProgress:
    """Several sweeps (a Batch's Experiments) as one: the percent weighted by their points, sums, the latest ETA."""
    parts = list(parts)
    points = sum(n for _, n in parts)
    percent = math.floor(sum(p.percent * n for p, n in parts) / points) if points else 0
    cost = round(sum(p.cost_usd for p, _ in parts), 6)
    etas = [p.eta_seconds for p, _ in parts if p.eta_seconds is not None]
    stored, saved_usd = sum(p.requests_stored for p, _ in parts), round(sum(p.saved_usd for p, _ in parts), 6)
    return SweepProgress(
        percent=percent,
        summary=f"{percent}%",
        cost=cost_text(cost),
        cost_usd=cost,
        tokens=sum(p.tokens for p, _ in parts),
        requests_done=sum(p.requests_done for p, _ in parts),
        requests_total=sum(p.requests_total for p, _ in parts),
        steps_done=sum(p.steps_done for p, _ in parts),
        steps_total=sum(p.steps_total for p, _ in parts),
        eta_seconds=max(etas) if etas and len(etas) == len(parts) else None,  # unknown while any one is
        requests_stored=stored,
        requests_to_send=sum(p.requests_to_send for p, _ in parts),
        rows_reused=sum(p.rows_reused for p, _ in parts),
        saved_usd=saved_usd,
        saved=saved_text(stored, saved_usd),
    )
