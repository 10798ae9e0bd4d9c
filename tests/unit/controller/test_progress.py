"""Progress summed into the Experiment and Batch status, and the bounded copy of progress files into Artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from datasweep.api.experiment import SweepProgress
from datasweep.controller import progress as progress_controller
from datasweep.controller.aggregate import Planned, summarize_batch, summarize_experiment
from datasweep.controller.indices import ExperimentSummary, artifact_info
from datasweep.controller.progress import ProgressPoller
from datasweep.core.progress import StageState, combine, eta_seconds, sweep_progress
from datasweep.store.manifest import Usage
from datasweep.store.progress import ProgressReport, write_progress


def body(name: str, phase: str, first: str = "me", stage: str = "generate", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"datasweep.io/first-experiment": first}, "resourceVersion": "7"},
        "spec": {"stage": stage, "inputs": [], "storage": {"path": f"_shared/Copa/{name}"}},
        "status": {"phase": phase, **status},
    }


def report(done: int, total: int, unit: str = "requests", **fields: Any) -> dict[str, Any]:
    return ProgressReport(phase="generate", unit=unit, done=done, total=total, **fields).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def planned(names: list[str]) -> Planned:
    return Planned(
        points=len(names),
        stages=1,
        generate=frozenset(names),
        artifacts=frozenset(names),
        batch_object="batch-x",
        generation=1,
    )


def test_the_experiment_sums_ready_usage_and_running_reports() -> None:
    infos = [
        artifact_info("g0", body("g0", "Ready", usage={"costUsd": 1.5, "promptTokens": 100, "completionTokens": 50})),
        artifact_info("g1", body("g1", "Ready", first="someone-else", usage={"costUsd": 9.0})),  # reused: free
        artifact_info("g2", body("g2", "Running", progress=report(30, 40, tokens=300, costUsd=0.25))),
        artifact_info("g3", body("g3", "Failed", progress=report(10, 40, tokens=80, costUsd=0.05))),  # spent
        artifact_info("g4", body("g4", "Running")),  # no report yet
    ]
    status = summarize_experiment("me", planned(["g0", "g1", "g2", "g3", "g4", "g5"]), infos, 20, eta=42)
    progress = status["progress"]
    # (1 + 1 + 0.75) of 6 planned Artifacts
    assert (progress["percent"], progress["summary"]) == (45, "45%")
    assert progress["costUsd"] == pytest.approx(1.8)
    assert progress["cost"] == "$1.8000"
    assert progress["tokens"] == 150 + 300 + 80
    assert (progress["requestsDone"], progress["requestsTotal"]) == (30, 40)
    assert progress["etaSeconds"] == 42


def test_a_finished_sweep_is_100_percent_with_no_time_left() -> None:
    infos = [artifact_info("g0", body("g0", "Ready"))]
    progress = summarize_experiment("me", planned(["g0"]), infos, 20, eta=None)["progress"]
    assert (progress["summary"], progress["etaSeconds"]) == ("100%", 0)


def test_training_steps_are_summed_apart_from_requests() -> None:
    steps = ProgressReport(unit="steps", done=50, total=200, loss=0.7)
    requests = ProgressReport(unit="requests", done=5, total=10)
    summed = sweep_progress(
        [StageState("Running", True, Usage(), steps), StageState("Running", True, Usage(), requests)], 2
    )
    assert (summed.steps_done, summed.steps_total, summed.requests_done, summed.requests_total) == (50, 200, 5, 10)
    assert summed.percent == 37  # (0.25 + 0.5) / 2, rounded down: 100% only when all is Ready


def test_eta_from_the_rate_since_the_origin() -> None:
    assert eta_seconds(None, 100.0, 0.5) is None
    assert eta_seconds((0.0, 0.0), 5.0, 0.5) is None  # too soon to tell
    assert eta_seconds((0.0, 0.1), 100.0, 0.1) is None  # no progress: no rate
    assert eta_seconds((0.0, 0.0), 100.0, 0.25) == 300
    assert eta_seconds((0.0, 0.2), 100.0, 0.6) == 100  # from where it was first seen, not from zero
    assert eta_seconds((0.0, 0.0), 100.0, 1.0) == 0


def test_the_batch_weights_experiments_by_their_points() -> None:
    def summary(name: str, points: int, progress: SweepProgress) -> ExperimentSummary:
        flat = tuple(sorted((k, v) for k, v in progress.model_dump(by_alias=True).items()))
        return ExperimentSummary(name, (("points", points),), (), (), (), 0, flat)

    a = SweepProgress(percent=100, cost_usd=2.0, tokens=10, eta_seconds=0)
    b = SweepProgress(percent=25, cost_usd=0.5, tokens=5, requests_done=3, requests_total=9, eta_seconds=60)
    status = summarize_batch([summary("a", 1, a), summary("b", 3, b)], 20)
    progress = status["progress"]
    assert (progress["percent"], progress["summary"]) == (43, "43%")  # (100 * 1 + 25 * 3) / 4
    assert progress["costUsd"] == pytest.approx(2.5)
    assert (progress["tokens"], progress["requestsDone"], progress["requestsTotal"]) == (15, 3, 9)
    assert progress["etaSeconds"] == 60
    assert combine([(a, 1), (SweepProgress(), 1)]).eta_seconds is None  # unknown while any one is


# ---- the poller: files on the volume -> Artifact status, bounded ----


def index_of(*bodies: dict[str, Any]) -> dict[Any, list[Any]]:
    index: dict[Any, list[Any]] = {}
    for raw in bodies:
        name = raw["metadata"]["name"]
        index[("art", "ns", name)] = [artifact_info(name, raw)]
        index[("ns", "ns")] = [*index.get(("ns", "ns"), []), name]
    return index


def poller(index: dict[Any, list[Any]], root: Path, marked: list[Any], writes_per_second: float = 100.0) -> Any:
    return ProgressPoller(index, root, 1.0, writes_per_second, marked.append)  # type: ignore[arg-type]


def test_only_running_artifacts_whose_report_moved_are_marked(tmp_path: Path) -> None:
    for name, done in (("run-moved", 5), ("run-same", 2), ("ready", 9)):
        write_progress(
            tmp_path / "_shared/Copa" / name, ProgressReport(phase="generate", unit="requests", done=done, total=9)
        )
    recorded = report(2, 9)
    recorded["updatedAt"] = "earlier"  # the time of a report is not news: a stalled worker costs no writes
    index = index_of(
        body("run-moved", "Running", progress=report(1, 9)),
        body("run-same", "Running", progress=recorded),
        body("run-no-file", "Running"),
        body("ready", "Ready"),
    )
    marked: list[Any] = []
    assert poller(index, tmp_path, marked).tick() == 1
    assert marked == [("Artifact", "ns", "run-moved")]


def test_marks_per_round_are_capped_least_recently_written_first(tmp_path: Path) -> None:
    names = [f"g{i}" for i in range(10)]
    for name in names:
        write_progress(tmp_path / "_shared/Copa" / name, ProgressReport(unit="requests", done=1, total=9))
    marked: list[Any] = []
    capped = poller(index_of(*(body(n, "Running") for n in names)), tmp_path, marked, writes_per_second=4.0)
    assert capped.tick() == 4
    assert capped.tick() == 4
    assert capped.tick() == 4
    # the index still holds the old reports (nothing was written here): the least recently marked go first
    assert [m[2] for m in marked] == [*names, "g0", "g1"]


def test_the_write_is_conditional_and_a_conflict_is_left_to_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_progress(tmp_path / "_shared/Copa/g0", ProgressReport(unit="requests", done=4, total=9, cost_usd=0.5))
    calls: list[tuple[Any, ...]] = []

    def patch_status(kind: str, namespace: str, name: str, status: Any, resource_version: str | None = None) -> Any:
        calls.append((kind, namespace, name, status, resource_version))
        raise ApiException(status=409)

    monkeypatch.setattr(progress_controller.client, "patch_status", patch_status)
    writer = poller(index_of(body("g0", "Running"), body("g1", "Ready")), tmp_path, [])
    writer.write("ns", "g0")  # a 409 is not an error
    writer.write("ns", "g1")  # not Running: nothing written
    writer.write("ns", "gone")
    assert len(calls) == 1
    kind, namespace, name, status, version = calls[0]
    assert (kind, namespace, name, version) == ("Artifact", "ns", "g0", "7")
    assert status["progress"]["done"] == 4
    assert status["progress"]["costUsd"] == 0.5
    assert "loss" in status["progress"]
    assert status["progress"]["loss"] is None


def test_without_the_volume_nothing_is_read(caplog: pytest.LogCaptureFixture) -> None:
    quiet = ProgressPoller({}, None, 10.0, 5.0, lambda key: None)  # type: ignore[arg-type]
    quiet.start()
    assert "not mounted" in caplog.text
    quiet.stop()
