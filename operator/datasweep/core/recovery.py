"""What to do about an Artifact whose Job or pods left the happy path: pure decisions, no I/O.

The Job-end handler asks `after_failure` whether a failed attempt is retried; the resync (controller/resync.py)
asks `resync_step` what the state of the world says about one non-terminal Artifact: its Job ended unseen, its
Job is gone, or its pod is stuck where no wait helps (an image that cannot be pulled, a Secret that does not
exist, no node that fits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

# The workers' exit code for input that no retry fixes (workloads/*/cli.py: EXIT_BAD_INPUT, click's usage error).
EXIT_BAD_INPUT = 2
# The Job controller's reason when a podFailurePolicy FailJob rule matched (k8s/builders.py: exit code 2 only).
POD_FAILURE_POLICY = "PodFailurePolicy"

# A container waiting for one of these never starts by waiting longer (kubelet reasons).
STUCK_WAITING = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"}
)
UNSCHEDULABLE = "Unschedulable"
STUCK_REASONS = STUCK_WAITING | {UNSCHEDULABLE}
NON_TERMINAL = ("Pending", "Waiting", "Running", "Retrying")
# The longest wait between two attempts (the backoff doubles from retryBackoffSeconds up to this).
MAX_BACKOFF = 600.0


@dataclass(frozen=True)
class PodProblem:
    """A pod of a Job that cannot start: the kubelet's or scheduler's reason, what it names, since when."""

    pod: str
    reason: str
    detail: str  # the image, the missing Secret, the resource no node has
    since: float  # seconds since the epoch


@dataclass(frozen=True)
class JobEnd:
    """A Job's terminal condition (Complete or Failed) with its reason and message."""

    type: str
    reason: str = ""
    message: str = ""


def _epoch(timestamp: Any) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """Why this pod cannot start, if it is stuck for a reason that waiting does not fix."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    name = str(meta.get("name", ""))
    started = _epoch(status.get("startTime")) or _epoch(meta.get("creationTimestamp")) or 0.0
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_WAITING:
            message = str(waiting.get("message") or "").strip()
            if reason == "CreateContainerConfigError":
                detail = message or f"container {container.get('name')}"
            else:
                detail = f'image "{container.get("image")}"' + (f": {message}" if message else "")
            return PodProblem(name, str(reason), detail[:512], started)
    for condition in status.get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            UNSCHEDULABLE,
        ):
            since = _epoch(condition.get("lastTransitionTime")) or started
            return PodProblem(name, UNSCHEDULABLE, str(condition.get("message") or "")[:512], since)
    return None


def job_end(status: Mapping[str, Any]) -> JobEnd | None:
    """The terminal condition of a Job's status, or None while it runs."""
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return JobEnd(str(condition["type"]), str(condition.get("reason", "")), str(condition.get("message", "")))
    return None


def retry_backoff(attempts: int, base: float) -> float:
    """Seconds a failed attempt waits before the next one: `base`, doubling per attempt, at most MAX_BACKOFF."""
    return min(base * 2.0 ** max(attempts - 1, 0), MAX_BACKOFF)


def after_failure(attempts: int, retries: int, exit_codes: Iterable[int], job_reason: str) -> tuple[str, bool]:
    """(reason, retry) after a failed attempt: bad input (exit code 2) is never retried, since every attempt
    would fail the same way; any other failure is retried while attempts <= retries."""
    if EXIT_BAD_INPUT in set(exit_codes) or job_reason == POD_FAILURE_POLICY:
        return "BadInput", False
    return "JobFailed", attempts <= retries


class Action(Enum):
    NOTHING = "nothing"
    RECORD = "record"  # the Job ended and the Artifact does not say so yet: the Job-end path records it
    SUSPECT = "suspect"  # the Job is not in the index: gone, or just created; decided on the next walk
    RELAUNCH = "relaunch"  # the Job is gone (deleted by hand or by the cluster): the next attempt, Event JobDeleted
    REPORT = "report"  # a pod is stuck: say why on the Ready condition
    FAIL = "fail"  # stuck longer than the limit: fail the Artifact with that reason, delete the Job
    CLEAR = "clear"  # a reported problem went away (the image arrived, a node was added)
    NUDGE = "nudge"  # its own wake-up is overdue (lost with an operator restart): its handler looks again


