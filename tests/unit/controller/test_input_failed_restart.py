"""A point whose training failed only because its data stage failed starts again once that stage is Ready (after a
retry or a corrected re-apply relaunched it): nobody has to retry the dependent by hand (issue 22)."""

from __future__ import annotations

from datasweep.controller import artifact as handler
from tests.unit.controller.test_artifact_answers import NS, FakeCluster, cluster, planned, reconcile

__all__ = ["cluster"]  # the fixture


def test_a_dependent_failed_for_its_input_starts_once_the_input_is_ready(cluster: FakeCluster) -> None:
    generate, training = planned()
    generate["status"] = {"phase": "Failed", "attempts": 3}
    cluster.add(generate)
    cluster.add(training)
    name, input_name = training["metadata"]["name"], generate["metadata"]["name"]
    reconcile(cluster, name)
    assert (cluster.status(name)["phase"], cluster.ready(name)["reason"]) == ("Failed", "InputFailed")

    cluster.artifacts[input_name]["status"] = {"phase": "Ready", "attempts": 4}  # relaunched, and it worked
    handler.finished(NS, input_name, "e", cluster.index())  # type: ignore[arg-type]
    status = cluster.status(name)
    assert (status["phase"], status["attempts"]) == ("Running", 1)
    assert status["job"] in cluster.jobs


def test_a_dependent_stays_failed_while_its_input_fails_again(cluster: FakeCluster) -> None:
    generate, training = planned()
    generate["status"] = {"phase": "Failed", "attempts": 3}
    cluster.add(generate)
    cluster.add(training)
    name, input_name = training["metadata"]["name"], generate["metadata"]["name"]
    reconcile(cluster, name)
    handler.finished(NS, input_name, "e", cluster.index())  # type: ignore[arg-type]
    assert (cluster.status(name)["phase"], cluster.ready(name)["reason"]) == ("Failed", "InputFailed")
    assert cluster.jobs == {}
