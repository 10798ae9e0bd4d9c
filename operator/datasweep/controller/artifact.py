"""Artifact handler: launch the producing Job once the inputs are Ready, follow it, record Ready or Failed."""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes.client.exceptions import ApiException

from datasweep.api.worker import WorkerSpecError, parse_worker_spec
from datasweep.controller.admission import Admission, Grant, holds_slot
from datasweep.controller.indices import ARTIFACTS, EVENTS, JOBS, info_of, lookup, suspended_of
from datasweep.controller.setup import settings
from datasweep.core import naming
from datasweep.core.recovery import STUCK_REASONS, Action, Step, after_failure, retry_backoff
from datasweep.core.suspension import stop_reason
from datasweep.k8s import builders, client, labels
from datasweep.k8s.conditions import now, set_condition
from datasweep.store import layout
from datasweep.store.manifest import ManifestSummary, read_manifest
from datasweep.store.provenance import Provenance, pod_image
from datasweep.store.verify import check_artifact, set_damaged_aside

LOG = logging.getLogger("datasweep.artifact")
_ADMISSION: Admission | None = None
_JOBS: kopf.Index[Any, Any] | None = None
_ARTIFACTS: kopf.Index[Any, Any] | None = None
_EXPERIMENTS: kopf.Index[Any, Any] | None = None
SUSPENDED = "Suspended"
DAMAGED = "Damaged"


@kopf.on.startup()
def start_admission(**kwargs: Any) -> None:
    """Fresh queues per operator run; Jobs in flight are counted from the indices (`holds_slot`)."""
    global _ADMISSION, _JOBS, _ARTIFACTS, _EXPERIMENTS
    artifact_index: kopf.Index[Any, Any] = kwargs["artifact_index"]  # Kopf passes indices by their names
    job_index: kopf.Index[Any, Any] = kwargs["job_index"]
    _JOBS, _ARTIFACTS, _EXPERIMENTS = job_index, artifact_index, kwargs["experiment_index"]

    def seed(namespace: str) -> list[tuple[str, str]]:
        running = []
        for name in lookup(artifact_index, ("ns", namespace)):
            info = info_of(artifact_index, namespace, name)
            if info is not None and holds_slot(info, lambda job: (namespace, job) in job_index):
                running.append((info.first_experiment or "", name))
        return running

    _ADMISSION = Admission(seed, settings().max_jobs_per_namespace)


@kopf.on.cleanup()
def stop_admission(**_: Any) -> None:
    """Forget this run's indices and queues: an operator started again in the same process (embedded, tests)
    must not judge Artifacts by the Experiments an earlier run saw."""
    global _ADMISSION, _JOBS, _ARTIFACTS, _EXPERIMENTS
    _ADMISSION = _JOBS = _ARTIFACTS = _EXPERIMENTS = None


# One Artifact is started or recorded by one thread at a time (handler, wake-up, Job event): otherwise a
# "Waiting" written late could overwrite "Running", or a fast Job's completion be read before its launch.
# Striped locks, never nested (wake-ups run after the lock is released).
_STRIPES = [threading.Lock() for _ in range(64)]


def _lock(namespace: str, name: str) -> threading.Lock:
    return _STRIPES[hash((namespace, name)) % len(_STRIPES)]


def admission() -> Admission:
    assert _ADMISSION is not None, "the operator's startup handler creates the admission queues"
    return _ADMISSION


def _patch(namespace: str, name: str, body: Any, **changes: Any) -> None:
    """Status of one Artifact (a merge patch); its consumers' aggregates follow from the watch event
    (aggregate.py). The first write also records the first experiment and batch from the annotations the
    Experiment handler set (printer columns, `datasweep` views); consumers are the labels, not the status.

    Conditional on the resourceVersion `body` was read at: what is written was computed from `body`, and a
    handler working from an older copy must never move the Artifact backwards (Ready -> Running). A 409 goes
    up to `_on_latest`, which reads the Artifact again and recomputes. `body` then holds what was written,
    for a second write by the same handler."""
    status, annotations = body.get("status") or {}, body["metadata"].get("annotations") or {}
    if not status.get("firstExperiment") and "firstExperiment" not in changes:
        changes["firstExperiment"] = annotations.get(labels.FIRST_EXPERIMENT)
        changes["firstBatch"] = status.get("firstBatch") or annotations.get(labels.FIRST_BATCH)
    if changes.get("firstBatch") and not status.get("firstBatchName"):
        changes["firstBatchName"] = naming.batch_object_name(changes["firstBatch"])
    version = body["metadata"].get("resourceVersion")
    written = client.patch_status("Artifact", namespace, name, changes, resource_version=version)
    # Replaced, not changed in place: `body` may share its parts with Kopf's own copy.
    body["metadata"] = {**body["metadata"], "resourceVersion": (written.get("metadata") or {}).get("resourceVersion")}
    body["status"] = dict(written.get("status") or {})


_T = TypeVar("_T")
_CONFLICT_TRIES = 5


