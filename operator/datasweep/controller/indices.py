"""Kopf's in-memory indices: what admission and status aggregation read instead of LISTing the namespace.

Kopf fills them from its watch streams (one per kind) and fills them completely before any handler runs,
also after a restart (docs/indexing in Kopf). Values are small frozen records, not whole bodies: a
10,000-Artifact namespace costs a few MB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kopf

from datasweep.core.imported import recorded_params
from datasweep.core.recovery import STUCK_REASONS, JobEnd, PodProblem, job_end, pod_problem
from datasweep.k8s import labels
from datasweep.store.progress import RequestReuseCounts

ARTIFACTS = ("datasweep.io", "v1alpha1", "artifacts")
EXPERIMENTS = ("datasweep.io", "v1alpha1", "experiments")
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
EVENTS = ("", "v1", "events")


def _flat(raw: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in (raw or {}).items() if not isinstance(v, dict | list)))


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    stage: str
    fingerprint: str
    phase: str
    first_experiment: str | None
    first_batch: str | None
    inputs: tuple[str, ...]
    consumers: frozenset[str]  # labels.consumers_of: the consumer labels and the first experiment
    marks: frozenset[str]  # the consumer label keys (exp.datasweep.io/..., batch.datasweep.io/...)
    path: str
    usage: tuple[tuple[str, Any], ...]
    failure: tuple[str, str] | None  # (reason, message) of the Ready condition when Failed
    resource_version: str
    attempts: int = 0  # status.attempts: the current attempt's Job is naming.job_name(name, attempts)
    dataset: str = ""
    imported: bool = False  # registered by `datasweep import`: no Experiment produced it
    # `import --source`: the source dataset's hash and the recorded parameters a match reads (core/imported.py)
    source_sha256: str | None = None
    recorded: tuple[tuple[str, Any], ...] = ()
    job: str = ""  # status.job: the Job of the current (or last) attempt
    stuck: tuple[str, str] | None = None  # (reason, message) of the Ready condition when a pod is stuck
    details: str = ""  # labels.DETAILS: a re-applied Experiment compares its planned details without a read
    progress: tuple[tuple[str, Any], ...] = ()  # status.progress: the worker's last report as the operator wrote it
    metrics: tuple[tuple[str, Any], ...] = ()  # status.manifest.metrics: a training stage's recorded metrics
    # a generate stage's request-level reuse: its worker's report while it runs, its manifest's once Ready
    progress_reuse: tuple[tuple[str, Any], ...] = ()  # status.progress.requestReuse
    manifest_reuse: tuple[tuple[str, Any], ...] = ()  # status.manifest.requestReuse
    waiting: tuple[str, str] | None = None  # Waiting or Retrying: (status.waitingReason, status.waitingSince)
    left: frozenset[str] = frozenset()  # labels.left_in: the Experiments whose plans it left

    def usage_dict(self) -> dict[str, Any]:
        return dict(self.usage)

    def progress_dict(self) -> dict[str, Any]:
        """status.progress as the operator wrote it (its requestReuse included)."""
        return {**dict(self.progress), "requestReuse": dict(self.progress_reuse) or None}

    def request_reuse(self) -> RequestReuseCounts | None:
        """Its requests the request store answered, as last reported (None: not a generate stage, or not yet)."""
        return RequestReuseCounts.from_raw(dict(self.progress_reuse) or dict(self.manifest_reuse))

    @property
    def params(self) -> dict[str, Any]:
        """The recorded parameters of an imported directory (an ImportedRecord for core.imported.find_match)."""
        return dict(self.recorded)


def artifact_info(name: str, body: Any) -> ArtifactInfo:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    annotations, labels_ = meta.get("annotations") or {}, meta.get("labels") or {}
    first = annotations.get(labels.FIRST_EXPERIMENT) or status.get("firstExperiment")
    phase = status.get("phase") or "Pending"
    failure = stuck = None
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if phase == "Failed":
        failure = (str(ready.get("reason", "Failed")), str(ready.get("message", ""))[:512])
    elif phase == "Running" and ready.get("reason") in STUCK_REASONS:
        stuck = (str(ready["reason"]), str(ready.get("message", ""))[:512])
    usage = status.get("usage") or {}
    imported = labels_.get(labels.IMPORTED) == "true"
    source_sha256 = annotations.get(labels.SOURCE_SHA256) if imported else None
    return ArtifactInfo(
        name=name,
        stage=str(spec.get("stage", "")),
        fingerprint=str(spec.get("fingerprint", "")),
        phase=str(phase),
        first_experiment=first,
        first_batch=annotations.get(labels.FIRST_BATCH) or status.get("firstBatch"),
        inputs=tuple(spec.get("inputs") or ()),
        consumers=frozenset(labels.consumers_of(meta, status)),
        marks=frozenset(k for k in labels_ if k.startswith((labels.EXPERIMENT_PREFIX, labels.BATCH_PREFIX))),
        path=str((spec.get("storage") or {}).get("path", "")),
        usage=tuple(sorted((k, v) for k, v in usage.items() if not isinstance(v, dict | list))),
        failure=failure,
        resource_version=str(meta.get("resourceVersion", "")),
        attempts=int(status.get("attempts") or 0),
        dataset=str(spec.get("dataset", "")),
        imported=imported,
        source_sha256=source_sha256,
        recorded=tuple(sorted(recorded_params(spec.get("params") or {}).items())) if source_sha256 else (),
        job=str(status.get("job") or ""),
        stuck=stuck,
        details=str(annotations.get(labels.DETAILS, "")),
        progress=_flat(status.get("progress")),
        metrics=_flat((status.get("manifest") or {}).get("metrics")),
        progress_reuse=_flat((status.get("progress") or {}).get("requestReuse")),
        manifest_reuse=_flat((status.get("manifest") or {}).get("requestReuse")),
        waiting=(str(status.get("waitingReason") or ""), str(status.get("waitingSince") or ""))
        if phase in ("Waiting", "Retrying")
        else None,
        left=frozenset(labels.left_in(labels_)),
    )


@kopf.index(*ARTIFACTS)
def artifact_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """("art", ns, name) -> ArtifactInfo; ("exp", ns, experiment) -> name per consumer; ("dep", ns, input) ->
    name per input; ("ns", ns) -> name; ("imported", ns, dataset) -> name of an imported directory that a
    planned point may reuse (`import --source`)."""
    info = artifact_info(name, body)
    keys: dict[Any, Any] = {("art", namespace, name): info, ("ns", namespace): name}
    if info.source_sha256:
        keys[("imported", namespace, info.dataset)] = name
    for experiment in info.consumers:
        keys[("exp", namespace, experiment)] = name
    for input_name in info.inputs:
        keys[("dep", namespace, input_name)] = name
    return keys


@kopf.index(*JOBS, labels={labels.ARTIFACT: kopf.PRESENT})
def job_index(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> Any:
    """(ns, Job name) -> the Artifact it produces: a Job created just before a crash is found without a GET."""
    return {(namespace, name): labels.get("datasweep.io/artifact")}


@kopf.index(*JOBS, labels={labels.ARTIFACT: kopf.PRESENT})
def job_end_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> Any:
    """(ns, Job name) -> JobEnd, for ended Jobs only: what the resync compares each Artifact with."""
    ended: JobEnd | None = job_end(status)
    return {(namespace, name): ended} if ended is not None else None


@kopf.index(*PODS, labels={labels.ARTIFACT: kopf.PRESENT})
def pod_index(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
    """(ns, Job name) -> PodProblem, for the pods that cannot start only (a few, not one per pod)."""
    problem: PodProblem | None = pod_problem(body)
    job = (body["metadata"].get("labels") or {}).get("job-name")
    return {(namespace, job): problem} if problem is not None and job else None


@dataclass(frozen=True)
class ExperimentSummary:
    name: str
    counts: tuple[tuple[str, int], ...]
    usage: tuple[tuple[str, Any], ...]
    saved: tuple[tuple[str, Any], ...]
    failures: tuple[tuple[str, str, str, str], ...]  # (artifact, stage, reason, message)
    failures_total: int
    progress: tuple[tuple[str, Any], ...] = ()
    stalled: tuple[str, str] | None = None  # (reason, message) of its Stalled condition: pods that cannot start
    best: tuple[str, str] | None = None  # (artifact, summary) of its status.best (spec.objective)


@kopf.index(*EXPERIMENTS)
def experiment_index(
    namespace: str | None, name: str, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> Any:
    """("batch", ns, Batch object name) -> ExperimentSummary of what its status says now; ("suspend", ns, name)
    -> its spec.suspend, for every Experiment that exists (core/suspension.py)."""
    suspended = {("suspend", namespace, name): spec.get("suspend") is True}
    batch = (meta.get("labels") or {}).get(labels.BATCH)
    if not batch:
        return suspended
    failures = status.get("failures") or {}
    summary = ExperimentSummary(
        name=name,
        counts=tuple(sorted((k, int(v)) for k, v in (status.get("counts") or {}).items())),
        usage=_flat(status.get("usage")),
        saved=_flat(status.get("savedByReuse")),
        failures=tuple(
            (f.get("artifact", ""), f.get("stage", ""), f.get("reason", ""), f.get("message", ""))
            for f in failures.get("items") or []
        ),
        failures_total=int(failures.get("total", 0)),
        best=(str(best["artifact"]), str(best.get("summary", "")))
        if isinstance(best := status.get("best"), dict) and best.get("artifact")
        else None,
        stalled=next(
            (
                (str(c.get("reason", "")), str(c.get("message", "")))
                for c in status.get("conditions") or []
                if c.get("type") == "Stalled" and c.get("status") == "True"
            ),
            None,
        ),
        progress=_flat(status.get("progress")),
    )
    return {("batch", namespace, batch): summary, **suspended}


def lookup(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    return list(index.get(key, []))


def info_of(index: kopf.Index[Any, Any], namespace: str, name: str) -> ArtifactInfo | None:
    values = lookup(index, ("art", namespace, name))
    return values[0] if values else None


def suspended_of(index: kopf.Index[Any, Any], namespace: str, experiments: Iterable[str]) -> dict[str, bool]:
    """Experiment name -> its spec.suspend, for those of `experiments` that exist (from the experiment index)."""
    found = {}
    for name in experiments:
        values = lookup(index, ("suspend", namespace, name))
        if values:
            found[name] = bool(values[0])
    return found
