"""Artifact handler: launch the producing Job once the inputs are Ready, follow it, record Ready or Failed."""

from __future__ import annotations

import json
import threading
from typing import Any

import kopf

from datasweep.controller.aggregate import refresh_experiment
from datasweep.controller.setup import settings
from datasweep.core import naming
from datasweep.k8s import builders, client, labels
from datasweep.k8s.conditions import now, set_condition
from datasweep.store import layout
from datasweep.store.manifest import ManifestSummary, read_manifest

ARTIFACTS = ("datasweep.io", "v1alpha1", "artifacts")
JOBS = ("batch", "v1", "jobs")
MAX_BACKOFF = 600.0


@kopf.index(*ARTIFACTS)
def artifact_phases(
    namespace: str | None, name: str, status: kopf.Status, meta: kopf.Meta, spec: kopf.Spec, **_: Any
) -> Any:
    """(namespace, name) -> (phase, first experiment, inputs): what launching and throttling need, no API calls."""
    return {
        (namespace, name): (
            status.get("phase", "Pending"),
            meta.get("annotations", {}).get(labels.FIRST_EXPERIMENT),
            tuple(spec.get("inputs", [])),
        )
    }


def _patch(namespace: str, name: str, status: dict[str, Any], **changes: Any) -> None:
    client.patch_status("Artifact", namespace, name, changes)
    for consumer in status.get("consumers", []):
        refresh_experiment(namespace, consumer)


def _ready_condition(status: dict[str, Any], value: bool, reason: str, message: str) -> list[dict[str, Any]]:
    return set_condition(status.get("conditions", []), "Ready", value, reason, message)


def _launch(namespace: str, name: str, body: kopf.Body, attempt: int, logger: kopf.Logger) -> None:
    status = dict(body.get("status") or {})
    annotations = body["metadata"].get("annotations", {})
    queue = annotations.get(labels.QUEUE)
    configmap = naming.dns_name(name, "spec")
    worker_yaml = body["spec"].get("worker", {}).get("workerSpec", "")
    cm = builders.spec_configmap(configmap, worker_yaml, name)
    kopf.adopt(cm, owner=body)
    client.create_configmap(namespace, cm)
    job = builders.worker_job(
        dict(body), attempt=attempt, settings=settings(), spec_configmap_name=configmap, queue_name=queue
    )
    kopf.adopt(job, owner=body)
    if int(body["spec"].get("resources", {}).get("nodes", 1)) > 1:
        service = builders.headless_service(job)
        kopf.adopt(service, owner=body)
        client.create_service(namespace, service)
    _, created = client.create_job(namespace, job)
    job_name = job["metadata"]["name"]
    if created:
        kopf.info(body, reason="JobCreated", message=f"Job {job_name} (attempt {attempt + 1})")
    logger.info("job %s %s", job_name, "created" if created else "already exists: reused")
    _patch(
        namespace,
        name,
        status,
        phase="Running",
        job=job_name,
        attempts=attempt + 1,
        startedAt=status.get("startedAt") or now(),
        conditions=_ready_condition(status, False, "JobRunning", f"Job {job_name} is producing the artifact"),
    )


def _blocked(namespace: str, body: kopf.Body) -> tuple[str, str] | None:
    """Why this Artifact cannot start yet: an input not Ready, or its experiment at its parallelism.

    Read from the API, not the index: a nudge may arrive before the index has seen the change that caused it.
    """
    for input_name in body["spec"].get("inputs", []):
        producer = client.get_custom("Artifact", namespace, input_name)
        phase = ((producer or {}).get("status") or {}).get("phase")
        if phase == "Failed":
            return "InputFailed", f"input {input_name} failed"
        if phase != "Ready":
            return "WaitingOnProducer", f"waiting for input {input_name} ({phase or 'absent'})"
    annotations = body["metadata"].get("annotations", {})
    first = annotations.get(labels.FIRST_EXPERIMENT)
    limit = int(annotations.get(labels.PARALLELISM, "0") or 0)
    if limit:
        running = sum(
            1
            for other in client.list_custom("Artifact", namespace)
            if (other.get("status") or {}).get("phase") == "Running"
            and other["metadata"].get("annotations", {}).get(labels.FIRST_EXPERIMENT) == first
        )
        if running >= limit:
            return "Throttled", f"{running} Jobs of experiment {first} running (parallelism {limit})"
    return None


