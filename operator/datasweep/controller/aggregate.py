"""Experiment and Batch status, aggregated from Kopf's indices and written coalesced (docs/scale.md).

Status is bounded: counts, usage, conditions and the first failures with their total, never one entry per
point (the points are the Artifacts labelled exp.datasweep.io/<experiment>). An Artifact event only marks
its consumers dirty; one writer thread recomputes a dirty object from the indices (one consistent view,
the latest state) at most once per `statusIntervalSeconds`: work grows with changes, not with the size of
the namespace, and counts never go backwards because a stale snapshot is never written after a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from datasweep.api.experiment import SweepProgress
from datasweep.api.settings import OperatorSettings
from datasweep.controller.coalesce import Coalescer
from datasweep.controller.indices import (
    ARTIFACTS,
    EXPERIMENTS,
    ArtifactInfo,
    ExperimentSummary,
    info_of,
    lookup,
)
from datasweep.controller.progress import ProgressPoller
from datasweep.controller.setup import DIFF_BASE, settings
from datasweep.core.metrics import Candidate, best_of
from datasweep.core.progress import StageState, combine, eta_seconds, sweep_fraction, sweep_progress
from datasweep.k8s import client, labels
from datasweep.k8s.conditions import condition_status, set_condition
from datasweep.store.manifest import Usage
from datasweep.store.progress import ProgressReport

LOG = logging.getLogger("datasweep.aggregate")
MAX_BATCH_EXPERIMENTS_LISTED = 256


@dataclass
class Planned:
    """What the Experiment handler planned: the aggregate counts against it, not against what is indexed."""

    points: int
    stages: int  # stages per point (generate + training)
    generate: frozenset[str]  # the points' generate Artifacts
    artifacts: frozenset[str]  # every planned Artifact
    batch_object: str
    generation: int
    conditions: list[dict[str, Any]] = field(default_factory=list)
    # spec.objective (stage, metric, goal) and its stage's planned Artifacts with their parameters
    objective: tuple[str, str, str] | None = None
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # stages per point where they differ from `stages` (spec.search samples some of a point's combinations)
    point_stages: dict[str, int] = field(default_factory=dict)


def _usage(infos: Iterable[ArtifactInfo]) -> Usage:
    total = Usage()
    for info in infos:
        total = total + Usage.model_validate(info.usage_dict())
    return total


def _reused(info: ArtifactInfo, experiment: str) -> bool:
    """Made for another Experiment, or imported (`datasweep import`: no Experiment made it)."""
    return info.imported or info.first_experiment not in (None, experiment)


def _report(info: ArtifactInfo) -> ProgressReport | None:
    try:
        return ProgressReport.model_validate(info.progress_dict()) if info.progress else None
    except ValueError:
        return None  # written by another version: shown again from the next report


def stage_states(name: str, planned: Planned, infos: list[ArtifactInfo]) -> list[StageState]:
    """The planned Artifacts that exist, as core.progress sums them. Pure."""
    return [
        StageState(i.phase, not _reused(i, name), Usage.model_validate(i.usage_dict()), _report(i), i.request_reuse())
        for i in infos
        if i.name in planned.artifacts
    ]


def summarize_experiment(
    name: str, planned: Planned, infos: list[ArtifactInfo], max_failures: int, eta: int | None = None
) -> dict[str, Any]:
    """The Experiment's status (without `observedGeneration`/`batch`) from its Artifacts as indexed; `eta`:
    the seconds left that the caller measured (core.progress.eta_seconds). Pure."""
    mine = {i.name: i for i in infos if i.name in planned.artifacts}
    training: dict[str, list[ArtifactInfo]] = {}
    for info in mine.values():
        if info.name not in planned.generate and info.inputs:
            training.setdefault(info.inputs[0], []).append(info)
    counts = {"points": planned.points, "artifacts": len(planned.artifacts), "reused": 0, "created": 0}
    succeeded = failed = running = 0
    data_ready = trained = 0
    for generate_name in planned.generate:
        generate = mine.get(generate_name)
        if generate is None:
            continue
        counts["reused" if _reused(generate, name) else "created"] += 1
        stages = training.get(generate_name, [])
        phases = [generate.phase] + [s.phase for s in stages]
        phases += ["Pending"] * (planned.point_stages.get(generate_name, planned.stages) - len(phases))
        data_ready += generate.phase == "Ready"
        trained += sum(s.phase == "Ready" for s in stages)
        if "Failed" in phases:
            failed += 1
        elif all(p == "Ready" for p in phases):
            succeeded += 1
        elif "Running" in phases:
            running += 1
    counts.update(
        pending=planned.points - succeeded - failed - running, running=running, succeeded=succeeded, failed=failed
    )
    failures = sorted((i for i in mine.values() if i.failure), key=lambda i: i.name)
    stuck = sorted((i for i in mine.values() if i.stuck), key=lambda i: i.name)
    reused = [i for i in mine.values() if _reused(i, name)]
    produced = [i for i in mine.values() if not _reused(i, name)]
    generation = planned.generation
    all_data = data_ready == planned.points
    all_trained = trained == len(planned.artifacts) - planned.points
    conditions = set_condition(
        planned.conditions, "DataReady", all_data, "DataReady" if all_data else "Generating", "", generation
    )
    conditions = set_condition(
        conditions, "Trained", all_trained, "Trained" if all_trained else "Training", "", generation
    )
    if stuck:  # pods that cannot start (resync.py): named here and on the Batch, before they fail
        cause = stuck[0].stuck or ("", "")
        message = f"{len(stuck)} Artifact(s) cannot start; first: {stuck[0].name}: {cause[0]}: {cause[1]}"[:1024]
        conditions = set_condition(conditions, "Stalled", True, cause[0], message, generation)
    else:
        conditions = [c for c in conditions if c.get("type") != "Stalled"]
    if failures:
        first = failures[0].failure or ("Failed", "")
        message = f"{len(failures)} Artifact(s) failed; first: {failures[0].name}: {first[0]}: {first[1]}"[:1024]
        conditions = set_condition(conditions, "Failed", True, "ArtifactFailed", message, generation)
        conditions = set_condition(conditions, "Succeeded", False, "ArtifactFailed", message, generation)
    else:
        conditions = [c for c in conditions if c.get("type") != "Failed"]
        done = succeeded == planned.points
        suspended = condition_status(conditions, "Suspended") == "True"  # set by the Experiment handler
        conditions = set_condition(
            conditions,
            "Succeeded",
            done,
            "Succeeded" if done else ("Suspended" if suspended else "InProgress"),
            f"{succeeded}/{planned.points} points done"
            + (f"; {len(stuck)} cannot start (see Stalled)" if stuck else ""),
            generation,
        )
    return {
        "counts": counts,
        "conditions": conditions,
        "failures": {
            "total": len(failures),
            "items": [
                {
                    "artifact": i.name,
                    "stage": i.stage,
                    "reason": (i.failure or ("", ""))[0],
                    "message": (i.failure or ("", ""))[1],
                }
                for i in failures[:max_failures]
            ],
        },
        "usage": _usage(produced).model_dump(by_alias=True),
        "savedByReuse": _usage(reused).model_dump(by_alias=True),
        "progress": sweep_progress(stage_states(name, planned, infos), len(planned.artifacts), eta).model_dump(
            by_alias=True
        ),
        "best": _best(planned, mine),
    }


def _best(planned: Planned, mine: dict[str, ArtifactInfo]) -> dict[str, Any] | None:
    """status.best from the recorded metrics of the objective stage's Ready Artifacts (None: not yet)."""
    if planned.objective is None:
        return None
    stage, metric, goal = planned.objective
    candidates = [
        Candidate(name, params, dict(info.metrics))
        for name, params in planned.candidates.items()
        if (info := mine.get(name)) is not None and info.phase == "Ready"
    ]
    return best_of(stage, metric, goal, candidates)


