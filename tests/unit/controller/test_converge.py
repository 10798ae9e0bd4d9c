"""Converging to the world, not to the events seen (issue 22): a handler working from an old copy never moves an
Artifact backwards; bad input fails at once; the resync records a Job that ended unseen, relaunches a deleted
Job, and names (then fails) a pod that cannot start.

The handlers run against the in-memory API of test_artifact_answers, whose status patches honour the
resourceVersion precondition as the API server does (409 Conflict).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from datasweep.api.settings import OperatorSettings
from datasweep.controller import artifact as handler
from datasweep.controller.aggregate import Planned, summarize_batch, summarize_experiment
from datasweep.controller.indices import ExperimentSummary, artifact_info
from datasweep.controller.resync import Resync
from datasweep.core import naming
from datasweep.core.recovery import Action, JobEnd, PodProblem
from datasweep.k8s import client, labels
from tests.unit.controller.test_artifact_answers import NS, FakeCluster, cluster, planned, reconcile

__all__ = ["cluster"]  # the fixture


def restart_handler(fake: FakeCluster, old: dict[str, Any], reason: str) -> None:
    """The restarted operator's create/resume handler, given the copy its listing saw."""
    handler._ARTIFACTS = fake.index()
    handler.artifact_changed(
        namespace=NS, name=old["metadata"]["name"], retry=0, logger=handler.LOG, body=kopf.Body(old), reason=reason
    )


def test_an_old_copy_resumed_after_the_job_end_was_recorded_never_moves_the_artifact_back(
    cluster: FakeCluster,
) -> None:
    """The bench's race: the operator created the Job and was killed before writing the Artifact's status; the
    restarted operator recorded the Job's end (Ready), then ran the create handler on the copy it had listed
    (no status: a new Artifact to it, no diff base), which used to write Running back ("already exists:
    reused") and left the Artifact Running for good."""
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    listed = cluster.get_custom("Artifact", NS, name)  # what the restarted operator's listing holds
    assert listed is not None
    assert "status" not in listed
    job = naming.job_name(name, 0)
    cluster.jobs[job] = {}  # created by the killed operator, which never recorded it
    handler._JOBS = {(NS, job): [name]}
    handler._record_job(NS, job, name, {"Complete": {}}, handler.LOG)  # its end, seen by the new operator
    assert cluster.status(name)["phase"] == "Ready"

    restart_handler(cluster, listed, "create")

    status = cluster.status(name)
    assert status["phase"] == "Ready", status
    assert cluster.ready(name)["reason"] == "Produced"
    assert list(cluster.jobs) == [job]
    assert handler.admission().running(NS, "e") == 0  # the slot the old copy took is given back


def test_an_old_copy_never_moves_a_failed_artifact_back_to_running(cluster: FakeCluster) -> None:
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    listed = cluster.get_custom("Artifact", NS, name)  # Running, attempt 1
    job = cluster.status(name)["job"]
    handler._JOBS = {(NS, job): [name]}
    bad = {"Failed": {"reason": "PodFailurePolicy", "message": "exit code 2"}}
    handler._record_job(NS, job, name, bad, handler.LOG)
    assert cluster.status(name)["phase"] == "Failed"
    assert listed is not None
    listed["status"] = {}  # even a copy from before the launch
    restart_handler(cluster, listed, "create")
    assert cluster.status(name)["phase"] == "Failed"
    assert list(cluster.jobs) == [job]


def test_a_write_that_loses_to_a_label_patch_is_recomputed_not_dropped(cluster: FakeCluster) -> None:
    """A 409 caused by something unrelated (a consumer label added meanwhile) re-reads and still launches."""
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    listed = cluster.get_custom("Artifact", NS, name)
    cluster.patch_custom("Artifact", NS, name, {"metadata": {"annotations": {labels.NUDGED: "x"}}})
    assert listed is not None
    restart_handler(cluster, listed, "create")
    assert cluster.status(name)["phase"] == "Running"
    assert cluster.status(name)["attempts"] == 1