def reconcile(namespace: str, name: str, body: kopf.Body, retry: int, logger: kopf.Logger) -> None:
    if body["metadata"].get("labels", {}).get(labels.IMPORTED) == "true":
        return  # data registered by `datasweep import`: nothing to produce
    status = dict(body.get("status") or {})
    phase = status.get("phase", "Pending")
    annotations = body["metadata"].get("annotations", {})
    attempts = int(status.get("attempts", 0))
    regenerate = annotations.get(labels.REGENERATE)
    retry_token = annotations.get(labels.RETRY)
    if phase == "Ready" and regenerate and regenerate != status.get("regeneratedFor"):
        root = settings().volume_root(None)
        if root is not None:
            layout.supersede(root, body["spec"]["storage"]["path"], now().replace(":", ""))
        _patch(
            namespace,
            name,
            status,
            phase="Pending",
            regeneratedFor=regenerate,
            manifest=None,
            completedAt=None,
        )
        _launch(namespace, name, body, attempts, logger)
        return
    input_failed = any(
        c.get("reason") == "InputFailed" for c in status.get("conditions", []) if c.get("type") == "Ready"
    )
    if phase == "Failed" and not input_failed:
        if retry_token and retry_token != status.get("retriedFor"):
            kopf.info(body, reason="Retry", message=f"retry requested ({labels.RETRY}={retry_token})")
            _patch(namespace, name, status, phase="Pending", retriedFor=retry_token, attempts=attempts)
            _launch(namespace, name, body, attempts, logger)
        return
    if phase in ("Ready", "Running"):
        return
    if phase == "Retrying" and retry == 0:
        delay = min(settings().retry_backoff_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF)
        raise kopf.TemporaryError(f"attempt {attempts} failed; retrying in {delay:.0f}s", delay=delay)
    with _launch_lock(namespace, annotations.get(labels.FIRST_EXPERIMENT)):
        _start_when_unblocked(namespace, name, body, phase, status, attempts, logger)


def _start_when_unblocked(
    namespace: str, name: str, body: kopf.Body, phase: str, status: dict[str, Any], attempts: int, logger: kopf.Logger
) -> None:
    if client.job_exists(namespace, naming.job_name(name, attempts)):
        _launch(namespace, name, body, attempts, logger)  # created before a crash: adopt it, whatever the limit
        return
    blocked = _blocked(namespace, body)
    if blocked:
        reason, message = blocked
        if reason == "InputFailed":
            if phase == "Failed":
                return
            _patch(
                namespace,
                name,
                status,
                phase="Failed",
                conditions=_ready_condition(status, False, reason, message),
            )
            return
        if phase != "Waiting" or status.get("waitingReason") != reason:
            kopf.info(body, reason=reason, message=message)
            _patch(
                namespace,
                name,
                status,
                phase="Waiting",
                waitingReason=reason,
                conditions=_ready_condition(status, False, reason, message),
            )
        return  # nudged when an input or a running Job of its experiment finishes (see `nudge`)
    _launch(namespace, name, body, attempts, logger)