def _sweep(summary: ExperimentSummary) -> SweepProgress:
    try:
        return SweepProgress.model_validate(dict(summary.progress))
    except ValueError:
        return SweepProgress()


def summarize_batch(
    summaries: list[ExperimentSummary], max_failures: int, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The Batch's status from its Experiments' statuses as indexed (`conditions`: its last ones). Pure."""
    counts = {"experiments": len(summaries), "points": 0, "reused": 0, "created": 0, "ready": 0, "failed": 0}
    usage, saved, total = Usage(), Usage(), 0
    items: list[dict[str, str]] = []
    progress: list[tuple[SweepProgress, int]] = []
    for summary in sorted(summaries, key=lambda s: s.name):
        progress.append((_sweep(summary), int(dict(summary.counts).get("points", 0))))
        exp_counts = dict(summary.counts)
        for key, source in (
            ("points", "points"),
            ("reused", "reused"),
            ("created", "created"),
            ("ready", "succeeded"),
            ("failed", "failed"),
        ):
            counts[key] += int(exp_counts.get(source, 0))
        usage = usage + Usage.model_validate(dict(summary.usage))
        saved = saved + Usage.model_validate(dict(summary.saved))
        total += summary.failures_total
        for artifact, stage, reason, message in summary.failures:
            if len(items) < max_failures:
                items.append({"artifact": artifact, "stage": stage, "reason": reason, "message": message})
    names = sorted(s.name for s in summaries)
    stalled = [s for s in sorted(summaries, key=lambda s: s.name) if s.stalled]
    if stalled:
        reason, message = stalled[0].stalled or ("", "")
        text = f"{len(stalled)} Experiment(s) stalled; first: {stalled[0].name}: {message}"[:1024]
        conditions = set_condition(conditions or [], "Stalled", True, reason, text)
    else:
        conditions = [c for c in conditions or [] if c.get("type") != "Stalled"]
    return {
        "conditions": conditions,
        "experiments": names[:MAX_BATCH_EXPERIMENTS_LISTED],
        "counts": counts,
        "failures": {"total": total, "items": items},
        "usage": usage.model_dump(by_alias=True),
        "savedByReuse": saved.model_dump(by_alias=True),
        "progress": combine(progress).model_dump(by_alias=True),
        "best": [
            {"experiment": s.name, "artifact": s.best[0], "summary": s.best[1]}
            for s in sorted(summaries, key=lambda s: s.name)
            if s.best is not None
        ][:MAX_BATCH_EXPERIMENTS_LISTED],
    }


class Aggregator:
    """The per-process state: what was planned, what was last written, and the one writer thread."""

    def __init__(
        self, artifact_index: kopf.Index[Any, Any], experiment_index: kopf.Index[Any, Any], config: OperatorSettings
    ) -> None:
        self.artifacts = artifact_index
        self.experiments = experiment_index
        self.config = config
        self.planned: dict[tuple[str, str], Planned] = {}
        self._written: dict[Hashable, dict[str, Any]] = {}
        self._origins: dict[tuple[str, str], tuple[float, float]] = {}  # (when, fraction) first seen: the ETA's rate
        self._lock = threading.Lock()
        self.coalescer = Coalescer(self._flush, config.status_interval_seconds)
        self.progress = ProgressPoller(
            artifact_index,
            config.volume_root(None),
            config.progress_interval_seconds,
            config.progress_writes_per_second,
            self.coalescer.mark,
        )

    def plan(self, namespace: str, name: str, planned: Planned) -> None:
        with self._lock:
            self.planned[(namespace, name)] = planned
            self._written.pop(("Experiment", namespace, name), None)
        self.coalescer.mark(("Experiment", namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self.planned.pop((namespace, name), None)
            self._origins.pop((namespace, name), None)

    def _flush(self, key: Hashable) -> None:
        kind, namespace, name = cast(tuple[str, str, str], key)
        if kind == "Artifact":
            self.progress.write(namespace, name)
            return
        if kind == "Experiment":
            with self._lock:
                planned = self.planned.get((namespace, name))
            if planned is None:
                return  # not planned by this process yet: its resume handler will plan it
            names = set(lookup(self.artifacts, ("exp", namespace, name)))
            infos = [i for n in names if (i := info_of(self.artifacts, namespace, n)) is not None]
            fraction = sweep_fraction(stage_states(name, planned, infos), len(planned.artifacts))
            now = time.monotonic()
            with self._lock:
                origin = self._origins.setdefault((namespace, name), (now, fraction))
            eta = eta_seconds(origin, now, fraction)
            status = summarize_experiment(name, planned, infos, self.config.max_failures_listed, eta)
            with self._lock:
                planned.conditions = status["conditions"]  # keeps lastTransitionTime across writes
        else:
            summaries = lookup(self.experiments, ("batch", namespace, name))
            previous = self._written.get(key, {}).get("conditions")
            status = summarize_batch(summaries, self.config.max_failures_listed, previous)
        if self._written.get(key) == status:
            return
        try:
            client.patch_status(kind, namespace, name, status)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return  # deleted meanwhile
        self._written[key] = status


_AGGREGATOR: Aggregator | None = None


def aggregator() -> Aggregator | None:
    return _AGGREGATOR


def mark_experiment(namespace: str, name: str) -> None:
    if _AGGREGATOR is not None:
        _AGGREGATOR.coalescer.mark(("Experiment", namespace, name))


def mark_batch(namespace: str, batch_object: str) -> None:
    if _AGGREGATOR is not None:
        _AGGREGATOR.coalescer.mark(("Batch", namespace, batch_object))


@kopf.on.startup()
def start_aggregator(**kwargs: Any) -> None:
    """The indices are safe to hand to a thread started here (Kopf fills them before any handler runs)."""
    global _AGGREGATOR
    _AGGREGATOR = Aggregator(kwargs["artifact_index"], kwargs["experiment_index"], settings())
    _AGGREGATOR.coalescer.start()
    _AGGREGATOR.progress.start()


@kopf.on.cleanup()
def stop_aggregator(**_: Any) -> None:
    global _AGGREGATOR
    if _AGGREGATOR is not None:
        _AGGREGATOR.progress.stop()
        _AGGREGATOR.coalescer.stop()
        _AGGREGATOR = None


# Async (on Kopf's loop, no thread hop): they only mark keys dirty, which takes a lock for a moment.
@kopf.on.event(*ARTIFACTS)
async def artifact_event(namespace: str | None, body: kopf.Body, type: str | None, **_: Any) -> None:
    """Any change of an Artifact: its consumers' status is due (written coalesced, not now)."""
    assert namespace is not None
    if type == "DELETED":
        DIFF_BASE.forget(str(body["metadata"].get("uid")))
    for experiment in labels.consumers_of(body["metadata"], body.get("status") or {}):
        mark_experiment(namespace, experiment)


@kopf.on.event(*EXPERIMENTS)
async def experiment_event(namespace: str | None, meta: kopf.Meta, **_: Any) -> None:
    """An Experiment's status (or existence) changed: its Batch's totals are due."""
    assert namespace is not None
    batch = (meta.get("labels") or {}).get(labels.BATCH)
    if batch:
        mark_batch(namespace, batch)
