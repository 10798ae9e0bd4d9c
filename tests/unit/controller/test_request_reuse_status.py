"""Request-level reuse in status (issue 26): a generate worker's report of the requests the request store answered
travels from its progress file (while it runs) or its manifest (once Ready) into the Artifact's status, and is
summed into the Experiment's and the Batch's status.progress beside the Artifacts reused whole."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from datasweep.controller import artifact as handler
from datasweep.controller import progress as progress_controller
from datasweep.controller.aggregate import summarize_batch, summarize_experiment
from datasweep.controller.indices import ExperimentSummary, _flat, artifact_info
from datasweep.k8s import client
from datasweep.store.manifest import FileEntry, Manifest
from datasweep.store.progress import REQUEST_REUSE_KEY, ProgressReport, RequestReuseCounts, write_progress
from tests.unit.controller.test_artifact_answers import NS, FakeCluster, cluster, planned, reconcile
from tests.unit.controller.test_progress import body, index_of, poller
from tests.unit.controller.test_progress import planned as planned_points

__all__ = ["cluster"]  # the fixture

UNPRICED = RequestReuseCounts(requests=60, stored=40, to_send=20, rows=30, rows_reused=18, saved_tokens=900)
PRICED = RequestReuseCounts(requests=20, stored=20, to_send=0, rows=10, rows_reused=10, saved_usd=0.25)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a status patch: a null removes the key, at any depth."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            merged[key] = merge_patch(merged.get(key) if isinstance(merged.get(key), dict) else {}, value)
        else:
            merged[key] = value
    return merged


def test_a_running_workers_report_reaches_the_artifact_once_and_sums_into_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = ProgressReport(phase="generate", unit="requests", done=40, total=60, request_reuse=UNPRICED)
    write_progress(tmp_path / "_shared/Copa/g0", report)
    running = body("g0", "Running")
    written: list[tuple[dict[str, Any], str | None]] = []

    def patch_status(kind: str, namespace: str, name: str, status: Any, resource_version: str | None = None) -> Any:
        written.append((status, resource_version))

    monkeypatch.setattr(progress_controller.client, "patch_status", patch_status)
    marked: list[Any] = []
    assert poller(index_of(running), tmp_path, marked).tick() == 1
    poller(index_of(running), tmp_path, []).write("ns", "g0")
    ((status, version),) = written
    assert version == "7"  # conditional: never onto an Artifact that moved on meanwhile
    assert status["progress"]["requestReuse"]["stored"] == 40
    assert status["progress"]["requestReuse"]["savedUsd"] is None  # unpriced: the merge patch drops the key

    # as the API server stores it: the report is no news any more, the next round writes nothing
    running["status"] = merge_patch(running["status"], status)
    assert "savedUsd" not in running["status"]["progress"]["requestReuse"]
    assert poller(index_of(running), tmp_path, []).tick() == 0
    assert artifact_info("g0", running).request_reuse() == UNPRICED

    ready = body("g1", "Ready", manifest={"files": 1, "rows": 10, "bytes": 1, "sha256": "0" * 64})
    ready["status"]["manifest"]["requestReuse"] = PRICED.model_dump(mode="json", by_alias=True)
    elsewhere = body("g2", "Ready", first="someone-else", manifest=copy.deepcopy(ready["status"]["manifest"]))
    infos = [artifact_info("g0", running), artifact_info("g1", ready), artifact_info("g2", elsewhere)]
    progress = summarize_experiment("me", planned_points(["g0", "g1", "g2"]), infos, 20)["progress"]
    # g2 was reused whole (savedByReuse): its own request-level savings were another Experiment's
    assert (progress["requestsStored"], progress["requestsToSend"], progress["rowsReused"]) == (60, 20, 28)
    assert progress["savedUsd"] == pytest.approx(0.25)
    assert progress["saved"] == "60 requests, $0.2500"

    def summary(name: str, flat: dict[str, Any]) -> ExperimentSummary:
        return ExperimentSummary(name, (("points", 3),), (), (), (), 0, _flat(flat))

    batch = summarize_batch([summary("a", progress), summary("b", progress)], 20)["progress"]
    assert (batch["requestsStored"], batch["requestsToSend"], batch["rowsReused"]) == (120, 40, 56)
    assert batch["saved"] == "120 requests, $0.5000"


def test_nothing_stored_shows_nothing_in_the_saved_column() -> None:
    infos = [artifact_info("g0", body("g0", "Running", progress={"unit": "requests", "done": 1, "total": 9}))]
    progress = summarize_experiment("me", planned_points(["g0"]), infos, 20)["progress"]
    assert (progress["requestsStored"], progress["saved"]) == (0, "")


def test_a_ready_artifact_keeps_the_manifests_counts_from_the_termination_message(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = Manifest(
        fingerprint="f" * 64,
        stage="generate",
        files=[FileEntry(path="a.jsonl", bytes=3, sha256="0" * 64, rows=10)],
        completed_at="2026-12-07T00:00:00+00:00",
        extra={REQUEST_REUSE_KEY: PRICED.model_dump(mode="json", by_alias=True)},
    )
    summary = manifest.summary()
    assert summary.request_reuse == PRICED
    message = json.dumps(summary.model_dump(mode="json", by_alias=True))
    pod = {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"state": {"terminated": {"message": message}}}]},
    }
    monkeypatch.setattr(client, "job_pods", lambda namespace, job: [pod])
    generate, _ = planned()
    cluster.add(generate)
    name = generate["metadata"]["name"]
    reconcile(cluster, name)
    cluster.artifacts[name]["status"]["progress"] = {"unit": "requests", "requestReuse": {"stored": 1}}  # lagging
    handler._record_job(NS, cluster.status(name)["job"], name, {"Complete": {}}, handler.LOG)
    status = cluster.status(name)
    assert status["phase"] == "Ready"
    assert "progress" not in status  # the manifest is the final word
    assert status["manifest"]["requestReuse"]["stored"] == 20
    assert artifact_info(name, cluster.artifacts[name]).request_reuse() == PRICED