def exited(code: int, last_line: str) -> dict[str, Any]:
    """A pod of a failed Job, as the Job's pods LIST returns it."""
    terminated = {"exitCode": code, "reason": "Error", "message": f"starting\n{last_line}\n"}
    return {
        "metadata": {"name": "pod-1"},
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": terminated}}]},
    }


@pytest.mark.parametrize(("code", "job_reason"), [(2, "PodFailurePolicy"), (2, "BackoffLimitExceeded")])
def test_bad_input_fails_after_one_attempt_and_says_so(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, code: int, job_reason: str
) -> None:
    line = "error: generation.baseURL http://nowhere:1/v1 is unreachable"
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [exited(code, line)])
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    job = cluster.status(name)["job"]
    handler.job_ended(NS, job, name, {"Failed": {"reason": job_reason}}, cluster.index(), handler.LOG)  # type: ignore[arg-type]
    status = cluster.status(name)
    assert (status["phase"], status["attempts"]) == ("Failed", 1)
    ready = cluster.ready(name)
    assert ready["reason"] == "BadInput"
    assert line in ready["message"]
    assert "exit code 2: not retried" in ready["message"]
    assert labels.RETRY in ready["message"]
    assert labels.FAILED_ATTEMPT not in cluster.artifacts[name]["metadata"].get("annotations", {})
    assert handler.admission().running(NS, "e") == 0
    assert (name, "BadInput", ready["message"]) in cluster.events


def test_another_failure_is_still_retried(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [exited(1, "connection reset")])
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    handler._record_job(
        NS, cluster.status(name)["job"], name, {"Failed": {"reason": "BackoffLimitExceeded"}}, handler.LOG
    )
    assert cluster.status(name)["phase"] == "Retrying"
    assert cluster.ready(name)["reason"] == "JobFailed"


class World:
    """Kopf's indices as the resync reads them: Jobs that exist, Jobs that ended, pods that cannot start."""

    def __init__(self, fake: FakeCluster) -> None:
        self.fake = fake
        self.ends: dict[Any, list[JobEnd]] = {}
        self.pods: dict[Any, list[PodProblem]] = {}
        self.config = OperatorSettings(data_root=None, pod_stuck_report_seconds=60, pod_stuck_timeout_seconds=600)
        self.deleted: list[str] = []

    def resync(self) -> Resync:
        jobs = {(NS, job): [body["metadata"]["labels"][labels.ARTIFACT]] for job, body in self.fake.jobs.items()}
        return Resync(self.fake.index(), jobs, self.ends, self.pods, self.config)  # type: ignore[arg-type]