_LAUNCH_LOCKS: dict[tuple[str, str | None], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _launch_lock(namespace: str, experiment: str | None) -> threading.Lock:
    """Count-then-launch is atomic per experiment: handlers run in parallel threads of one replica."""
    with _LOCKS_GUARD:
        return _LAUNCH_LOCKS.setdefault((namespace, experiment), threading.Lock())


# Kopf's change detection ignores status, so everything that must wake an Artifact touches an annotation:
# the retry and regenerate requests, a finished input or a freed slot (`nudge`), a failed attempt.
@kopf.on.resume(*ARTIFACTS)
@kopf.on.create(*ARTIFACTS)
@kopf.on.update(*ARTIFACTS, field="metadata.annotations")
def artifact_changed(
    namespace: str | None, name: str, body: kopf.Body, retry: int, logger: kopf.Logger, **kwargs: Any
) -> None:
    assert namespace is not None
    reconcile(namespace, name, body, retry, logger)


def nudge(namespace: str, finished: str, first_experiment: str | None, index: kopf.Index[Any, Any]) -> None:
    """An Artifact finished: wake the ones that wait on it as input or for a slot of its experiment."""
    stamp = now()
    for (ns, other), values in list(index.items()):
        for phase, owner, inputs in values:
            if ns != namespace or other == finished or phase in ("Ready", "Running"):
                continue
            if finished in inputs or (first_experiment and owner == first_experiment):
                client.patch_custom("Artifact", ns, other, {"metadata": {"annotations": {labels.NUDGED: stamp}}})


def _first_experiment(artifact: dict[str, Any]) -> str | None:
    value = artifact["metadata"].get("annotations", {}).get(labels.FIRST_EXPERIMENT)
    return str(value) if value else None


def _termination_summary(namespace: str, job: str) -> ManifestSummary | None:
    for pod in client.job_pods(namespace, job):
        for container in pod.get("status", {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                try:
                    return ManifestSummary.model_validate(json.loads(message))
                except ValueError:
                    continue
    return None


def _pod_failure(namespace: str, job: str) -> str:
    """Why the Job's pods failed, naming each pod: e.g. "pod x-abc: OOMKilled (exit code 137)"."""
    found = []
    for pod in client.job_pods(namespace, job):
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode", 0) != 0:
                detail = f"pod {name}: {ended.get('reason') or 'Error'} (exit code {ended.get('exitCode')})"
                last_line = str(ended.get("message") or "").strip().splitlines()[-1:]
                found.append(detail + (f": {last_line[0][:300]}" if last_line else ""))
        if not found and status.get("phase") == "Failed" and status.get("reason"):
            found.append(f"pod {name}: {status['reason']} {status.get('message', '')}".strip())
    return "; ".join(found)


@kopf.on.event(*JOBS, labels={labels.ARTIFACT: kopf.PRESENT})
def job_event(namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    job_status = body.get("status") or {}
    finished = {c.get("type"): c for c in job_status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" not in finished and "Failed" not in finished:
        return
    assert namespace is not None
    artifact_name = body["metadata"]["labels"][labels.ARTIFACT]
    artifact = client.get_custom("Artifact", namespace, artifact_name)
    if artifact is None:
        return
    status = dict(artifact.get("status") or {})
    phase, attempts = status.get("phase", "Pending"), int(status.get("attempts", 0))
    recorded = status.get("job") == name and phase == "Running"
    # The operator stopped between creating this Job and recording it: the Job is the current attempt.
    lost_launch = phase in ("Pending", "Waiting") and name == naming.job_name(artifact_name, attempts)
    if not (recorded or lost_launch):
        return  # an older attempt, or already recorded
    if lost_launch:
        attempts += 1
    reason = "JobFailed"
    if "Complete" in finished:
        root = settings().volume_root(None)
        manifest = read_manifest(root / artifact["spec"]["storage"]["path"]) if root is not None else None
        if manifest is None and root is not None and settings().require_manifest:
            # Exit 0 is not enough: the worker may have written somewhere other than the data volume.
            reason = "NoManifest"
            finished["Failed"] = {
                "reason": reason,
                "message": f"the Job completed but {artifact['spec']['storage']['path']}/manifest.json is not on "
                "the data volume: the worker wrote elsewhere (check its /data mount and the spec's outputDir)",
            }
        else:
            summary = (
                manifest.summary(path=artifact["spec"]["storage"]["path"])
                if manifest is not None
                else _termination_summary(namespace, name)
            )
            changes: dict[str, Any] = {
                "phase": "Ready",
                "job": name,
                "attempts": attempts,
                "completedAt": now(),
                "conditions": _ready_condition(status, True, "Produced", f"Job {name} completed"),
            }
            if summary is not None:
                changes["manifest"] = summary.model_dump(by_alias=True)
                changes["usage"] = summary.usage.model_dump(by_alias=True)
            _patch(namespace, artifact_name, status, **changes)
            logger.info("artifact %s ready", artifact_name)
            nudge(namespace, artifact_name, _first_experiment(artifact), kwargs["artifact_phases"])
            return
    failure = finished["Failed"]
    message = f"Job {name} failed: {failure.get('reason', '')} {failure.get('message', '')}".strip()
    if pods := _pod_failure(namespace, name):
        message = f"{message}; {pods}"
    kopf.warn(artifact, reason=reason, message=message)  # type: ignore[arg-type]
    retries = int(artifact["spec"].get("retries", settings().retries))
    if attempts <= retries:
        _patch(
            namespace,
            artifact_name,
            status,
            phase="Retrying",
            job=name,
            attempts=attempts,
            conditions=_ready_condition(status, False, reason, message),
        )
        # Wakes the Artifact's handler, which waits out the backoff and starts the next attempt.
        client.patch_custom(
            "Artifact", namespace, artifact_name, {"metadata": {"annotations": {labels.FAILED_ATTEMPT: str(attempts)}}}
        )
    else:
        final = f"{message} (after {attempts} attempts; retry with the annotation {labels.RETRY}=<any new value>)"
        _patch(
            namespace,
            artifact_name,
            status,
            phase="Failed",
            job=name,
            attempts=attempts,
            conditions=_ready_condition(status, False, reason, final),
        )
        nudge(namespace, artifact_name, _first_experiment(artifact), kwargs["artifact_phases"])
