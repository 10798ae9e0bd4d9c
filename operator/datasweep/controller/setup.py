"""Operator-wide Kopf settings and the loaded configuration."""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
from typing import Any

import kopf

from datasweep.api.settings import OperatorSettings, load_settings
from datasweep.controller import _kopf_toggles
from datasweep.controller.indices import EVENTS, JOBS, PODS
from datasweep.k8s import client, labels

# Before any watcher starts: Kopf's start-up gate is quadratic in the objects listed (_kopf_toggles.py).
_SHARED_START_GATE = _kopf_toggles.install()


@functools.cache
def settings() -> OperatorSettings:
    return load_settings()


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff base: in an annotation for Experiments and Batches; in memory for Artifacts.

    An Artifact's handler reacts only to its annotations (retry, regenerate, a nudge) and reads the object itself,
    so what Kopf compares is small (no spec, no consumer marks) and need not survive a restart: a restarted
    operator finds no diff base, Kopf calls the handler as for a new Artifact, and the handler, idempotent, does
    what resuming would. Writing it back as an annotation cost one patch per Artifact (and its watch event),
    a fifth of a fan-out's writes (docs/scale.md)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._artifacts: dict[str, kopf.BodyEssence] = {}
        self._lock = threading.Lock()

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") == "Artifact":
            # Kopf deep-copies the whole body (spec, status) before dropping most of it: hand it the metadata only.
            meta = body.get("metadata") or {}
            kept: Any = {k: meta[k] for k in ("name", "namespace", "uid", "annotations") if k in meta}
            body = kopf.Body({"kind": "Artifact", "metadata": kept})
        essence = super().build(body=body, extra_fields=extra_fields)
        if body.get("kind") == "Artifact":
            essence.pop("spec", None)  # type: ignore[misc]
            annotations = essence.get("metadata", {}).get("annotations") or {}
            for key in [k for k in annotations if k.startswith(labels.EXPERIMENT_PREFIX)]:
                del annotations[key]  # a consumer's full name: a cache hit is no news to the handler
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") != "Artifact":
            return super().fetch(body=body)
        with self._lock:
            return self._artifacts.get(str(body["metadata"].get("uid")))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") != "Artifact":
            super().store(body=body, patch=patch, essence=essence)
            return
        with self._lock:
            self._artifacts[str(body["metadata"].get("uid"))] = essence

    def forget(self, uid: str) -> None:
        """The Artifact is gone (its DELETED event): nothing to compare with any more."""
        with self._lock:
            self._artifacts.pop(uid, None)


DIFF_BASE = DiffBase(prefix="kopf.datasweep.io", ignored_fields=["metadata.labels"])


# Event handlers that run for every watch event of every Artifact, Job and Experiment (aggregate.py,
# artifact.py): Kopf logs each run as "Handler 'artifact_event' succeeded." at INFO, about fifteen lines per
# point of a sweep that say nothing; with --verbose they are kept.
_QUIET_HANDLERS = tuple(f"Handler '{name}' succeeded." for name in ("artifact_event", "experiment_event", "job_event"))


class _RoutineLines(logging.Filter):
    """Keep the operator's INFO lines in its log but out of the API server: Kopf posts each object's log line
    as a Kubernetes Event, which was three Event writes per Artifact of a fan-out ("job ... created", "Handler
    'artifact_changed' succeeded.", "Creation is processed"), as many as the Artifact's own writes. What users
    should see as Events is posted on purpose (kopf.info/kopf.warn: CacheHit, JobFailed, Retry, ...); warnings
    and errors (a handler failing) are still posted. Unless verbose, the routine lines are dropped."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        record.k8s_skip = True
        return self.verbose or not str(record.msg).endswith(_QUIET_HANDLERS)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG (read now, not when a library was imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    # Progress lives in annotations (status belongs to our own schema) under a prefix of its own: Kopf leaves
    # its own annotations out of change detection, and ours (retry, nudged, ...) must trigger handlers.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.datasweep.io")
    # Labels are left out of the diff base: no handler reacts to them, and an Artifact gets one per consuming
    # Experiment and Batch (docs/scale.md); a consumer added must not cost a handler run and a diff-base write.
    settings.persistence.diffbase_storage = DIFF_BASE
    # After its own patch Kopf waits this long for the watch to deliver the patched version, and meanwhile does
    # not take older events for news. Its default (5 s) is shorter than the watch lags behind during a large
    # fan-out on a busy API server: a stale event then looks like a new creation, and the Experiment handler
    # ran a second time over all its points (measured at 300 points; once even with 60 s on a machine loaded
    # by other clusters, and that second run writes nothing: experiment._ensure_artifact). The cost: an object
    # whose patched version never comes back (a watch restarted meanwhile) waits this long once.
    settings.persistence.consistency_timeout = 60.0
    settings.posting.level = logging.INFO
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _RoutineLines) for f in objects.filters):
        objects.addFilter(_RoutineLines(verbose=objects.getEffectiveLevel() < logging.INFO))
    settings.watching.server_timeout = 300
    # Kopf lists in chunks (no single response holding every object). Its workers stay unbounded on purpose:
    # with `queueing.worker_limit`, a start-up over more objects than the limit deadlocks (each running worker
    # waits for every object to be indexed, and the queued ones never run), which a restart mid-sweep hit.
    settings.watching.chunk_size = 500
    # Filtered by the API server, not by Kopf: the handlers' own filters would let every Job and Event of the
    # namespace be encoded, sent, decoded and queued first (a sweep makes about four Events per Job).
    settings.watching.label_selectors[JOBS] = labels.ARTIFACT
    settings.watching.label_selectors[PODS] = labels.ARTIFACT  # the Jobs' pod template carries it (builders.py)
    settings.watching.field_selectors[EVENTS] = "reason=FailedCreate,involvedObject.kind=Job"
    config = globals()["settings"]()
    # Handler threads: the Experiment handler (its creates run in its own pool), as many Artifact handlers as
    # creates in flight (each launches a Job in four round trips, one after the other: the operator is bound by
    # round trips more than by CPU), and Job events meanwhile.
    settings.execution.max_workers = max(8, 2 * config.create_concurrency + 4)
    client.set_rate_limit(config.api_qps, config.api_burst)
    client.warm_up()
    # Peering (several replicas, one active): Kopf pauses an operator that sees a peer with a higher or
    # equal priority, so each replica takes a distinct one; a standby takes over when the active one's
    # record is older than `lifetime` (docs/scale.md). Ignored when run with --standalone.
    priority = os.environ.get("DATASWEEP_PEERING_PRIORITY")
    settings.peering.priority = int(priority) if priority else random.SystemRandom().randint(1, 2**31 - 1)
    settings.peering.lifetime = config.peering_lifetime_seconds
    settings.peering.stealth = True
    logger.info("datasweep operator: data root %s", config.data_root)
    if not _SHARED_START_GATE:
        logger.warning("this Kopf version's start-up gate is not patched: start-up over many objects is slow")