def _on_latest(namespace: str, name: str, act: Callable[[dict[str, Any]], _T], first: Any = None) -> _T | None:
    """`act` on the Artifact (`first`, or read now); when one of its conditional writes finds the Artifact
    changed since it was read (409), read it again and act on that: what was computed from the older copy is
    dropped. None when the Artifact does not exist."""
    current = first if first is not None else client.get_custom("Artifact", namespace, name)
    for _ in range(_CONFLICT_TRIES):
        if current is None:
            return None
        try:
            return act(current)
        except ApiException as exc:
            if not client.is_conflict(exc):
                raise
        LOG.info("artifact %s changed since it was read: reading it again", name)
        current = client.get_custom("Artifact", namespace, name)
    raise kopf.TemporaryError(f"artifact {name} kept changing while being reconciled", delay=1.0)


def _event(body: Any, reason: str, message: str, warning: bool = False) -> None:
    """An Event on the Artifact. Kopf posts Events only from its handlers' context; the resync's thread
    (resync.py) has none, so there it is posted through the client."""
    try:
        (kopf.warn if warning else kopf.info)(body, reason=reason, message=message)
    except LookupError:
        client.post_event(body, "Warning" if warning else "Normal", reason, message)


def _ready_condition(status: dict[str, Any], value: bool, reason: str, message: str) -> list[dict[str, Any]]:
    return set_condition(status.get("conditions", []), "Ready", value, reason, message)


def _launch(namespace: str, name: str, body: Any, attempt: int, logger: Any) -> None:
    status = dict(body.get("status") or {})
    annotations = body["metadata"].get("annotations", {})
    queue = annotations.get(labels.QUEUE)
    job = builders.worker_job(dict(body), attempt=attempt, settings=settings(), queue_name=queue)
    kopf.adopt(job, owner=body)
    if int(body["spec"].get("resources", {}).get("nodes", 1)) > 1:
        service = builders.headless_service(job)
        kopf.adopt(service, owner=body)
        client.create_service(namespace, service)
    existing, created = client.create_job(namespace, job)
    job_name = job["metadata"]["name"]
    if not created and (existing.get("spec") or {}).get("suspend"):  # suspended with its Artifact: resume it
        client.set_job_suspended(namespace, job_name, False)
    if created and attempt:  # the first Job is in status.job; an Event each would be 10,000 more writes
        _event(body, "JobCreated", f"Job {job_name} (attempt {attempt + 1})")
    logger.info("job %s %s", job_name, "created" if created else "already exists: reused")
    _patch(
        namespace,
        name,
        body,
        phase="Running",
        job=job_name,
        attempts=attempt + 1,
        **({"suspendedJob": None} if status.get("suspendedJob") else {}),
        startedAt=status.get("startedAt") or now(),
        conditions=_ready_condition(status, False, "JobRunning", f"Job {job_name} is producing the artifact"),
    )


