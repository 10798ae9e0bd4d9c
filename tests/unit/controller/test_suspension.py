"""Suspend, resume and delete, as the Artifact handler and controller/suspension.py act on one Artifact: nothing
starts while every consumer is suspended or deleted, a Job in flight is suspended (not deleted, not a failed
attempt) and resumed as the same Job; an Artifact another running Experiment consumes keeps running.

Against the in-memory API of test_artifact_answers (the client layer monkeypatched); the real Job controller,
pods and workers: tests/e2e/test_suspend_real_node.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from datasweep.controller import artifact as handler
from datasweep.controller import suspension
from datasweep.controller.admission import Admission
from datasweep.core import naming
from datasweep.k8s import client, labels

from .test_artifact_answers import NS, FakeCluster, planned, reconcile
from .test_artifact_answers import cluster as cluster  # the fixture


class Jobs:
    """Jobs as the API server keeps them: a create of an existing name answers the existing Job (409)."""

    def __init__(self, fake: FakeCluster) -> None:
        self.fake = fake

    def create_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        created = name not in self.fake.jobs
        self.fake.jobs.setdefault(name, copy.deepcopy(body))
        return copy.deepcopy(self.fake.jobs[name]), created

    def set_job_suspended(self, namespace: str, name: str, suspended: bool) -> bool:
        if name not in self.fake.jobs:
            return False
        self.fake.jobs[name]["spec"]["suspend"] = suspended
        return True


@pytest.fixture
def world(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    jobs = Jobs(cluster)
    monkeypatch.setattr(client, "create_job", jobs.create_job)
    monkeypatch.setattr(client, "set_job_suspended", jobs.set_job_suspended)
    experiments(monkeypatch, e=False)
    return cluster


def experiments(monkeypatch: pytest.MonkeyPatch, **suspended: bool) -> None:
    """The experiment index: the Experiments that exist, with their spec.suspend."""
    index = {("suspend", NS, name): [value] for name, value in suspended.items()}
    monkeypatch.setattr(handler, "_EXPERIMENTS", index)


def generate(world: FakeCluster, *consumers: str) -> str:
    body, _ = planned()  # first experiment "e"
    for consumer in consumers:
        body["metadata"].setdefault("labels", {}).update(labels.consumer_marks(consumer, "b")["labels"])
    return str(world.add(body)["metadata"]["name"])


def test_nothing_starts_while_every_consumer_is_suspended(world: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    experiments(monkeypatch, e=True)
    name = generate(world)
    reconcile(world, name)
    assert world.status(name)["phase"] == "Suspended"
    assert world.ready(name)["reason"] == "Suspended"
    assert "suspended: e" in world.ready(name)["message"]
    assert world.jobs == {}
    assert handler.admission().running(NS, "e") == 0  # it holds no slot
    experiments(monkeypatch, e=False)
    suspension.resume(NS, name)
    assert world.status(name)["phase"] == "Running"
    assert list(world.jobs) == [naming.job_name(name, 0)]


def test_a_running_job_is_suspended_and_resumed_as_the_same_attempt(
    world: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = generate(world)
    reconcile(world, name)
    job = naming.job_name(name, 0)
    assert (world.status(name)["phase"], world.status(name)["attempts"]) == ("Running", 1)
    assert handler.admission().running(NS, "e") == 1

    experiments(monkeypatch, e=True)
    suspension.stop(NS, name)
    status = world.status(name)
    assert (status["phase"], status["suspendedJob"], status["attempts"]) == ("Suspended", job, 1)
    assert world.jobs[job]["spec"]["suspend"] is True  # its pods stop; the Job and its attempt stay
    assert handler.admission().running(NS, "e") == 0  # the slot went to others

    experiments(monkeypatch, e=False)
    suspension.resume(NS, name)
    status = world.status(name)
    assert (status["phase"], status["job"], status["attempts"]) == ("Running", job, 1)  # not a failed attempt
    assert "suspendedJob" not in status
    assert world.jobs[job]["spec"]["suspend"] is False
    assert list(world.jobs) == [job]


def test_a_job_that_ends_while_suspended_is_recorded(world: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    name = generate(world)
    reconcile(world, name)
    experiments(monkeypatch, e=True)
    suspension.stop(NS, name)
    job = naming.job_name(name, 0)
    outcome = handler._record_job(NS, job, name, {"Complete": {"status": "True"}}, handler.LOG)
    assert outcome == ("e", True)
    assert world.status(name)["phase"] == "Ready"
    assert "suspendedJob" not in world.status(name)


def test_deleting_the_only_consumer_stops_its_job(world: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    name = generate(world)
    reconcile(world, name)
    experiments(monkeypatch)  # e was deleted
    suspension.stop(NS, name)
    assert world.status(name)["phase"] == "Suspended"
    assert "deleted: e" in world.ready(name)["message"]


def test_an_artifact_another_running_experiment_consumes_keeps_running(
    world: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = generate(world, "e", "f")
    reconcile(world, name)
    experiments(monkeypatch, e=True, f=False)
    suspension.stop(NS, name)
    assert world.status(name)["phase"] == "Running"
    assert "suspend" not in world.jobs[naming.job_name(name, 0)]["spec"]
    experiments(monkeypatch, f=False)  # e deleted: f still runs
    suspension.stop(NS, name)
    assert world.status(name)["phase"] == "Running"


def test_a_restarted_operator_stops_a_running_artifact_whose_consumers_went_away(
    world: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted (or suspended) while no operator watched: the Artifact's resume handler finds it."""
    name = generate(world)
    reconcile(world, name)
    experiments(monkeypatch)
    reconcile(world, name)
    assert world.status(name)["phase"] == "Suspended"
    assert world.jobs[naming.job_name(name, 0)]["spec"]["suspend"] is True


