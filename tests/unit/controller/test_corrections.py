"""A re-applied Experiment corrects the worker details of its Artifacts that are not Ready (issue 22, item 3).

The Experiment handler's functions run against an in-memory API with the API server's write rules that matter
here: merge patches (RFC 7386) and a 409 for a patch whose resourceVersion is not the stored one. The proof on
a real API server and real pods is tests/e2e/test_corrections.py and test_fault_real_node.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.controller import experiment as controller
from datasweep.controller.indices import artifact_info
from datasweep.core.plan import Plan, PlanInputs, StagePlan, plan_experiment
from datasweep.k8s import labels

NS = "team"
WRONG, RIGHT = "http://wrong.invalid:1/v1", "http://right.example:8000/v1"


def merged(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


class FakeApi:
    def __init__(self) -> None:
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.experiments: set[str] = set()
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.reads = 0
        self.before_patch: Callable[[str], None] | None = None

    def add(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = "1"
        body["status"] = status
        self.artifacts[body["metadata"]["name"]] = body

    def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if kind == "Experiment":
            return {"metadata": {"name": name}} if name in self.experiments else None
        return copy.deepcopy(self.artifacts.get(name))

    def create_custom(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        assert name in self.artifacts, "these tests apply to existing Artifacts"
        return copy.deepcopy(self.artifacts[name]), False  # 409: the stored one

    def patch_custom(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if self.before_patch is not None:
            hook, self.before_patch = self.before_patch, None
            hook(name)
        stored = self.artifacts[name]
        expected = patch.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != stored["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.patches.append((name, copy.deepcopy(patch)))
        rest = copy.deepcopy(patch)
        rest.get("metadata", {}).pop("resourceVersion", None)
        updated = merged(stored, rest)
        updated["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        self.artifacts[name] = updated
        return copy.deepcopy(updated)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(controller.client, "get_custom", fake.get_custom)
    monkeypatch.setattr(controller.client, "patch_custom", fake.patch_custom)
    monkeypatch.setattr(controller.client, "create_custom", fake.create_custom)
    monkeypatch.setattr(controller, "settings", lambda: OperatorSettings(data_root=None))
    return fake


def spec_with(base_url: str, **changes: Any) -> ExperimentSpec:
    generation = {"backend": "openai-compatible", "baseURL": base_url, "model": "m", **changes.pop("generation", {})}
    return ExperimentSpec.model_validate(
        {"purpose": "fix", "datasets": [{"name": "Copa", "source": {"path": "copa"}}], "generation": generation}
        | changes
    )


def planned(spec: ExperimentSpec) -> tuple[Plan, StagePlan]:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_experiment(spec, PlanInputs(dataset_sha256={"Copa": "a" * 64}, created=created))
    return plan, plan.points[0].generate


def failed(reason: str = "JobFailed") -> dict[str, Any]:
    ready = {"type": "Ready", "status": "False", "reason": reason, "message": "Job x failed"}
    return {"phase": "Failed", "attempts": 3, "conditions": [ready]}


def create(api: FakeApi, experiment: str, spec: ExperimentSpec, status: dict[str, Any]) -> StagePlan:
    """The Artifact `experiment` created for the point, in `status` now."""
    plan, stage = planned(spec)
    path = controller._storage_path(stage, {})
    api.add(controller.planned_artifact(spec, stage, path, plan, {}, experiment, spec.queue_name), status)
    api.experiments.add(experiment)
    return stage


def apply(
    api: FakeApi, experiment: str, spec: ExperimentSpec, *, indexed: bool = True, resume: bool = False
) -> controller.Correction | None:
    """What the Experiment handler does for the point on an apply (or a resume): the Artifact as Kopf's index
    has it."""
    plan, stage = planned(spec)
    known = artifact_info(stage.artifact, api.artifacts[stage.artifact]) if indexed else None
    applying = controller.Applying(decides=controller._exists_checker(NS), relaunch=not resume)
    _, _, correction = controller._ensure_artifact(
        NS, experiment, spec, stage, plan, {}, known, spec.queue_name, None, applying
    )
    return correction


def worker_url(body: dict[str, Any]) -> str:
    return str(yaml.safe_load(body["spec"]["worker"]["workerSpec"])["params"]["base_url"])


def test_a_corrected_base_url_updates_a_failed_artifact_and_relaunches_it(api: FakeApi) -> None:
    stage = create(api, "exp", spec_with(WRONG), failed())
    correction = apply(api, "exp", spec_with(RIGHT))
    assert correction == controller.Correction(stage.artifact, ("params.base_url",), relaunched=True)
    body = api.artifacts[stage.artifact]
    assert body["spec"]["params"]["base_url"] == RIGHT
    assert worker_url(body) == RIGHT  # what the next Job's pod mounts
    annotations = body["metadata"]["annotations"]
    assert annotations[labels.RETRY].startswith("corrected-")  # the Artifact handler relaunches it
    assert annotations[labels.DETAILS_FROM] == "exp"
    assert annotations[labels.DETAILS] == controller.details_digest(body)
    ((_name, patch),) = api.patches
    assert patch["metadata"]["resourceVersion"] == "1"  # conditional on what was read
    assert body["spec"]["fingerprint"] == stage.fingerprint
    assert body["spec"]["storage"]["path"]
    # Applied again, nothing differs: no read, no write (the digest in the index says so).
    api.reads, before = 0, len(api.patches)
    assert apply(api, "exp", spec_with(RIGHT)) is None
    assert (api.reads, len(api.patches)) == (0, before)


@pytest.mark.parametrize("phase", ["Pending", "Waiting", "Retrying", "Running"])
def test_an_artifact_in_progress_takes_the_correction_for_its_next_job_and_is_not_relaunched(
    api: FakeApi, phase: str
) -> None:
    stage = create(api, "exp", spec_with(WRONG), {"phase": phase, "attempts": 1})
    correction = apply(api, "exp", spec_with(RIGHT, retries=5, queueName="fast"))
    assert correction is not None
    assert not correction.relaunched
    assert set(correction.fields) == {"datasweep.io/queue-name", "params.base_url", "retries"}
    body = api.artifacts[stage.artifact]
    assert (worker_url(body), body["spec"]["retries"]) == (RIGHT, 5)
    assert body["metadata"]["annotations"][labels.QUEUE] == "fast"
    assert labels.RETRY not in body["metadata"]["annotations"]


def test_a_ready_artifact_and_its_details_are_never_touched(api: FakeApi) -> None:
    stage = create(api, "exp", spec_with(WRONG), {"phase": "Ready", "attempts": 1})
    before = copy.deepcopy(api.artifacts[stage.artifact])
    assert apply(api, "exp", spec_with(RIGHT)) is None
    assert apply(api, "exp", spec_with(RIGHT), indexed=False) is None  # through create's 409, from its body
    after = api.artifacts[stage.artifact]
    assert (after["spec"], after["status"]) == (before["spec"], before["status"])
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert [p for p in api.patches if "spec" in p[1] or labels.DETAILS in p[1]["metadata"].get("annotations", {})] == []


def test_an_artifact_that_became_ready_since_it_was_read_is_left_alone(api: FakeApi) -> None:
    """The handler works from a copy (the index) that says Failed; the Job ends Ready before the write: 409, read
    again, Ready, nothing written."""
    stage = create(api, "exp", spec_with(WRONG), failed())

    def job_ended(name: str) -> None:
        api.artifacts[name]["status"] = {"phase": "Ready", "attempts": 3}
        api.artifacts[name]["metadata"]["resourceVersion"] = "2"

    api.before_patch = job_ended
    assert apply(api, "exp", spec_with(RIGHT)) is None
    assert api.patches == []
    assert worker_url(api.artifacts[stage.artifact]) == WRONG


def test_a_removed_secret_and_resource_are_removed_not_merged(api: FakeApi) -> None:
    secret = {"apiKeySecret": {"name": "old-key", "key": "api-key"}}
    stage = create(api, "exp", spec_with(WRONG, generation=secret), failed())
    assert api.artifacts[stage.artifact]["spec"]["worker"]["apiKeySecret"]["name"] == "old-key"
    apply(api, "exp", spec_with(WRONG, generation={"apiKeySecret": {"name": "new-key", "key": "k"}}))
    assert api.artifacts[stage.artifact]["spec"]["worker"]["apiKeySecret"] == {"name": "new-key", "key": "k"}
    apply(api, "exp", spec_with(WRONG))
    assert "apiKeySecret" not in api.artifacts[stage.artifact]["spec"]["worker"]


def test_an_operator_restart_with_new_settings_updates_failed_artifacts_without_relaunching_them(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume (operator restart or upgrade: new images here) is no correction by the user: the details are
    updated, a Failed point waits for a retry."""
    stage = create(api, "exp", spec_with(RIGHT), failed())
    upgraded = OperatorSettings(data_root=None, images={"worker": "registry.example/datasweep-worker:2"})
    monkeypatch.setattr(controller, "settings", lambda: upgraded)
    correction = apply(api, "exp", spec_with(RIGHT), resume=True)
    assert correction == controller.Correction(stage.artifact, ("image",), relaunched=False)
    body = api.artifacts[stage.artifact]
    assert body["spec"]["image"] == "registry.example/datasweep-worker:2"
    assert labels.RETRY not in body["metadata"]["annotations"]