def _seconds_since(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()


def _cycle(namespace: str, name: str, inputs: list[str]) -> list[str] | None:
    """A path of inputs from this Artifact back to itself, e.g. [a, b, a], read from the index (hand-made
    Artifacts only can form one: planned inputs are always earlier stages)."""
    if name in inputs:
        return [name, name]
    seen: set[str] = set()
    stack = [[name, i] for i in inputs]
    while stack and _ARTIFACTS is not None:
        path = stack.pop()
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        info = info_of(_ARTIFACTS, namespace, path[-1])
        for upstream in info.inputs if info is not None else ():
            if upstream == name:
                return [*path, name]
            stack.append([*path, upstream])
    return None


def _never_startable(namespace: str, name: str, body: Any) -> tuple[str, str] | None:
    """What makes this Artifact fail before any Job: its inputs form a cycle, its worker spec is unusable."""
    cycle = _cycle(namespace, name, list(body["spec"].get("inputs") or []))
    if cycle is not None:
        return "InputCycle", f"spec.inputs form a cycle {' -> '.join(cycle)}: an Artifact cannot wait on itself"
    try:
        parse_worker_spec(str((body["spec"].get("worker") or {}).get("workerSpec") or ""), "spec.worker.workerSpec")
    except WorkerSpecError as exc:
        return "InvalidWorkerSpec", f"{exc} (Artifacts are made by `datasweep plan` or an Experiment)"
    return None


def _inputs_blocked(namespace: str, body: Any) -> tuple[str, str] | None:
    """Why this Artifact cannot start yet: an input not Ready. Read from the API (a GET per input, not a LIST):
    the wake-up may arrive before the index has seen the input's change that caused it."""
    for input_name in body["spec"].get("inputs", []):
        producer = client.get_custom("Artifact", namespace, input_name)
        if producer is None:
            return "InputMissing", f"input Artifact {input_name} does not exist"
        phase = (producer.get("status") or {}).get("phase")
        if phase == "Failed":
            return "InputFailed", f"input {input_name} failed"
        if phase != "Ready":
            return "WaitingOnProducer", f"waiting for input {input_name} ({phase or 'absent'})"
    return None


def why_stopped(namespace: str, body: Any) -> str | None:
    """Why this Artifact must not run now: every Experiment consuming it is suspended or deleted, or it left the
    plans of all of them (core/suspension.py), read from the indices; None when it may run."""
    meta = body["metadata"]
    consumers = labels.consumers_of(meta, body.get("status") or {})
    return why_consumers_stopped(namespace, consumers, labels.left_in(meta.get("labels") or {}))


def why_consumers_stopped(namespace: str, consumers: list[str], left: list[str] | None = None) -> str | None:
    if _EXPERIMENTS is None:
        return None
    return stop_reason(consumers, suspended_of(_EXPERIMENTS, namespace, consumers), left or [])


def suspend(namespace: str, name: str, body: Any, why: str) -> None:
    """Record the Artifact Suspended; a Job in flight is suspended, not deleted: the Job controller stops its pods
    (SIGTERM, then the grace period) without counting a failure, and resuming restarts the same Job, whose
    worker resumes from its journal. The caller holds the Artifact's lock and releases its admission slot."""
    status = dict(body.get("status") or {})
    job = status.get("job") if status.get("phase") == "Running" else None
    if job is not None and not client.set_job_suspended(namespace, str(job), True):
        job = None  # the Job is gone: resuming starts the current attempt afresh
    if status.get("phase") == SUSPENDED and status.get("waitingReason") == SUSPENDED:
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        if ready.get("message") == why:
            return  # recorded already
    _event(body, SUSPENDED, why)  # also from the resync's thread
    changes: dict[str, Any] = {"suspendedJob": job} if job is not None else {}
    _patch(
        namespace,
        name,
        body,
        phase=SUSPENDED,
        waitingReason=SUSPENDED,
        waitingSince=now(),
        conditions=_ready_condition(status, False, SUSPENDED, why),
        **changes,
    )


def _experiment_of(body: Any) -> str:
    return str(body["metadata"].get("annotations", {}).get(labels.FIRST_EXPERIMENT) or "")


def _limit_of(body: Any) -> int:
    return int(body["metadata"].get("annotations", {}).get(labels.PARALLELISM, "0") or 0)


def reconcile(namespace: str, name: str, body: Any, retry: int, logger: Any) -> None:
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
            body,
            phase="Pending",
            regeneratedFor=regenerate,
            manifest=None,
            completedAt=None,
        )
        _start(namespace, name, body, "Pending", status, attempts, logger)
        return
    input_failed = any(
        c.get("reason") == "InputFailed" for c in status.get("conditions", []) if c.get("type") == "Ready"
    )
    if phase == "Failed" and not input_failed:
        if retry_token and retry_token != status.get("retriedFor"):
            _event(body, "Retry", f"retry requested ({labels.RETRY}={retry_token})")
            _patch(namespace, name, body, phase="Pending", retriedFor=retry_token, attempts=attempts)
            _start(namespace, name, body, "Pending", status, attempts, logger)
        return
    if phase == "Running" and (why := why_stopped(namespace, body)) is not None:
        # Its consumers were suspended or deleted while nobody watched (an operator restart): stop its Job, and
        # hand its slot on through the handlers (a wake-up from here would nest the Artifacts' locks).
        suspend(namespace, name, body, why)
        for grant in admission().release(namespace, _experiment_of(body), name):
            LATER.nudge(grant[0], grant[2], 0.0)
        return
    if phase in ("Ready", "Running"):
        return
    if phase == "Retrying":
        backoff = retry_backoff(attempts, settings().retry_backoff_seconds)
        left = backoff - _seconds_since(status.get("waitingSince"))
        if left > 0:
            # A nudge later, not a Kopf retry delay: Kopf would keep this Artifact's worker (and its body) asleep
            # meanwhile, for every Artifact of a sweep failing everywhere.
            ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            cause = f" ({ready.get('reason', 'JobFailed')}: {str(ready.get('message', ''))[:200]})"
            logger.warning(f"attempt {attempts} failed{cause}; retrying in {left:.0f}s")
            LATER.nudge(namespace, name, left + 1.0)  # + 1 s: waitingSince is in whole seconds
            return
    if _start(namespace, name, body, phase, status, attempts, logger) == "InputMissing":
        # Nothing announces that an Artifact was created: look again until it exists or the wait times out.
        delay = max(1.0, min(settings().input_wait_timeout_seconds, 30.0))
        raise kopf.TemporaryError("waiting for an input Artifact to be created", delay=delay)


def _input_failed(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Failed" and any(
        c.get("reason") == "InputFailed" for c in status.get("conditions", []) if c.get("type") == "Ready"
    )


# `_start`'s answers that leave the Artifact Failed: it needs no admission slot any more.
_FAILED = ("InputCycle", "InvalidWorkerSpec", "InputFailed")


def _fail(namespace: str, name: str, body: Any, status: dict[str, Any], reason: str, message: str) -> None:
    _event(body, reason, message, warning=True)
    _patch(namespace, name, body, phase="Failed", conditions=_ready_condition(status, False, reason, message))


