"""Every Artifact gets an answer: hand-made inputs that cycle or do not exist, an unusable worker spec, a Job
whose pods cannot be created, and a failed training attempt that retries on its own while `retries` allows.

The handler functions run against an in-memory API (the client layer monkeypatched); the Artifacts are what
the planner and `builders.artifact_body` write for a real Experiment.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.api.worker import dump_worker_spec
from datasweep.controller import artifact as handler
from datasweep.controller.admission import Admission
from datasweep.controller.indices import artifact_info
from datasweep.core import naming
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment
from datasweep.core.worker_spec import worker_spec_for
from datasweep.k8s import builders, client, labels

NS = "team"


class FakeCluster:
    """The objects the handlers read and write, and the Events they post."""

    def __init__(self) -> None:
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body["metadata"].update(namespace=NS, uid=f"uid-{body['metadata']['name']}", resourceVersion="1")
        self.artifacts[body["metadata"]["name"]] = body
        return body

    def _written(self, name: str) -> None:
        meta = self.artifacts[name]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def index(self) -> dict[Any, list[Any]]:
        """What Kopf's artifact_index holds for these Artifacts (the keys the handler reads)."""
        keys: dict[Any, list[Any]] = {}
        for name, body in self.artifacts.items():
            keys.setdefault(("art", NS, name), []).append(artifact_info(name, body))
            for input_name in body["spec"].get("inputs") or []:
                keys.setdefault(("dep", NS, input_name), []).append(name)
        return keys

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.artifacts[name].get("status") or {})

    def ready(self, name: str) -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == "Ready")

    # the client layer
    def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.artifacts.get(name))

    def patch_status(
        self, kind: str, namespace: str, name: str, changes: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if resource_version is not None and resource_version != self.artifacts[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")  # what the API server answers a stale precondition
        status = self.artifacts[name].setdefault("status", {})
        for key, value in changes.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        self._written(name)
        return copy.deepcopy(self.artifacts[name])

    def patch_custom(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.artifacts[name]["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        self._written(name)
        return self.artifacts[name]

    def create_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        created = name not in self.jobs
        self.jobs.setdefault(name, body)
        return body, created


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    for name in ("get_custom", "patch_status", "patch_custom", "create_job"):
        monkeypatch.setattr(client, name, getattr(fake, name))
    monkeypatch.setattr(client, "create_service", lambda namespace, body: (body, True))
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [])
    for level in ("info", "warn"):
        monkeypatch.setattr(
            kopf,
            level,
            lambda body, *, reason, message, **_: fake.events.append((body["metadata"]["name"], reason, message)),
        )
    # No data volume here: a completed Job is not checked for its manifest (tests/e2e do that).
    monkeypatch.setattr(handler, "settings", lambda: OperatorSettings(data_root=None, retry_backoff_seconds=0))
    monkeypatch.setattr(handler, "_ADMISSION", Admission(lambda ns: []))
    monkeypatch.setattr(handler, "_JOBS", {})
    monkeypatch.setattr(handler, "_ARTIFACTS", {}, raising=False)  # also run against older handlers
    # No Experiment index: an operator run earlier in this process (tests/e2e) leaves none behind either.
    monkeypatch.setattr(handler, "_EXPERIMENTS", None)
    return fake


def planned() -> tuple[dict[str, Any], dict[str, Any]]:
    """The generate and training Artifacts of one real planned point, worker specs included."""
    spec = ExperimentSpec.model_validate(
        {
            "purpose": "p",
            "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
            "generation": {"apiKeySecret": {"name": "openai"}},
            "training": [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}}],
        }
    )
    point = plan_experiment(spec, PlanInputs({"Copa": "0" * 64}, created=datetime(2024, 12, 29))).points[0]

    def body(stage: StagePlan, path: str, inputs: dict[str, str]) -> dict[str, Any]:
        worker = worker_spec_for(
            stage, data_root="/data", relpath=path, input_relpaths=inputs, batch="b", experiment="e"
        )
        return builders.artifact_body(
            stage,
            storage_path=path,
            settings=OperatorSettings(),
            experiment="e",
            batch="b",
            retries=2,
            parallelism=4,
            queue_name=None,
            worker={"workerSpec": dump_worker_spec(worker)},
        )

    generate = body(point.generate, "_shared/Copa/gen", {})
    training = body(point.training[0], "_shared/Copa/train", {"data": "_shared/Copa/gen"})
    return generate, training


def hand_made(name: str, inputs: list[str], worker_spec: str | None = None) -> dict[str, Any]:
    """An Artifact someone wrote by hand: a planned training Artifact renamed, with other inputs."""
    _, training = planned()
    training["metadata"]["name"] = name
    training["spec"]["inputs"] = inputs
    if worker_spec is not None:
        training["spec"]["worker"]["workerSpec"] = worker_spec
    return training


def reconcile(cluster: FakeCluster, name: str, retry: int = 0) -> None:
    handler._ARTIFACTS = cluster.index()  # Kopf has the index filled before any handler runs
    handler.reconcile(NS, name, cluster.get_custom("Artifact", NS, name), retry, handler.LOG)


def test_an_artifact_that_is_its_own_input_fails_with_input_cycle(cluster: FakeCluster) -> None:
    cluster.add(hand_made("self-loop", ["self-loop"]))
    reconcile(cluster, "self-loop")
    assert cluster.status("self-loop")["phase"] == "Failed"
    ready = cluster.ready("self-loop")
    assert (ready["status"], ready["reason"]) == ("False", "InputCycle")
    assert "self-loop -> self-loop" in ready["message"]
    assert cluster.jobs == {}
    assert ("self-loop", "InputCycle", ready["message"]) in cluster.events


def test_a_two_artifact_cycle_fails_both_and_the_absent_input_waits_first(cluster: FakeCluster) -> None:
    cluster.add(hand_made("a", ["b"]))
    # b does not exist yet: a clearly waits (and the handler looks again later), it does not fail yet.
    with pytest.raises(kopf.TemporaryError):
        reconcile(cluster, "a")
    assert cluster.status("a")["phase"] == "Waiting"
    ready = cluster.ready("a")
    assert ready["reason"] == "InputMissing"
    assert "input Artifact b does not exist" in ready["message"]
    assert "waiting up to 300s" in ready["message"]

    cluster.add(hand_made("b", ["a"]))
    reconcile(cluster, "b")
    assert cluster.ready("b")["reason"] == "InputCycle"
    assert "b -> a -> b" in cluster.ready("b")["message"]
    reconcile(cluster, "a")  # a's next look finds the cycle too
    assert cluster.status("a")["phase"] == "Failed"
    assert cluster.ready("a")["reason"] == "InputCycle"
    assert "a -> b -> a" in cluster.ready("a")["message"]
    assert cluster.jobs == {}


def test_a_missing_input_fails_after_the_wait_timeout_naming_it(cluster: FakeCluster) -> None:
    cluster.add(hand_made("orphan", ["nowhere"]))
    with pytest.raises(kopf.TemporaryError):
        reconcile(cluster, "orphan")
    assert cluster.status("orphan")["waitingReason"] == "InputMissing"
    # Still missing on the next looks: it keeps waiting while the timeout has not passed ...
    with pytest.raises(kopf.TemporaryError):
        reconcile(cluster, "orphan")
    assert cluster.status("orphan")["phase"] == "Waiting"
    # ... and fails once it has (the wait began 10 minutes ago; the default timeout is 300 s).
    began = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.artifacts["orphan"]["status"]["waitingSince"] = began
    reconcile(cluster, "orphan")
    assert cluster.status("orphan")["phase"] == "Failed"
    ready = cluster.ready("orphan")
    assert ready["reason"] == "InputMissing"
    assert "nowhere does not exist after waiting" in ready["message"]
    assert "inputWaitTimeoutSeconds" in ready["message"]
    assert labels.RETRY in ready["message"]
    assert cluster.jobs == {}


def test_an_input_created_later_turns_the_wait_into_an_ordinary_one(cluster: FakeCluster) -> None:
    generate, training = planned()
    cluster.add(training)
    name, input_name = training["metadata"]["name"], generate["metadata"]["name"]
    with pytest.raises(kopf.TemporaryError):
        reconcile(cluster, name)
    assert cluster.ready(name)["reason"] == "InputMissing"
    cluster.add(generate)
    reconcile(cluster, name)  # no TemporaryError: the input's completion wakes it (finished())
    assert cluster.status(name)["phase"] == "Waiting"
    assert cluster.ready(name)["reason"] == "WaitingOnProducer"
    assert input_name in cluster.ready(name)["message"]


@pytest.mark.parametrize(
    ("worker_spec", "expected"),
    [
        ("", "a worker spec is a mapping"),
        ("[unclosed", "not valid YAML"),
        ("stage: fomaml\n", "invalid worker spec"),
    ],
)
def test_an_unusable_worker_spec_fails_without_a_job(cluster: FakeCluster, worker_spec: str, expected: str) -> None:
    cluster.add(hand_made("bad-spec", [], worker_spec=worker_spec))
    reconcile(cluster, "bad-spec")
    assert cluster.status("bad-spec")["phase"] == "Failed"
    ready = cluster.ready("bad-spec")
    assert ready["reason"] == "InvalidWorkerSpec"
    assert "spec.worker.workerSpec" in ready["message"]
    assert expected in ready["message"]
    assert cluster.jobs == {}


def failed_create_event(job: str, first: datetime, kind: str = "Job") -> dict[str, Any]:
    """A FailedCreate Event as the Job controller writes it for a missing ServiceAccount."""
    return {
        "metadata": {"name": f"{job}.1", "namespace": NS},
        "involvedObject": {"kind": kind, "name": job, "namespace": NS},
        "reason": "FailedCreate",
        "type": "Warning",
        "message": f'Error creating: pods "{job}-" is forbidden: error looking up service account '
        f'{NS}/datasweep-worker: serviceaccount "datasweep-worker" not found',
        "firstTimestamp": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_pods_that_cannot_be_created_are_surfaced_then_fail_the_artifact(cluster: FakeCluster) -> None:
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    assert cluster.status(name)["phase"] == "Running"
    job = cluster.status(name)["job"]
    assert handler.admission().running(NS, "e") == 1
    jobs = {(NS, job): [name]}

    def deliver(event: dict[str, Any]) -> None:
        handler.job_failed_create(
            namespace=NS, body=event, type="ADDED", job_index=jobs, artifact_index=cluster.index()
        )

    deliver(failed_create_event(job, datetime.now(UTC)))
    assert cluster.status(name)["phase"] == "Running"
    ready = cluster.ready(name)
    assert ready["reason"] == "PodsNotCreated"
    assert 'serviceaccount "datasweep-worker" not found' in ready["message"]
    assert "fails if this lasts 300s" in ready["message"]

    deliver(failed_create_event("someone-elses-job", datetime.now(UTC) - timedelta(hours=1)))
    deliver(failed_create_event(job, datetime.now(UTC) - timedelta(hours=1), kind="ReplicaSet"))
    assert cluster.status(name)["phase"] == "Running"

    # The Job controller reports it again later: it has lasted longer than podsNotCreatedTimeoutSeconds.
    deliver(failed_create_event(job, datetime.now(UTC) - timedelta(minutes=10)))
    assert cluster.status(name)["phase"] == "Failed"
    ready = cluster.ready(name)
    assert ready["reason"] == "PodsNotCreated"
    assert f"Job {job} could not create its pods" in ready["message"]
    assert labels.RETRY in ready["message"]
    assert handler.admission().running(NS, "e") == 0  # its slot went to the next in line
    assert any(reason == "PodsNotCreated" for _, reason, _ in cluster.events)


def test_a_failed_training_attempt_retries_by_itself_until_retries_are_spent(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    nudged: list[str] = []
    later = handler.Later(lambda namespace, name, retry_in: nudged.append(name))
    monkeypatch.setattr(handler, "LATER", later)
    monkeypatch.setattr(handler, "settings", lambda: OperatorSettings(data_root=None, retry_backoff_seconds=60))
    generate, training = planned()
    generate["status"] = {"phase": "Ready"}
    cluster.add(generate)
    cluster.add(training)
    name = training["metadata"]["name"]
    assert training["spec"]["stage"] == "fomaml"
    assert training["spec"]["retries"] == 2

    for attempt in range(3):
        reconcile(cluster, name)  # the first run, or the nudge after the backoff
        status = cluster.status(name)
        assert (status["phase"], status["attempts"]) == ("Running", attempt + 1)
        assert status["job"] == naming.job_name(name, attempt)
        assert status["job"] in cluster.jobs
        handler._record_job(NS, status["job"], name, {"Failed": {"reason": "BackoffLimitExceeded"}}, handler.LOG)
        if attempt < 2:
            # Retrying, with an annotation that wakes the handler; its first run waits out the backoff.
            assert cluster.status(name)["phase"] == "Retrying"
            annotations = cluster.artifacts[name]["metadata"]["annotations"]
            assert annotations[labels.FAILED_ATTEMPT] == str(attempt + 1)
            # Its wake-up waits out the backoff without a Job, and without holding Kopf's worker: a nudge later.
            reconcile(cluster, name)
            assert len(cluster.jobs) == attempt + 1
            assert later.pending() == 1
            assert not nudged
            cluster.artifacts[name]["status"]["waitingSince"] = "2020-01-01T00:00:00Z"  # the backoff is over
    assert len(cluster.jobs) == 3
    assert cluster.status(name)["phase"] == "Failed"
    assert "after 3 attempts" in cluster.ready(name)["message"]
    reconcile(cluster, name)  # spent: nothing more without the retry annotation
    assert len(cluster.jobs) == 3


def test_status_writes_are_merge_patches_and_consumers_are_the_labels(cluster: FakeCluster) -> None:
    """The first status write records the first experiment and batch from the annotations; no write lists
    consumers (a cache hit is one label patch, no status write): they are read from the labels."""
    generate, _ = planned()
    name = generate["metadata"]["name"]
    generate["metadata"]["labels"].update(labels.consumer_marks("other", "b")["labels"])  # a hit meanwhile
    cluster.add(generate)
    handler._ARTIFACTS = cluster.index()
    handler.reconcile(NS, name, cluster.get_custom("Artifact", NS, name), 0, handler.LOG)
    status = cluster.status(name)
    assert status["phase"] == "Running"
    annotations = generate["metadata"]["annotations"]
    assert status["firstExperiment"] == annotations[labels.FIRST_EXPERIMENT]
    assert status["firstBatch"] == annotations[labels.FIRST_BATCH]
    assert "consumers" not in status
    handler._record_job(NS, status["job"], name, {"Complete": {}}, handler.LOG)
    assert cluster.status(name)["phase"] == "Ready"
    first = annotations[labels.FIRST_EXPERIMENT]
    assert labels.consumers_of(cluster.artifacts[name]["metadata"], cluster.status(name)) == [first, "other"]


def test_consumers_of_lists_the_first_experiment_first_and_reads_old_status_lists() -> None:
    meta = {
        "labels": {labels.experiment_key("zeta"): "true", labels.experiment_key("alpha"): "true"},
        "annotations": {labels.FIRST_EXPERIMENT: "zeta"},
    }
    assert labels.consumers_of(meta, {}) == ["zeta", "alpha"]
    assert labels.consumers_of(meta, {"consumers": ["old"]}) == ["zeta", "alpha", "old"]
    long_name = "e" * 80  # too long for a label key: the annotation of the same key has the full name
    marks = labels.consumer_marks(long_name, "b")
    assert labels.consumers_of(marks, {"firstExperiment": long_name}) == [long_name]


def test_a_just_created_artifact_without_inputs_or_a_settled_finished_one_skips_the_read() -> None:
    generate, training = planned()
    assert handler._fresh(kopf.Body(generate), "create", 0)
    assert not handler._fresh(kopf.Body(generate), "create", 1)  # a retry: a wake-up may have started it
    assert not handler._fresh(kopf.Body(generate), "resume", 0)
    assert not handler._fresh(kopf.Body({**generate, "status": {"phase": "Waiting"}}), "create", 0)
    assert not handler._fresh(kopf.Body(training), "create", 0)  # woken when its input finishes
    ready = {**generate, "status": {"phase": "Ready"}}
    assert handler._fresh(kopf.Body(ready), "resume", 0)  # a restart over finished Artifacts reads none
    regenerate = {**ready, "metadata": {**generate["metadata"], "annotations": {labels.REGENERATE: "t1"}}}
    assert not handler._fresh(kopf.Body(regenerate), "update", 0)  # a request to act on: read it first
    done = {**regenerate, "status": {"phase": "Ready", "regeneratedFor": "t1"}}
    assert handler._fresh(kopf.Body(done), "resume", 0)
    retried = {**generate, "metadata": {**generate["metadata"], "annotations": {labels.RETRY: "r"}}}
    assert not handler._fresh(kopf.Body({**retried, "status": {"phase": "Failed"}}), "update", 0)
    assert not handler._fresh(kopf.Body({**generate, "status": {"phase": "Running"}}), "resume", 0)


def test_later_nudges_each_artifact_once_at_its_earliest_time() -> None:
    import threading
    import time

    nudged: list[tuple[str, float]] = []
    done = threading.Event()

    def nudge(namespace: str, name: str, retry_in: float) -> None:
        nudged.append((name, time.monotonic()))
        if len(nudged) == 2:
            done.set()

    later = handler.Later(nudge)
    started = time.monotonic()
    later.nudge(NS, "a", 30.0)
    later.nudge(NS, "a", 0.2)  # asked again sooner: the sooner wins, once
    later.nudge(NS, "b", 0.1)
    later.nudge(NS, "b", 20.0)  # asked again later: the earlier time stays
    assert done.wait(10), nudged
    assert [name for name, _ in nudged] == ["b", "a"]
    assert all(at - started < 5 for _, at in nudged)
    time.sleep(0.3)
    assert len(nudged) == 2
    assert later.pending() == 0