def test_an_input_failure_is_not_relaunched_by_a_correction(api: FakeApi) -> None:
    stage = create(api, "exp", spec_with(WRONG), failed("InputFailed"))
    correction = apply(api, "exp", spec_with(RIGHT))
    assert correction is not None
    assert not correction.relaunched
    assert labels.RETRY not in api.artifacts[stage.artifact]["metadata"]["annotations"]


def test_two_experiments_the_deciding_one_keeps_its_details_while_it_exists(api: FakeApi) -> None:
    """The rule: an Artifact's worker details are decided by its first Experiment (then by the one that took them
    over) while that Experiment exists; another one's different details are refused with a DetailsConflict."""
    stage = create(api, "first", spec_with(WRONG), failed())
    refused = apply(api, "second", spec_with(RIGHT), indexed=False)  # a new consumer: through create's 409
    assert refused == controller.Correction(stage.artifact, ("params.base_url",), decided_by="first")
    assert worker_url(api.artifacts[stage.artifact]) == WRONG
    assert labels.RETRY not in api.artifacts[stage.artifact]["metadata"]["annotations"]
    # The first one is deleted: the next apply of the second decides, and from then on it is the decider.
    api.experiments.discard("first")
    api.experiments.add("second")
    taken = apply(api, "second", spec_with(RIGHT))
    assert taken is not None
    assert taken.decided_by is None
    assert taken.relaunched
    assert api.artifacts[stage.artifact]["metadata"]["annotations"][labels.DETAILS_FROM] == "second"
    assert worker_url(api.artifacts[stage.artifact]) == RIGHT
    # "first" created again with its old settings: "second" decides now.
    api.experiments.add("first")
    again = apply(api, "first", spec_with(WRONG))
    assert again is not None
    assert again.decided_by == "second"
    assert worker_url(api.artifacts[stage.artifact]) == RIGHT