@dataclass(frozen=True)
class Observed:
    """One Artifact as the indices show it, with its current Job's state."""

    phase: str
    job: str  # the Job of the current attempt (status.job while Running, else the next attempt's name)
    job_exists: bool
    ended: JobEnd | None
    problems: Sequence[PodProblem] = ()
    reported: str | None = None  # the stuck reason the Ready condition already gives
    missing_before: bool = False  # the Job was missing on the previous walk too
    # Waiting or Retrying: status.waitingReason and waitingSince; Waiting on producers: are they all Ready now
    waiting_reason: str = ""
    waiting_since: str = ""
    inputs_ready: bool = False
    attempts: int = 0


@dataclass(frozen=True)
class Wakes:
    """When a Waiting or Retrying Artifact's own wake-up comes (the operator's settings), and how late the resync
    may find it before it nudges the Artifact (a wake-up on time is never doubled)."""

    retry_backoff: float  # retryBackoffSeconds: a Retrying Artifact's handler asks to be nudged after the backoff
    input_wait_timeout: float  # inputWaitTimeoutSeconds: Kopf's polls for a missing input end by then
    grace: float  # resyncPeriodSeconds


@dataclass(frozen=True)
class Step:
    action: Action
    problem: PodProblem | None = None
    waited: float = 0.0


def wake_due(observed: Observed, wakes: Wakes) -> float | None:
    """When a Waiting or Retrying Artifact's wake-up is due (seconds since the epoch), or None while it waits on
    something that has not happened: a Retrying one after its backoff (controller/artifact.py, `reconcile`), one
    waiting for an input to be created when the wait times out, one waiting on producers once they are all Ready
    (each producer's end wakes it, `finished`). Waiting for a slot: the admission queue wakes it."""
    since = _epoch(observed.waiting_since)
    if since is None:
        return None
    if observed.phase == "Retrying":
        return since + retry_backoff(observed.attempts, wakes.retry_backoff) + 1.0  # + 1 s: whole seconds
    if observed.phase == "Waiting" and observed.waiting_reason == "InputMissing":
        return since + wakes.input_wait_timeout
    if observed.phase == "Waiting" and observed.waiting_reason == "WaitingOnProducer" and observed.inputs_ready:
        return since
    return None


def resync_step(
    observed: Observed, now: float, report_after: float, fail_after: float, wakes: Wakes | None = None
) -> Step:
    """What the state of the world asks for one Artifact (see Action)."""
    if observed.phase in ("Pending", "Waiting", "Retrying"):
        # The operator stopped after creating the Job and before recording it: its end is recorded all the same.
        if observed.phase != "Retrying" and observed.job_exists and observed.ended is not None:
            return Step(Action.RECORD)
        due = wake_due(observed, wakes) if wakes is not None else None
        late = due is not None and wakes is not None and now >= due + wakes.grace
        return Step(Action.NUDGE) if late else Step(Action.NOTHING)
    if observed.phase != "Running" or not observed.job:
        return Step(Action.NOTHING)
    if not observed.job_exists:
        # Twice in a row, a walk apart: a Job created a moment ago may not be indexed yet.
        return Step(Action.RELAUNCH if observed.missing_before else Action.SUSPECT)
    if observed.ended is not None:
        return Step(Action.RECORD)
    if not observed.problems:
        return Step(Action.CLEAR) if observed.reported else Step(Action.NOTHING)
    problem = min(observed.problems, key=lambda p: (p.since, p.pod))
    waited = max(0.0, now - problem.since)
    if waited >= fail_after:
        return Step(Action.FAIL, problem, waited)
    if waited >= report_after and observed.reported != problem.reason:
        return Step(Action.REPORT, problem, waited)
    return Step(Action.NOTHING, problem, waited)
