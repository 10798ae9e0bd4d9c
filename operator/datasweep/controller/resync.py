"""Level-triggered reconciliation: every non-terminal Artifact is compared, every `resyncPeriodSeconds`, with its
Job and pods as Kopf's indices show them, whatever events were missed (docs/scale.md):

- its Job ended and the Artifact does not say so (the end came while no operator watched, or its handler
  failed): recorded by the Job-end path (artifact.job_ended);
- its Job is gone (deleted by hand, or by the cluster): the next attempt is launched, Event JobDeleted;
- a pod of its Job cannot start (image not pullable, a missing Secret, no node that fits): the Ready condition
  says why after `podStuckReportSeconds`, and the Artifact fails with that reason after `podStuckTimeoutSeconds`;
- it is Waiting or Retrying past the time its own wake-up was due (a retry's backoff, the wait for an input to
  be created, producers that are all Ready): the timer was lost with an operator restart, so it is nudged and
  its handler looks again;
- it runs while no running Experiment consumes it (each suspended or deleted, or each re-planned without it,
  and the event that should have stopped it was missed, or came while it was being launched): its Job is
  suspended (suspension.py).

One thread walks the indices: no LIST, no Kopf worker per Artifact. The decisions are core/recovery.py's;
the writes go through artifact.py, under the Artifact's lock, conditional on what was read.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kopf

from datasweep.api.settings import OperatorSettings
from datasweep.controller import artifact, suspension
from datasweep.controller.indices import ArtifactInfo, info_of, lookup
from datasweep.controller.setup import settings
from datasweep.core import naming
from datasweep.core.recovery import NON_TERMINAL, Action, JobEnd, Observed, Step, Wakes, resync_step

LOG = logging.getLogger("datasweep.resync")


@dataclass(frozen=True)
class Due:
    """One Artifact the world disagrees with, and what to do about it."""

    namespace: str
    name: str
    job: str
    step: Step
    ended: JobEnd | None


class Resync:
    def __init__(
        self,
        artifacts: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        ends: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        config: OperatorSettings,
    ) -> None:
        self.artifacts, self.jobs, self.ends, self.pods = artifacts, jobs, ends, pods
        self.config = config
        self._suspects: set[tuple[str, str, str]] = set()  # (ns, artifact, Job) missing on the last walk
        self.unwanted: list[tuple[str, str]] = []  # (ns, artifact): Running with no running consumer, last walk
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _infos(self) -> Iterable[tuple[str, ArtifactInfo]]:
        for key in list(self.artifacts):  # a copy: Kopf's loop changes the index meanwhile
            if key[0] == "art" and (info := info_of(self.artifacts, key[1], key[2])) is not None:
                yield key[1], info

    def _inputs_ready(self, namespace: str, info: ArtifactInfo) -> bool:
        inputs = [info_of(self.artifacts, namespace, name) for name in info.inputs]
        return all(each is not None and each.phase == "Ready" for each in inputs)

    def walk(self, now: float) -> list[Due]:
        """What disagrees with the world now, from the indices alone (no I/O)."""
        due, suspects, unwanted = [], set(), []
        wakes = Wakes(
            self.config.retry_backoff_seconds, self.config.input_wait_timeout_seconds, self.config.resync_period_seconds
        )
        for namespace, info in self._infos():
            if info.phase not in NON_TERMINAL or info.imported:
                continue
            if info.phase == "Running" and (info.consumers or info.left):
                first = [info.first_experiment] if info.first_experiment in info.consumers else []
                consumers = first + sorted(info.consumers - set(first))
                if artifact.why_consumers_stopped(namespace, consumers, sorted(info.left)) is not None:
                    unwanted.append((namespace, info.name))
                    continue
            job = info.job if info.phase == "Running" else naming.job_name(info.name, info.attempts)
            key = (namespace, job)
            # Membership first: most Jobs have not ended and have no stuck pod (a lookup copies the values).
            ended = next(iter(lookup(self.ends, key)), None) if key in self.ends else None
            reason, since = info.waiting or ("", "")
            observed = Observed(
                phase=info.phase,
                job=job,
                job_exists=key in self.jobs,
                ended=ended,
                problems=tuple(lookup(self.pods, key)) if key in self.pods else (),
                reported=info.stuck[0] if info.stuck else None,
                missing_before=(namespace, info.name, job) in self._suspects,
                waiting_reason=reason,
                waiting_since=since,
                inputs_ready=reason == "WaitingOnProducer" and self._inputs_ready(namespace, info),
                attempts=info.attempts,
            )
            step = resync_step(
                observed, now, self.config.pod_stuck_report_seconds, self.config.pod_stuck_timeout_seconds, wakes
            )
            if step.action is Action.SUSPECT:
                suspects.add((namespace, info.name, job))
            elif step.action is not Action.NOTHING:
                due.append(Due(namespace, info.name, job, step, ended))
        self._suspects = suspects
        self.unwanted = unwanted
        return due

    def act(self, due: Due) -> None:
        step = due.step
        if step.action is Action.RECORD and due.ended is not None:
            # Often only the index lagging behind a Job end just recorded: the Job-end path reads it first.
            LOG.info("job %s of %s ended, the index shows it unrecorded: recording it", due.job, due.name)
            ended = {due.ended.type: {"reason": due.ended.reason, "message": due.ended.message}}
            artifact.job_ended(due.namespace, due.job, due.name, ended, self.artifacts, LOG)
        elif step.action is Action.RELAUNCH:
            artifact.relaunch_deleted(due.namespace, due.name, due.job)
        elif step.action in (Action.REPORT, Action.FAIL, Action.CLEAR):
            artifact.pod_stuck(due.namespace, due.name, due.job, step, self.artifacts)
        elif step.action is Action.NUDGE:
            LOG.info("the wake-up of %s is overdue (an operator restart lost it): nudging it", due.name)
            artifact.LATER.nudge(due.namespace, due.name, 0.0)

    def once(self) -> int:
        started = time.monotonic()
        due = self.walk(time.time())
        walked = time.monotonic() - started
        for item in due:
            try:
                self.act(item)
            except Exception:  # one Artifact's trouble (the API server away) must not end the walk
                LOG.exception("resync of %s failed; trying again on the next walk", item.name)
        for namespace, name in self.unwanted:
            try:
                suspension.stop(namespace, name)  # reads it, and stops it only if still unwanted
            except Exception:
                LOG.exception("stopping %s failed; trying again on the next walk", name)
        acted = len(due) + len(self.unwanted)
        if acted:
            LOG.info("resync: %d Artifact(s) acted on (walk %.3fs)", acted, walked)
        return acted

    def _run(self) -> None:
        # The first walk waits a little: the indices fill after the start-up handlers (and each Job's end is
        # delivered once by Kopf's own listing then).
        delay = min(self.config.resync_period_seconds, 10.0)
        while not self._stop.wait(delay):
            try:
                self.once()
            except Exception:  # never lose the thread
                LOG.exception("resync walk failed")
            delay = self.config.resync_period_seconds

    def start(self) -> None:
        # Kopf's Event posting (kopf.info/warn) reads context variables the start-up handler has: the thread gets them.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="datasweep-resync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


_RESYNC: Resync | None = None


@kopf.on.startup()
def start_resync(**kwargs: Any) -> None:
    global _RESYNC
    indices = (kwargs["artifact_index"], kwargs["job_index"], kwargs["job_end_index"], kwargs["pod_index"])
    _RESYNC = Resync(*indices, settings())
    _RESYNC.start()


@kopf.on.cleanup()
def stop_resync(**_: Any) -> None:
    if _RESYNC is not None:
        _RESYNC.stop()