def _start(
    namespace: str, name: str, body: Any, phase: str, status: dict[str, Any], attempts: int, logger: Any
) -> str | None:
    """Launch now if the inputs are Ready and admission grants a slot; else record why it waits (once) and
    return that reason."""
    experiment = _experiment_of(body)
    if problem := _never_startable(namespace, name, body):
        _fail(namespace, name, body, status, *problem)
        return problem[0]
    if _JOBS is not None and (namespace, naming.job_name(name, attempts)) in _JOBS:
        admission().force(namespace, experiment, name)
        _launch(namespace, name, body, attempts, logger)  # created before a crash: adopt it, whatever the limit
        return None
    if (why := why_stopped(namespace, body)) is not None:
        suspend(namespace, name, body, why)  # no Job while no running Experiment wants it (core/suspension.py)
        return SUSPENDED
    blocked = _inputs_blocked(namespace, body)
    if blocked is None and not admission().request(namespace, experiment, name, _limit_of(body)):
        blocked = (
            "Throttled",
            f"parallelism {_limit_of(body)} of experiment {experiment} (or the namespace cap) reached",
        )
    if blocked:
        reason, message = blocked
        if reason == "InputFailed":
            if phase == "Failed":
                return reason
            _patch(
                namespace,
                name,
                body,
                phase="Failed",
                conditions=_ready_condition(status, False, reason, message),
            )
            return reason
        waited = _seconds_since(status.get("waitingSince")) if status.get("waitingReason") == reason else 0.0
        if reason == "InputMissing" and waited >= settings().input_wait_timeout_seconds:
            _fail(
                namespace,
                name,
                body,
                status,
                reason,
                f"{message} after waiting {waited:.0f}s (inputWaitTimeoutSeconds): create it, or remove it from "
                f"spec.inputs and retry with the annotation {labels.RETRY}=<any new value>",
            )
            return "InputFailed"  # terminal: no further polling
        if phase != "Waiting" or status.get("waitingReason") != reason:
            if reason != "Throttled":  # one Event per waiting Artifact of a 10,000-point sweep would be noise
                _event(body, reason, message)
            if reason == "InputMissing":
                message += f"; waiting up to {settings().input_wait_timeout_seconds:.0f}s for it to be created"
            _patch(
                namespace,
                name,
                body,
                phase="Waiting",
                waitingReason=reason,
                waitingSince=now(),
                conditions=_ready_condition(status, False, reason, message),
            )
        return reason  # started by `_wake` when an input finishes or admission grants it a slot
    # A suspended Job is resumed under its own attempt: a suspension is not a failed attempt.
    suspended_job = attempts and status.get("suspendedJob") == naming.job_name(name, attempts - 1)
    _launch(namespace, name, body, attempts - 1 if suspended_job else attempts, logger)  # on error Kopf retries
    return None


# Kopf's change detection ignores status, so what must wake an Artifact through Kopf touches an annotation:
# the retry and regenerate requests, a failed attempt. A finished input or a freed slot wakes exactly the
# Artifacts concerned directly (`_wake`), from the index and the admission queue.
@kopf.on.resume(*ARTIFACTS)
@kopf.on.create(*ARTIFACTS)
@kopf.on.update(*ARTIFACTS, field="metadata.annotations")
def artifact_changed(
    namespace: str | None, name: str, retry: int, logger: kopf.Logger, body: kopf.Body, reason: str, **_: Any
) -> None:
    assert namespace is not None
    seen: list[dict[str, Any]] = []

    def act(current: dict[str, Any]) -> None:
        seen.append(current)
        reconcile(namespace, name, current, retry, logger)

    grants: list[Grant] = []
    with _lock(namespace, name):
        first: Any = dict(body) if _fresh(body, reason, retry) else client.get_custom("Artifact", namespace, name)
        _on_latest(namespace, name, act, first)
        if len(seen) > 1 and (seen[-1].get("status") or {}).get("phase") in ("Ready", "Failed"):
            # Kopf's copy was older than the Artifact (a restart's listing): a slot `_start` took on it is not needed.
            grants = admission().forget(namespace, _experiment_of(seen[-1]), name)
    for grant in grants:
        _wake_granted(grant)


def _fresh(body: kopf.Body, reason: str, retry: int) -> bool:
    """Kopf's copy will do, no read needed:
    - a just-created Artifact, first try, no status and no inputs: nothing else starts one (a wake-up comes only
      to one that asked for a slot, which writes its status, or to a dependent): a read saved per new Artifact;
    - a finished one (Ready, or Failed) with no retry or regenerate request pending: nothing changes a finished
      Artifact but those requests, so a restart over 10,000 of them reads none.
    Otherwise read it now, under its lock: Kopf's copy may predate a launch (or even a completion) by a wake-up."""
    status = body.get("status") or {}
    if not status:
        return reason == "create" and retry == 0 and not body["spec"].get("inputs")
    annotations = body["metadata"].get("annotations") or {}
    settled = annotations.get(labels.REGENERATE) in (None, status.get("regeneratedFor")) and annotations.get(
        labels.RETRY
    ) in (None, status.get("retriedFor"))
    return status.get("phase") in ("Ready", "Failed") and settled