@pytest.fixture
def world(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> World:
    state = World(cluster)
    monkeypatch.setattr(client, "job_exists", lambda namespace, name: name in cluster.jobs)

    def delete_job(namespace: str, name: str) -> bool:
        state.deleted.append(name)
        return cluster.jobs.pop(name, None) is not None

    monkeypatch.setattr(client, "delete_job", delete_job)
    monkeypatch.setattr(handler, "settings", lambda: state.config)
    return state


def running(cluster: FakeCluster) -> tuple[str, str]:
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    assert cluster.status(name)["phase"] == "Running"
    return name, cluster.status(name)["job"]


def walk(world: World, resync: Resync | None = None, at: float | None = None) -> list[Action]:
    resync = resync or world.resync()
    due = resync.walk(at if at is not None else datetime.now(UTC).timestamp())
    for item in due:
        resync.act(item)
    return [item.step.action for item in due]


def test_a_job_deleted_mid_run_is_relaunched_as_the_next_attempt(cluster: FakeCluster, world: World) -> None:
    name, job = running(cluster)
    assert walk(world) == []
    del cluster.jobs[job]  # deleted by hand
    resync = world.resync()
    assert walk(world, resync) == []  # missing once: maybe only not indexed yet
    assert cluster.status(name)["job"] == job
    resync.jobs = {}
    assert walk(world, resync) == [Action.RELAUNCH]
    status = cluster.status(name)
    assert (status["phase"], status["attempts"], status["job"]) == ("Running", 2, naming.job_name(name, 1))
    assert list(cluster.jobs) == [naming.job_name(name, 1)]
    assert any(reason == "JobDeleted" and job in message for _, reason, message in cluster.events)
    assert walk(world) == []  # the new Job is there: nothing more


def test_a_job_only_missing_from_the_index_is_not_relaunched(cluster: FakeCluster, world: World) -> None:
    name, job = running(cluster)
    resync = world.resync()
    resync.jobs = {}  # the index lags behind a Job that exists
    walk(world, resync)
    assert walk(world, resync) == [Action.RELAUNCH]  # the GET finds it: nothing done
    assert list(cluster.jobs) == [job]
    assert cluster.status(name)["attempts"] == 1


def test_a_job_that_ended_unseen_is_recorded(cluster: FakeCluster, world: World) -> None:
    name, job = running(cluster)
    world.ends[(NS, job)] = [JobEnd("Complete")]
    assert walk(world) == [Action.RECORD]
    assert cluster.status(name)["phase"] == "Ready"
    assert handler.admission().running(NS, "e") == 0
    assert walk(world) == []  # Ready: terminal


def test_a_launch_lost_in_a_crash_whose_job_ended_is_recorded(cluster: FakeCluster, world: World) -> None:
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    job = naming.job_name(name, 0)
    cluster.jobs[job] = {"metadata": {"labels": {labels.ARTIFACT: name}}}
    world.ends[(NS, job)] = [JobEnd("Complete")]
    assert walk(world) == [Action.RECORD]
    assert (cluster.status(name)["phase"], cluster.status(name)["attempts"]) == ("Ready", 1)


def test_a_pod_that_cannot_pull_its_image_is_named_then_fails_the_artifact(cluster: FakeCluster, world: World) -> None:
    name, job = running(cluster)
    now = datetime.now(UTC).timestamp()
    image = PodProblem(f"{job}-x7", "ErrImageNeverPull", 'image "worker:absent": not present', now - 30)
    world.pods[(NS, job)] = [image]
    assert walk(world, at=now) == []  # 30 s: not yet
    assert walk(world, at=now + 31) == [Action.REPORT]
    ready = cluster.ready(name)
    assert (cluster.status(name)["phase"], ready["reason"]) == ("Running", "ErrImageNeverPull")
    assert 'image "worker:absent"' in ready["message"]
    assert "fails if this lasts 600s" in ready["message"]
    assert walk(world, at=now + 100) == []  # said once

    # Visible on the Experiment and its Batch, before anything failed.
    plan = Planned(1, 1, frozenset({name}), frozenset({name}), "b", 1)
    experiment = summarize_experiment("e", plan, [artifact_info(name, cluster.artifacts[name])], 20)
    stalled = next(c for c in experiment["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ErrImageNeverPull")
    assert name in stalled["message"]
    assert "worker:absent" in stalled["message"]
    succeeded = next(c for c in experiment["conditions"] if c["type"] == "Succeeded")
    assert "1 cannot start" in succeeded["message"]
    summary = ExperimentSummary("e", (), (), (), (), 0, stalled=(stalled["reason"], stalled["message"]))
    batch = summarize_batch([summary], 20)
    assert batch["conditions"][0]["type"] == "Stalled"
    assert "worker:absent" in batch["conditions"][0]["message"]
    assert summarize_batch([dataclasses.replace(summary, stalled=None)], 20, batch["conditions"])["conditions"] == []

    assert walk(world, at=now + 600) == [Action.FAIL]
    assert cluster.status(name)["phase"] == "Failed"
    ready = cluster.ready(name)
    assert ready["reason"] == "ErrImageNeverPull"
    assert "podStuckTimeoutSeconds" in ready["message"]
    assert labels.RETRY in ready["message"]
    assert world.deleted == [job]
    assert handler.admission().running(NS, "e") == 0


def test_a_reported_problem_that_went_away_is_taken_back(cluster: FakeCluster, world: World) -> None:
    name, job = running(cluster)
    now = datetime.now(UTC).timestamp()
    world.pods[(NS, job)] = [PodProblem("p", "Unschedulable", "0/1 nodes: Insufficient nvidia.com/gpu", now - 90)]
    assert walk(world, at=now) == [Action.REPORT]
    world.pods.clear()  # a node was added
    assert walk(world, at=now) == [Action.CLEAR]
    assert cluster.ready(name)["reason"] == "JobRunning"
    assert walk(world, at=now) == []


STARTED = "2026-01-01T00:00:00Z"


def test_a_retry_whose_wake_up_was_lost_is_nudged_once_overdue(
    cluster: FakeCluster, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [exited(1, "connection reset")])
    nudged: list[tuple[str, str, float]] = []
    monkeypatch.setattr(
        handler.LATER, "nudge", lambda namespace, name, delay, retry_in=1.0: nudged.append((namespace, name, delay))
    )
    name, job = running(cluster)
    handler._record_job(NS, job, name, {"Failed": {"reason": "BackoffLimitExceeded"}}, handler.LOG)
    # Its handler, which would have asked for a nudge after the backoff, never ran: the operator restarted.
    assert cluster.status(name)["phase"] == "Retrying"
    failed = datetime.fromisoformat(cluster.status(name)["waitingSince"].replace("Z", "+00:00")).timestamp()
    backoff = world.config.retry_backoff_seconds  # the first retry's
    assert walk(world, at=failed + backoff + 1) == []  # due just now: the handler's own nudge comes first
    assert nudged == []
    assert walk(world, at=failed + backoff + 1 + world.config.resync_period_seconds) == [Action.NUDGE]
    assert nudged == [(NS, name, 0.0)]
    cluster.artifacts[name]["status"]["waitingSince"] = STARTED  # the backoff long over
    reconcile(cluster, name)  # what the nudge runs
    status = cluster.status(name)
    assert (status["phase"], status["attempts"], status["job"]) == ("Running", 2, naming.job_name(name, 1))
    assert walk(world) == []


def test_a_dependent_whose_producers_ended_unseen_is_nudged(
    cluster: FakeCluster, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    nudged: list[tuple[str, str, float]] = []
    monkeypatch.setattr(
        handler.LATER, "nudge", lambda namespace, name, delay, retry_in=1.0: nudged.append((namespace, name, delay))
    )
    generate, training = planned()
    cluster.add(generate)
    cluster.add(training)
    producer, dependent = generate["metadata"]["name"], training["metadata"]["name"]
    reconcile(cluster, producer)
    reconcile(cluster, dependent)
    assert cluster.status(dependent)["waitingReason"] == "WaitingOnProducer"
    later = datetime.now(UTC).timestamp() + world.config.resync_period_seconds + 1
    assert walk(world, at=later) == []  # the producer runs: its end wakes the dependent
    cluster.artifacts[producer]["status"]["phase"] = "Ready"  # recorded while the wake-up of its dependents was lost
    assert walk(world) == []  # perhaps on its way
    assert walk(world, at=later) == [Action.NUDGE]
    assert nudged == [(NS, dependent, 0.0)]


def test_an_artifact_waiting_for_a_slot_is_not_nudged(cluster: FakeCluster, world: World) -> None:
    name, _ = running(cluster)
    cluster.artifacts[name]["status"].update(phase="Waiting", waitingReason="Throttled", waitingSince=STARTED)
    assert walk(world) == []  # the admission queue wakes it when a slot frees
