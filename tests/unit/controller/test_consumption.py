"""An Experiment re-planned with a smaller grid releases what left its plan (controller/consumption.py): its
consumer label goes, the left label comes, its Batch's label goes unless another consumer in that Batch keeps
it, and a Job that then runs for no running Experiment is suspended; nothing is deleted.

Against the in-memory API of test_artifact_answers; on the real control plane: tests/e2e/test_grid_shrink.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from datasweep.controller import consumption
from datasweep.controller.indices import artifact_info
from datasweep.k8s import client, labels

from .test_artifact_answers import NS, FakeCluster, reconcile
from .test_artifact_answers import cluster as cluster  # the fixture
from .test_suspension import experiments, generate
from .test_suspension import world as world  # the fixture


class Api:
    """Merge patches of an Artifact's metadata as the API server applies them (a resourceVersion in the patch is
    a precondition), and the Experiments' batch labels."""

    def __init__(self, fake: FakeCluster, batches: dict[str, str]) -> None:
        self.fake, self.batches, self.writes = fake, batches, 0
        self.get_artifact = client.get_custom

    def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Experiment":
            batch = self.batches.get(name)
            return None if batch is None else {"metadata": {"name": name, "labels": {labels.BATCH: batch}}}
        return self.get_artifact(kind, namespace, name)

    def patch_custom(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if name not in self.fake.artifacts:
            raise ApiException(status=404, reason="Not Found")
        meta = self.fake.artifacts[name]["metadata"]
        wanted = patch["metadata"].get("resourceVersion")
        if wanted is not None and wanted != meta["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        for part in ("labels", "annotations"):
            for key, value in (patch["metadata"].get(part) or {}).items():
                if value is None:
                    meta.setdefault(part, {}).pop(key, None)
                else:
                    meta.setdefault(part, {})[key] = value
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.writes += 1
        return copy.deepcopy(self.fake.artifacts[name])


def index(fake: FakeCluster) -> dict[Any, list[Any]]:
    """The artifact index with the ("exp", ns, experiment) keys the release reads."""
    keys = fake.index()
    for name, body in fake.artifacts.items():
        for experiment in artifact_info(name, body).consumers:
            keys.setdefault(("exp", NS, experiment), []).append(name)
    return keys


@pytest.fixture
def api(world: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> Api:
    fake = Api(world, {"e": "b", "f": "b"})
    monkeypatch.setattr(client, "get_custom", fake.get_custom)
    monkeypatch.setattr(client, "patch_custom", fake.patch_custom)
    return fake


def consumers(world: FakeCluster, name: str) -> list[str]:
    body = world.artifacts[name]
    return labels.consumers_of(body["metadata"], body.get("status") or {})


def test_what_left_the_plan_loses_the_mark_and_keeps_its_data(
    world: FakeCluster, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiments(monkeypatch, e=False, f=False)
    name = generate(world, "e", "f")  # e made it (first experiment), f reuses it; both in Batch b
    reconcile(world, name)
    assert world.status(name)["phase"] == "Running"

    assert consumption.release_left(NS, "e", {"other"}, "b", index(world)) == [name]
    meta = world.artifacts[name]["metadata"]
    assert consumers(world, name) == ["f"]  # the first experiment is no consumer once it left
    assert labels.experiment_key("e") not in meta["labels"]
    assert meta["labels"][labels.left_key("e")] == "true"
    assert meta["labels"][labels.batch_key("b")] == "true"  # f, in Batch b, still consumes it
    assert meta["annotations"][labels.FIRST_EXPERIMENT] == "e"  # who made it stays recorded
    assert world.status(name)["phase"] == "Running"  # f runs: it keeps running

    writes = api.writes
    assert consumption.release_left(NS, "e", {"other"}, "b", index(world)) == []  # idempotent: nothing written
    assert api.writes == writes

    assert consumption.release_left(NS, "f", set(), "b", index(world)) == [name]
    meta = world.artifacts[name]["metadata"]
    assert consumers(world, name) == []
    assert labels.batch_key("b") not in meta["labels"]  # no consumer in Batch b is left
    status = world.status(name)
    assert status["phase"] == "Suspended"  # stopped as when its Experiments are deleted, its Job kept
    assert "left the plan of e, f" in world.ready(name)["message"]
    assert name in world.artifacts  # never deleted


def test_a_grid_that_grows_back_consumes_it_again(world: FakeCluster, api: Api) -> None:
    name = generate(world, "e")
    consumption.release_left(NS, "e", set(), "b", index(world))
    assert consumers(world, name) == []
    api.patch_custom("Artifact", NS, name, {"metadata": labels.rejoin_marks("e", "b")})
    assert consumers(world, name) == ["e"]
    assert labels.left_key("e") not in world.artifacts[name]["metadata"]["labels"]


def test_the_release_is_conditional_on_what_was_read(world: FakeCluster, api: Api) -> None:
    name = generate(world, "e", "f")
    stale = index(world)  # read before f's label went away by hand
    api.patch_custom("Artifact", NS, name, {"metadata": {"labels": {labels.experiment_key("f"): None}}})
    assert consumption.release_left(NS, "e", set(), "b", stale) == [name]  # 409, read again, decided again
    meta = world.artifacts[name]["metadata"]
    assert consumers(world, name) == []
    assert labels.batch_key("b") not in meta["labels"]  # decided on what it is now: f no longer keeps it


def test_a_consumer_in_another_batch_does_not_keep_the_batch_label(world: FakeCluster, api: Api) -> None:
    api.batches["g"] = "other-batch"
    name = generate(world, "e", "g")
    consumption.release_left(NS, "e", set(), "b", index(world))
    assert consumers(world, name) == ["g"]
    assert labels.batch_key("b") not in world.artifacts[name]["metadata"]["labels"]


def test_the_consumers_an_earlier_version_listed_in_the_status_are_released_too(world: FakeCluster, api: Api) -> None:
    body = copy.deepcopy(world.artifacts[generate(world)])
    body["metadata"]["name"] = "legacy"
    body["metadata"]["labels"] = {k: v for k, v in body["metadata"]["labels"].items() if "datasweep.io/" in k}
    body["status"] = {"consumers": ["e", "old"], "firstExperiment": "e"}
    world.add(body)
    assert consumers(world, "legacy") == ["e", "old"]
    assert consumption.release_left(NS, "old", set(), "b", index(world)) == ["legacy"]
    assert consumers(world, "legacy") == ["e"]


def test_the_resync_stops_a_job_whose_every_consumer_left_its_plan(
    world: FakeCluster, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop after the release was lost (the index did not show it Running yet, or the operator stopped)."""
    from datasweep.api.settings import OperatorSettings
    from datasweep.controller.resync import Resync
    from datasweep.core import naming

    experiments(monkeypatch, e=False)
    name = generate(world, "e")
    reconcile(world, name)
    api.patch_custom("Artifact", NS, name, {"metadata": labels.release_marks("e", "b")})  # released, not stopped
    assert world.status(name)["phase"] == "Running"
    jobs = {(NS, naming.job_name(name, 0)): [name]}
    resync = Resync(world.index(), jobs, {}, {}, OperatorSettings(data_root=None))  # type: ignore[arg-type]
    assert resync.once() == 1
    assert world.status(name)["phase"] == "Suspended"
    assert "left the plan of e" in world.ready(name)["message"]


def test_a_name_too_long_for_a_label_key_is_released_by_its_hashed_keys() -> None:
    long_name = "an-experiment-whose-name-is-far-too-long-for-a-label-key-" + "x" * 20
    meta: dict[str, Any] = {"annotations": {labels.FIRST_EXPERIMENT: long_name}, "labels": {}}
    for part, values in labels.consumer_marks(long_name, "b").items():
        meta[part].update(values)
    assert labels.consumers_of(meta, {}) == [long_name]
    for part, values in labels.release_marks(long_name, None).items():
        for key, value in values.items():
            if value is None:
                meta[part].pop(key, None)
            else:
                meta[part][key] = value
    assert labels.consumers_of(meta, {}) == []  # neither the label, nor the annotation, nor the first experiment
    assert len(labels.left_key(long_name).split("/")[1]) <= 63
