"""An Artifact's status.provenance (issue 25): the worker's record from its termination message, plus the image
and digest its pod ran, written when the Job ends Ready or Failed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datasweep.controller import artifact as handler
from datasweep.k8s import client
from datasweep.store.manifest import ManifestSummary
from datasweep.store.provenance import Provenance
from tests.unit.controller.test_artifact_answers import NS, FakeCluster, cluster, planned, reconcile

__all__ = ["cluster"]  # the fixture

DIGEST = "sha256:" + "ab" * 32
IMAGE = "ghcr.io/x/datasweep-worker:0.1"


def worker_pod(exit_code: int, message: str) -> dict[str, Any]:
    """A pod of the Job as its LIST returns it: the worker container ended, with its image and imageID."""
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message}
    return {
        "metadata": {"name": "pod-1"},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": IMAGE,
                    "imageID": f"ghcr.io/x/datasweep-worker@{DIGEST}",
                    "state": {"terminated": terminated},
                }
            ],
        },
    }


def test_a_ready_artifact_records_the_workers_provenance_and_the_pods_image_digest(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Provenance(datasweep_version="9.9", recipe=1, python="3.11.7", models={"gpt-4o-2024-08-06": 4})
    summary = ManifestSummary(files=1, rows=4, bytes=10, sha256="0" * 64, provenance=recorded)
    message = json.dumps(summary.model_dump(mode="json", by_alias=True))
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [worker_pod(0, message)])
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    handler._record_job(NS, cluster.status(name)["job"], name, {"Complete": {}}, handler.LOG)
    status = cluster.status(name)
    assert status["phase"] == "Ready"
    provenance = Provenance.model_validate(status["provenance"])
    expected = recorded.model_copy(update={"image": IMAGE, "image_id": f"ghcr.io/x/datasweep-worker@{DIGEST}"})
    assert provenance == expected
    assert provenance.image_digest == DIGEST
    assert "provenance" not in status["manifest"]  # one place: status.provenance
    assert status["manifest"]["rows"] == 4


def test_a_failed_artifact_records_which_image_failed(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [worker_pod(2, "bad input")])
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    handler._record_job(NS, cluster.status(name)["job"], name, {"Failed": {"reason": "PodFailurePolicy"}}, handler.LOG)
    status = cluster.status(name)
    assert status["phase"] == "Failed"
    assert Provenance.model_validate(status["provenance"]).image_digest == DIGEST
    assert status["provenance"]["image"] == IMAGE
