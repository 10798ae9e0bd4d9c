"""The pure decisions of core/recovery.py: what a pod's status says, whether a failed attempt is retried, and
what the resync does about each combination of an Artifact's phase, its Job and its pods."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from datasweep.core.recovery import (
    NON_TERMINAL,
    Action,
    JobEnd,
    Observed,
    PodProblem,
    Wakes,
    after_failure,
    job_end,
    pod_problem,
    resync_step,
    retry_backoff,
    wake_due,
)

STARTED = "2027-01-15T08:00:00Z"
T0 = datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()  # the pods' start, seconds since the epoch


def pending_pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "job-abc", "creationTimestamp": STARTED}, "status": {"phase": "Pending", **status}}


def waiting(reason: str, message: str = "", image: str = "worker:absent") -> dict[str, Any]:
    return {"name": "worker", "image": image, "state": {"waiting": {"reason": reason, "message": message}}}


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled_is_named(reason: str) -> None:
    message = 'Container image "worker:absent" is not present with pull policy of Never'
    problem = pod_problem(pending_pod(startTime=STARTED, containerStatuses=[waiting(reason, message)]))
    assert problem is not None
    assert (problem.pod, problem.reason) == ("job-abc", reason)
    assert problem.detail.startswith('image "worker:absent": Container image')
    assert problem.since == T0


def test_a_missing_secret_and_an_unschedulable_pod_are_named_with_what_they_lack() -> None:
    secret = waiting("CreateContainerConfigError", 'secret "openai" not found')
    problem = pod_problem(pending_pod(containerStatuses=[secret]))
    assert problem is not None
    assert problem.reason == "CreateContainerConfigError"
    assert problem.detail == 'secret "openai" not found'
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        "lastTransitionTime": "2027-01-15T08:00:30Z",
    }
    problem = pod_problem(pending_pod(conditions=[unschedulable]))
    assert problem is not None
    assert problem.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in problem.detail
    started = pod_problem(pending_pod(startTime=STARTED, containerStatuses=[waiting("ErrImagePull")]))
    assert started is not None
    assert problem.since - started.since == 30.0


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Pending", "containerStatuses": [waiting("ContainerCreating")]},  # pulling: waiting helps
        {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
        {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]},
        {"phase": "Failed", "containerStatuses": [waiting("ErrImagePull")]},  # over: the Job's end says it
    ],
)
def test_pods_that_start_or_ended_are_not_stuck(status: dict[str, Any]) -> None:
    assert pod_problem({"metadata": {"name": "p"}, "status": status}) is None


def test_a_job_end_is_its_true_terminal_condition() -> None:
    assert job_end({}) is None
    assert job_end({"conditions": [{"type": "Failed", "status": "False"}]}) is None
    ended = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 2"}
    assert job_end({"conditions": [{"type": "Suspended", "status": "True"}, ended]}) == JobEnd(
        "Failed", "PodFailurePolicy", "exit code 2"
    )
    assert job_end({"conditions": [{"type": "Complete", "status": "True"}]}) == JobEnd("Complete")


@pytest.mark.parametrize(
    ("attempts", "retries", "codes", "job_reason", "expected"),
    [
        (1, 2, [1], "BackoffLimitExceeded", ("JobFailed", True)),
        (3, 2, [1], "BackoffLimitExceeded", ("JobFailed", False)),
        (1, 2, [137], "DeadlineExceeded", ("JobFailed", True)),
        (1, 2, [2], "BackoffLimitExceeded", ("BadInput", False)),  # bad input: never retried, whatever is left
        (1, 2, [], "PodFailurePolicy", ("BadInput", False)),  # the pods are gone; the Job's reason says it
        (1, 2, [1, 2], "BackoffLimitExceeded", ("BadInput", False)),  # one of several nodes said bad input
        (1, 0, [1], "BackoffLimitExceeded", ("JobFailed", False)),
    ],
)
def test_bad_input_is_never_retried(
    attempts: int, retries: int, codes: list[int], job_reason: str, expected: tuple[str, bool]
) -> None:
    assert after_failure(attempts, retries, codes, job_reason) == expected


PHASES = ("Pending", "Waiting", "Running", "Retrying", "Ready", "Failed")
ENDS = (None, JobEnd("Complete"), JobEnd("Failed", "BackoffLimitExceeded"))
IMAGE = PodProblem("job-abc", "ErrImageNeverPull", 'image "worker:absent"', T0)
REPORT, FAIL = 60.0, 600.0


def expected_action(
    phase: str, exists: bool, ended: JobEnd | None, missing_before: bool, waited: float | None
) -> Action:
    """The rule, written out once more by cases, to check every combination against."""
    if phase in ("Pending", "Waiting"):
        return Action.RECORD if exists and ended else Action.NOTHING
    if phase != "Running":
        return Action.NOTHING
    if not exists:
        return Action.RELAUNCH if missing_before else Action.SUSPECT
    if ended:
        return Action.RECORD
    if waited is None:
        return Action.NOTHING
    return Action.FAIL if waited >= FAIL else Action.REPORT if waited >= REPORT else Action.NOTHING


@pytest.mark.parametrize(
    ("phase", "exists", "ended", "missing_before", "waited"),
    list(itertools.product(PHASES, (True, False), ENDS, (True, False), (None, 0.0, 59.0, 60.0, 599.0, 600.0, 1e5))),
)
def test_every_combination_of_phase_job_and_pods(
    phase: str, exists: bool, ended: JobEnd | None, missing_before: bool, waited: float | None
) -> None:
    observed = Observed(
        phase=phase,
        job="job",
        job_exists=exists,
        ended=ended if exists else None,
        problems=(IMAGE,) if waited is not None else (),
        missing_before=missing_before,
    )
    step = resync_step(observed, T0 + (waited or 0.0), REPORT, FAIL)
    assert step.action is expected_action(phase, exists, ended if exists else None, missing_before, waited)
    if step.action in (Action.REPORT, Action.FAIL):
        assert step.problem == IMAGE
        assert step.waited == waited
    assert (phase in NON_TERMINAL) or step.action is Action.NOTHING


def test_a_reported_problem_is_reported_once_then_fails_and_clears_when_the_pod_starts() -> None:
    def step(reported: str | None, problems: tuple[PodProblem, ...], waited: float) -> Action:
        observed = Observed("Running", "job", True, None, problems, reported=reported)
        return resync_step(observed, T0 + waited, REPORT, FAIL).action

    assert step(None, (IMAGE,), 61) is Action.REPORT
    assert step("ErrImageNeverPull", (IMAGE,), 120) is Action.NOTHING  # said already
    assert step("Unschedulable", (IMAGE,), 120) is Action.REPORT  # another cause now
    assert step("ErrImageNeverPull", (IMAGE,), 600) is Action.FAIL
    assert step("ErrImageNeverPull", (), 120) is Action.CLEAR
    # Several stuck pods (a multi-node Job): the one stuck longest decides.
    later = PodProblem("job-def", "Unschedulable", "no GPU", T0 + 500)
    observed = Observed("Running", "job", True, None, (later, IMAGE))
    assert resync_step(observed, T0 + 600, REPORT, FAIL).problem == IMAGE


def test_a_running_artifact_without_a_job_name_is_left_alone() -> None:
    assert resync_step(Observed("Running", "", False, None), T0, REPORT, FAIL).action is Action.NOTHING


WAKES = Wakes(retry_backoff=10.0, input_wait_timeout=600.0, grace=30.0)


@pytest.mark.parametrize(
    ("phase", "reason", "attempts", "inputs_ready", "due"),
    [
        ("Retrying", "RetryBackoff", 1, False, T0 + 11),  # the backoff, + 1 s for whole seconds
        ("Retrying", "RetryBackoff", 3, False, T0 + 41),  # doubled per attempt
        ("Retrying", "RetryBackoff", 12, False, T0 + 601),  # at most MAX_BACKOFF
        ("Waiting", "InputMissing", 0, False, T0 + 600),  # the wait for an input to be created times out
        ("Waiting", "WaitingOnProducer", 0, True, T0),  # every producer is Ready: their ends' wake-up is due
        ("Waiting", "WaitingOnProducer", 0, False, None),  # a producer still runs
        ("Waiting", "Throttled", 0, False, None),  # the admission queue wakes it
        ("Pending", "", 0, False, None),
    ],
)
def test_when_a_waiting_artifacts_own_wake_up_is_due(
    phase: str, reason: str, attempts: int, inputs_ready: bool, due: float | None
) -> None:
    observed = Observed(
        phase=phase,
        job="job-abc",
        job_exists=False,
        ended=None,
        waiting_reason=reason,
        waiting_since=STARTED if phase != "Pending" else "",
        inputs_ready=inputs_ready,
        attempts=attempts,
    )
    assert wake_due(observed, WAKES) == due
    if due is not None:
        assert resync_step(observed, due + 29, 60, 900, WAKES).action is Action.NOTHING  # its own wake-up first
        assert resync_step(observed, due + 30, 60, 900, WAKES).action is Action.NUDGE
        assert resync_step(observed, due + 30, 60, 900).action is Action.NOTHING  # without the settings: as before
    assert retry_backoff(2, 10.0) == 20.0