def _wake(namespace: str, experiment: str, name: str) -> list[Grant]:
    """Start one Artifact now if it can be (a dependent whose input finished, or one granted a slot);
    returns the slots it gave back (it needs none any more) for the caller to hand on."""

    def act(body: dict[str, Any]) -> bool:
        """True: it holds its slot (started, waiting for one, or running)."""
        status = dict(body.get("status") or {})
        phase = status.get("phase", "Pending")
        imported = body["metadata"].get("labels", {}).get(labels.IMPORTED) == "true"
        started = (phase in ("Pending", "Waiting", SUSPENDED) or _input_failed(status)) and not imported
        answer = _start(namespace, name, body, phase, status, int(status.get("attempts", 0)), LOG) if started else None
        if started and answer not in (*_FAILED, SUSPENDED):
            return True
        return bool(phase == "Running")

    with _lock(namespace, name):
        latest = client.get_custom("Artifact", namespace, name)
        if latest is not None and _on_latest(namespace, name, act, latest):
            return []
    return admission().forget(namespace, _experiment_of(latest) if latest is not None else experiment, name)


def _wake_granted(grant: Grant) -> None:
    namespace, experiment, name = grant
    try:
        for more in _wake(namespace, experiment, name):
            _wake_granted(more)
    except Exception:
        # The slot stays taken; a nudge annotation makes Kopf run (and retry) the handler, which reuses it.
        LOG.exception("starting %s failed; handing it to its handler", name)
        _nudge(namespace, name)


def _nudge(namespace: str, name: str, retry_in: float = 1.0) -> None:
    """Touch the Artifact's nudge annotation. While the API server is away (the usual reason the start failed)
    try again later, backing off: a lost nudge leaves the Artifact waiting forever on the slot it holds."""
    try:
        client.patch_custom("Artifact", namespace, name, {"metadata": {"annotations": {labels.NUDGED: now()}}})
    except ApiException as exc:
        if exc.status != 404:  # gone: nothing to start
            LOG.warning("nudging %s failed; trying again in %.0fs", name, retry_in)
            LATER.nudge(namespace, name, retry_in, min(retry_in * 2, 30.0))
    except Exception:  # connection refused or reset: the API server restarts
        LOG.warning("nudging %s failed; trying again in %.0fs", name, retry_in)
        LATER.nudge(namespace, name, retry_in, min(retry_in * 2, 30.0))


class Later:
    """Nudges Artifacts when their time comes (a retry's backoff, a nudge that failed), from one thread: no
    Kopf worker asleep meanwhile, no thread per Artifact. Asked twice for one Artifact, the earlier time wins.
    Lost with the process: a restarted operator resumes every Artifact, and asks again."""

    def __init__(self, nudge: Callable[[str, str, float], None]) -> None:
        self._nudge = nudge
        self._due: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str, float]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def nudge(self, namespace: str, name: str, delay: float, retry_in: float = 1.0) -> None:
        at = time.monotonic() + max(delay, 0.0)
        with self._changed:
            if self._due.get((namespace, name), float("inf")) <= at:
                return
            self._due[(namespace, name)] = at
            heapq.heappush(self._heap, (at, namespace, name, retry_in))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="datasweep-later", daemon=True)
                self._thread.start()
            self._changed.notify()

    def pending(self) -> int:
        with self._changed:
            return len(self._due)

    def _next(self) -> tuple[str, str, float]:
        with self._changed:
            while True:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    at, namespace, name, retry_in = heapq.heappop(self._heap)
                    if self._due.get((namespace, name)) == at:  # else superseded by an earlier one
                        del self._due[(namespace, name)]
                        return namespace, name, retry_in
                    continue
                self._changed.wait(self._heap[0][0] - time.monotonic() if self._heap else None)

    def _run(self) -> None:
        while True:
            namespace, name, retry_in = self._next()
            try:
                self._nudge(namespace, name, retry_in)
            except Exception:  # never lose the thread
                LOG.exception("nudging %s failed", name)


LATER = Later(_nudge)


def finished(namespace: str, name: str, experiment: str, index: kopf.Index[Any, Any]) -> None:
    """An Artifact's Job is done (Ready, Failed or Retrying): free its slot for the next in line, and wake the
    Artifacts that wait on it as an input. Work: the grants plus the dependents, nothing per waiting Artifact."""
    for grant in admission().release(namespace, experiment, name):
        _wake_granted(grant)
    for dependent in set(lookup(index, ("dep", namespace, name))):
        info = info_of(index, namespace, dependent)
        # Failed for this input: it starts again once the input is Ready (a retried or corrected input)
        if info is None or info.phase in ("Pending", "Waiting") or (info.failure or ("",))[0] == "InputFailed":
            _wake_granted((namespace, "", dependent))


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


def _provenance(namespace: str, job: str, summary: ManifestSummary | None) -> dict[str, Any]:
    """What produced the Artifact: the worker's record (its manifest) plus the image its pod ran, with the digest
    from the pod's imageID (a tag can be moved; the digest says which build ran)."""
    recorded = summary.provenance if summary is not None and summary.provenance is not None else Provenance()
    try:
        image = pod_image(client.job_pods(namespace, job))
    except ApiException as exc:  # the outcome is recorded all the same; only the image is then unknown
        LOG.warning("cannot list the pods of Job %s for its image: %s", job, exc.reason)
        image = Provenance()
    merged = recorded.model_copy(update=image.model_dump(exclude_unset=True))
    return merged.model_dump(mode="json", by_alias=True)