def test_the_conflict_and_the_update_are_announced_once_per_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str, str]] = []
    for level in ("info", "warn"):
        monkeypatch.setattr(
            controller.kopf, level, lambda body, *, reason, message, lvl=level: events.append((lvl, reason, message))
        )
    corrections = [controller.Correction(f"a{i}", ("params.base_url",), relaunched=i < 2) for i in range(7)]
    corrections += [controller.Correction("b", ("retries",), decided_by="first")]
    controller._announce(controller.kopf.Body({}), corrections)
    assert [(lvl, reason) for lvl, reason, _ in events] == [("info", "DetailsUpdated"), ("warn", "DetailsConflict")]
    assert "7 Artifact(s) not Ready take the worker details applied now (params.base_url)" in events[0][2]
    assert "a0, a1, a2, a3, a4 and 2 more; 2 Failed relaunched: a0, a1" in events[0][2]
    assert "keep the worker details of Experiment first" in events[1][2]
    assert "Correct Experiment first (kubectl apply), or delete it" in events[1][2]


def test_a_retry_on_the_experiment_retries_its_failed_artifacts_conditionally(api: FakeApi) -> None:
    """`datasweep retry` annotates the Experiment; the operator marks each failed Artifact it consumes, with the
    resourceVersion its index saw: one that changed meanwhile is read again and marked only if still Failed."""
    spec = spec_with(WRONG, generation={"temperature": [0.1, 0.2, 0.3, 0.4]})
    plan, _ = planned(spec)
    names = [p.generate.artifact for p in plan.points]
    statuses = [failed(), failed("InputFailed"), {"phase": "Ready"}, failed()]
    for point, status in zip(plan.points, statuses, strict=True):
        path = controller._storage_path(point.generate, {})
        api.add(controller.planned_artifact(spec, point.generate, path, plan, {}, "exp", None), status)
    index: dict[Any, list[Any]] = {("exp", NS, "exp"): names}
    for name, body in api.artifacts.items():
        index[("art", NS, name)] = [artifact_info(name, body)]

    def retried_meanwhile(name: str) -> None:  # the last one left Failed after the index saw it
        api.artifacts[names[3]]["status"] = {"phase": "Running"}
        api.artifacts[names[3]]["metadata"]["resourceVersion"] = "5"

    api.before_patch = retried_meanwhile
    retried, waiting = controller.retry_failed(NS, "exp", "cli-1", index)  # type: ignore[arg-type]
    assert (retried, waiting) == ([names[0]], 1)
    assert api.artifacts[names[0]]["metadata"]["annotations"][labels.RETRY] == "cli-1"
    assert all(labels.RETRY not in api.artifacts[n]["metadata"]["annotations"] for n in names[1:])