def test_the_resync_stops_a_job_whose_suspend_was_missed(world: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Level-triggered: the Artifact was launched while its Experiment was being suspended (or the operator was
    down): the periodic walk, not an event, suspends its Job."""
    from datasweep.api.settings import OperatorSettings
    from datasweep.controller.resync import Resync

    name = generate(world)
    reconcile(world, name)
    job = naming.job_name(name, 0)
    jobs = {(NS, job): [name]}
    resync = Resync(world.index(), jobs, {}, {}, OperatorSettings(data_root=None))  # type: ignore[arg-type]
    assert resync.walk(0.0) == []  # its Experiment runs: nothing to do
    assert resync.unwanted == []
    experiments(monkeypatch, e=True)
    resync = Resync(world.index(), jobs, {}, {}, OperatorSettings(data_root=None))  # type: ignore[arg-type]
    assert resync.once() == 1
    assert (world.status(name)["phase"], world.status(name)["suspendedJob"]) == ("Suspended", job)
    assert world.jobs[job]["spec"]["suspend"] is True
    assert handler.admission().running(NS, "e") == 0
    resync = Resync(world.index(), jobs, {}, {}, OperatorSettings(data_root=None))  # type: ignore[arg-type]
    assert resync.once() == 0  # Suspended: not walked again


def test_an_operator_run_that_ended_leaves_no_experiment_index_behind(
    world: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator started again in the same process must not judge Artifacts by the Experiments an earlier run
    saw: with the stale index an Artifact whose Experiment was never indexed would be suspended."""
    monkeypatch.setattr(handler, "_EXPERIMENTS", {})  # the earlier run's index, without this Experiment
    assert handler.why_consumers_stopped(NS, ["e"]) is not None
    handler.stop_admission()
    assert handler.why_consumers_stopped(NS, ["e"]) is None
    monkeypatch.setattr(handler, "_ADMISSION", Admission(lambda ns: []))  # the next run's startup
    name = generate(world)
    reconcile(world, name)
    assert world.status(name)["phase"] == "Running"