def _pod_failure(namespace: str, job: str) -> tuple[str, list[int]]:
    """Why the Job's pods failed, naming each pod: e.g. "pod x-abc: OOMKilled (exit code 137)", and the exit
    codes."""
    found, codes = [], []
    for pod in client.job_pods(namespace, job):
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode", 0) != 0:
                codes.append(int(ended["exitCode"]))
                detail = f"pod {name}: {ended.get('reason') or 'Error'} (exit code {ended.get('exitCode')})"
                last_line = str(ended.get("message") or "").strip().splitlines()[-1:]
                found.append(detail + (f": {last_line[0][:300]}" if last_line else ""))
        if not found and status.get("phase") == "Failed" and status.get("reason"):
            found.append(f"pod {name}: {status['reason']} {status.get('message', '')}".strip())
    return "; ".join(found), codes


def _job_ended(status: kopf.Status, **_: Any) -> bool:
    """Checked on Kopf's loop: the other events of a Job (created, pod started) need no handler thread."""
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or []
    )


@kopf.on.event(*JOBS, labels={labels.ARTIFACT: kopf.PRESENT}, when=_job_ended)
def job_event(namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    job_status = body.get("status") or {}
    ended = {c.get("type"): c for c in job_status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" not in ended and "Failed" not in ended:
        return
    assert namespace is not None
    job_ended(namespace, name, body["metadata"]["labels"][labels.ARTIFACT], ended, kwargs["artifact_index"], logger)
    if (body.get("spec") or {}).get("completionMode") == "Indexed" and client.delete_service(namespace, name):
        # The headless Service of a multi-node Job (same name) served only its pods' rendezvous. One the
        # operator misses here goes with its Artifact (ownerReference).
        logger.info("service %s of the ended job deleted", name)


def job_ended(
    namespace: str, job: str, artifact_name: str, ended: dict[str, Any], index: kopf.Index[Any, Any], logger: Any
) -> None:
    """A Job ended (its event, or the resync found it ended unrecorded): record it, then free its slot."""
    with _lock(namespace, artifact_name):
        outcome = _record_job(namespace, job, artifact_name, ended, logger)
    if outcome is None:
        return
    experiment, done = outcome
    if done:
        finished(namespace, artifact_name, experiment, index)
    else:  # retrying after a backoff: it asks for a slot again then
        for grant in admission().release(namespace, experiment, artifact_name):
            _wake_granted(grant)


def _record_job(
    namespace: str, name: str, artifact_name: str, ended: dict[str, Any], logger: Any
) -> tuple[str, bool] | None:
    """Record a finished Job on its Artifact: (experiment, no further attempt) or None when nothing changed."""
    return _on_latest(
        namespace, artifact_name, lambda artifact: _record_job_on(namespace, name, artifact, dict(ended), logger)
    )


def _record_job_on(
    namespace: str, name: str, artifact: dict[str, Any], ended: dict[str, Any], logger: Any
) -> tuple[str, bool] | None:
    artifact_name = artifact["metadata"]["name"]
    status = dict(artifact.get("status") or {})
    phase, attempts = status.get("phase", "Pending"), int(status.get("attempts", 0))
    # A Suspended one's Job may end before its pods stop: that end counts.
    recorded = status.get("job") == name and (phase == "Running" or status.get("suspendedJob") == name)
    cleared = {"suspendedJob": None} if status.get("suspendedJob") else {}
    # The operator stopped between creating this Job and recording it: the Job is the current attempt.
    lost_launch = phase in ("Pending", "Waiting") and name == naming.job_name(artifact_name, attempts)
    if not (recorded or lost_launch):
        return None  # an older attempt, or already recorded
    if lost_launch:
        attempts += 1
    experiment = _experiment_of(artifact)
    reason = "JobFailed"
    if "Complete" in ended:
        root = settings().volume_root(None)
        manifest = read_manifest(root / artifact["spec"]["storage"]["path"]) if root is not None else None
        if manifest is None and root is not None and settings().require_manifest:
            # Exit 0 is not enough: the worker may have written somewhere other than the data volume.
            reason = "NoManifest"
            ended["Failed"] = {
                "reason": reason,
                "message": f"the Job completed but {artifact['spec']['storage']['path']}/manifest.json is not on "
                "the data volume: the worker wrote elsewhere (check its /data mount and the spec's outputDir)",
            }
        else:
            # Without the volume the worker's termination message carries the summary (a LIST of the Job's pods);
            # with it, no manifest means no worker wrote one (kwok, requireManifest off): nothing to list.
            summary = (
                manifest.summary(path=artifact["spec"]["storage"]["path"])
                if manifest is not None
                else (_termination_summary(namespace, name) if root is None else None)
            )
            changes: dict[str, Any] = {
                "phase": "Ready",
                "job": name,
                "attempts": attempts,
                "completedAt": now(),
                "progress": None,  # the manifest's usage is the final word; a last report may lag behind it
                "conditions": _replaced(
                    status, _ready_condition(status, True, "Produced", f"Job {name} completed"), name
                ),
                **cleared,
            }
            if summary is not None:
                # its provenance is status.provenance, with the pod's image added
                changes["manifest"] = summary.model_dump(by_alias=True, exclude={"provenance"})
                changes["usage"] = summary.usage.model_dump(by_alias=True)
            changes["provenance"] = _provenance(namespace, name, summary)
            _patch(namespace, artifact_name, artifact, **changes)
            logger.info("artifact %s ready", artifact_name)
            return experiment, True
    failure = ended["Failed"]
    message = f"Job {name} failed: {failure.get('reason', '')} {failure.get('message', '')}".strip()
    pods, exit_codes = _pod_failure(namespace, name)
    if pods:
        message = f"{message}; {pods}"
    retries = int(artifact["spec"].get("retries", settings().retries))
    if reason == "NoManifest":
        retry = attempts <= retries
    else:
        reason, retry = after_failure(attempts, retries, exit_codes, str(failure.get("reason", "")))
    if reason == "BadInput":
        message = (
            f"{message} (the worker rejected its input, exit code 2: not retried; fix the Experiment and retry "
            f"with the annotation {labels.RETRY}=<any new value>)"
        )
    _event(artifact, reason, message, warning=True)
    if retry:
        _patch(
            namespace,
            artifact_name,
            artifact,
            phase="Retrying",
            job=name,
            attempts=attempts,
            waitingReason="RetryBackoff",
            waitingSince=now(),  # the backoff counts from here (reconcile)
            conditions=_ready_condition(status, False, reason, message),
            **cleared,
        )
        # Wakes the Artifact's handler, which waits out the backoff and asks for a slot again.
        client.patch_custom(
            "Artifact", namespace, artifact_name, {"metadata": {"annotations": {labels.FAILED_ATTEMPT: str(attempts)}}}
        )
        return experiment, False
    final = message
    if reason != "BadInput":
        final += f" (after {attempts} attempts; retry with the annotation {labels.RETRY}=<any new value>)"
    _patch(
        namespace,
        artifact_name,
        artifact,
        phase="Failed",
        job=name,
        attempts=attempts,
        conditions=_ready_condition(status, False, reason, final),
        provenance=_provenance(namespace, name, None),  # which image failed
        **cleared,
    )
    return experiment, True


# The Job controller reports pods it cannot create (missing ServiceAccount, quota, a rejected pod spec) only as
# FailedCreate Events on the Job, never in its status (kubernetes/kubernetes#100726): follow those Events.
@kopf.on.event(*EVENTS, field="reason", value="FailedCreate")
def job_failed_create(namespace: str | None, body: kopf.Body, type: str | None, **kwargs: Any) -> None:
    involved = body.get("involvedObject") or {}
    if type == "DELETED" or involved.get("kind") != "Job" or namespace is None:
        return
    job = str(involved.get("name", ""))
    artifact_name = next(iter(lookup(kwargs["job_index"], (namespace, job))), None)
    if artifact_name is None:
        return  # not a Job of ours
    since = body.get("firstTimestamp") or body.get("eventTime") or body["metadata"].get("creationTimestamp")
    with _lock(namespace, artifact_name):
        experiment = _on_latest(
            namespace,
            artifact_name,
            lambda artifact: _record_failed_create(namespace, job, artifact, str(body.get("message", "")), since),
        )
    if experiment is not None:
        finished(namespace, artifact_name, experiment, kwargs["artifact_index"])


def _record_failed_create(
    namespace: str, job: str, artifact: dict[str, Any], cause: str, since: str | None
) -> str | None:
    """Say on the Artifact why its Job has no pods; fail it once that lasted podsNotCreatedTimeoutSeconds.
    Returns the experiment when it failed (its slot is free), else None. Bounded: the Job controller retries and
    reports again, at least every few minutes."""
    artifact_name = artifact["metadata"]["name"]
    status = dict(artifact.get("status") or {})
    if status.get("job") != job or status.get("phase") != "Running":
        return None  # an older attempt, or already recorded
    waited, timeout = _seconds_since(since), settings().pods_not_created_timeout_seconds
    if waited >= timeout:
        message = (
            f"Job {job} could not create its pods for {waited:.0f}s: {cause}; fix the cause and retry with the "
            f"annotation {labels.RETRY}=<any new value>"
        )
        _fail(namespace, artifact_name, artifact, status, "PodsNotCreated", message)
        return _experiment_of(artifact)
    message = f"Job {job} cannot create its pods: {cause} (the Artifact fails if this lasts {timeout:.0f}s)"
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("reason") != "PodsNotCreated" or ready.get("message") != message:
        conditions = _ready_condition(status, False, "PodsNotCreated", message)
        _patch(namespace, artifact_name, artifact, conditions=conditions)
    return None


def replace_if_damaged(namespace: str, name: str, path: str) -> bool:
    """The check before reuse: a Ready Artifact whose manifest's files are not all on the volume with their sizes
    is not reused. Its directory is moved aside (`.<name>.damaged-<attempt>`, kept for `datasweep gc`) first,
    then it is recorded (condition Damaged, phase Pending) and its next attempt started. Converges: run again
    after a restart, the move is found done (the aside's name is the attempt that produced the damaged files).
    True when it was damaged. Cheap when it is not: a read of the manifest and a stat per file, no API call."""
    root = settings().volume_root(None)
    required = settings().require_manifest
    if root is None or not check_artifact(root / path, manifest_required=required):
        return False

    def act(body: dict[str, Any]) -> bool:
        status = dict(body.get("status") or {})
        if status.get("phase") != "Ready" or body["metadata"].get("labels", {}).get(labels.IMPORTED) == "true":
            return status.get("phase") != "Ready"  # being produced again already (or imported: not ours to redo)
        damage = check_artifact(root / path, manifest_required=required)
        if not damage:
            return False
        attempts = int(status.get("attempts", 0))
        aside = set_damaged_aside(root, path, attempts)
        if aside is not None:  # what is wrong with the damaged files, also when an earlier run moved them
            damage = check_artifact(root / aside, manifest_required=required) or damage
        kept = f"; the damaged files are kept in {aside} until `datasweep gc`" if aside else ""
        message = f"{damage.summary}: not reused, produced again (attempt {attempts + 1}){kept}"
        conditions = set_condition(status.get("conditions", []), DAMAGED, True, "FilesDamaged", message)
        conditions = set_condition(conditions, "Ready", False, DAMAGED, message)
        _patch(namespace, name, body, phase="Pending", manifest=None, completedAt=None, conditions=conditions)
        _event(body, DAMAGED, message, warning=True)
        LOG.warning("artifact %s: %s", name, message)
        _start(namespace, name, body, "Pending", dict(body.get("status") or {}), attempts, LOG)
        return True

    with _lock(namespace, name):
        return bool(_on_latest(namespace, name, act))


def _replaced(status: dict[str, Any], conditions: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """A damaged Artifact produced again: its Damaged condition turns False (kept, with when it was replaced)."""
    damaged = next((c for c in status.get("conditions") or [] if c.get("type") == DAMAGED), None)
    if damaged is None or damaged.get("status") != "True":
        return conditions
    return set_condition(conditions, DAMAGED, False, "Replaced", f"produced again by Job {job}")


def relaunch_deleted(namespace: str, name: str, job: str) -> None:
    """The resync found the Running Artifact's Job gone (twice, a walk apart): confirm with a GET, then launch
    the next attempt (Event JobDeleted). The Artifact keeps its admission slot."""

    def act(body: Any) -> None:
        status = dict(body.get("status") or {})
        if status.get("phase") != "Running" or status.get("job") != job or client.job_exists(namespace, job):
            return  # recorded or relaunched meanwhile, or only the index lagged
        attempts = int(status.get("attempts", 0))
        message = f"Job {job} was deleted before it ended: launching attempt {attempts + 1}"
        _event(body, "JobDeleted", message)
        LOG.warning("artifact %s: %s", name, message)
        _launch(namespace, name, body, attempts, LOG)

    with _lock(namespace, name):
        _on_latest(namespace, name, act)


def pod_stuck(namespace: str, name: str, job: str, step: Step, index: kopf.Index[Any, Any]) -> None:
    """A pod of the Artifact's Job cannot start (core/recovery.py): say why on its Ready condition (REPORT),
    fail it with that reason and delete the Job (FAIL), or take the reason back once the pod started (CLEAR)."""
    timeout = settings().pod_stuck_timeout_seconds

    def act(body: Any) -> str | None:
        status = dict(body.get("status") or {})
        if status.get("phase") != "Running" or status.get("job") != job:
            return None
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        if step.action is Action.CLEAR or step.problem is None:
            if ready.get("reason") in STUCK_REASONS:
                running = _ready_condition(status, False, "JobRunning", f"Job {job} is producing the artifact")
                _patch(namespace, name, body, conditions=running)
            return None
        problem = step.problem
        cause = f"pod {problem.pod} cannot start: {problem.reason}: {problem.detail}"
        if step.action is Action.FAIL:
            message = (
                f"{cause} (for {step.waited:.0f}s, podStuckTimeoutSeconds {timeout:.0f}); fix it and retry with the "
                f"annotation {labels.RETRY}=<any new value>"
            )
            _fail(namespace, name, body, status, problem.reason, message)
            return _experiment_of(body)
        message = f"{cause} (for {step.waited:.0f}s; the Artifact fails if this lasts {timeout:.0f}s)"
        if ready.get("reason") != problem.reason:
            _event(body, problem.reason, message, warning=True)
        _patch(namespace, name, body, conditions=_ready_condition(status, False, problem.reason, message))
        return None

    with _lock(namespace, name):
        experiment = _on_latest(namespace, name, act)
    if experiment is not None:
        client.delete_job(namespace, job)  # its pods hold a node (or a quota) while they wait
        finished(namespace, name, experiment, index)
