"""Status from the index: counts per point, reuse, usage, capped failures; a Batch sums its Experiments."""

from __future__ import annotations

from typing import Any

from datasweep.controller.aggregate import Planned, summarize_batch, summarize_experiment
from datasweep.controller.indices import ExperimentSummary, artifact_info


def body(
    name: str, phase: str, first: str, stage: str = "generate", inputs: tuple[str, ...] = (), **status: Any
) -> Any:
    conditions = [{"type": "Ready", "status": "False", "reason": "JobFailed", "message": "boom"}]
    return {
        "metadata": {
            "name": name,
            "annotations": {"datasweep.io/first-experiment": first},
            "labels": {"exp.datasweep.io/other": "true"},
            "resourceVersion": "7",
        },
        "spec": {"stage": stage, "inputs": list(inputs), "storage": {"path": f"_shared/Copa/{name}"}},
        "status": {"phase": phase, "conditions": conditions if phase == "Failed" else [], **status},
    }


def planned(generate: list[str], training: list[str], stages: int) -> Planned:
    return Planned(
        points=len(generate),
        stages=stages,
        generate=frozenset(generate),
        artifacts=frozenset(generate + training),
        batch_object="batch-x",
        generation=1,
    )


def test_points_count_by_their_furthest_stage_and_reuse_is_by_first_experiment() -> None:
    infos = [
        artifact_info("g0", body("g0", "Ready", "me", usage={"promptTokens": 10})),
        artifact_info("g1", body("g1", "Ready", "someone-else", usage={"promptTokens": 7})),
        artifact_info("g2", body("g2", "Running", "me")),
        artifact_info("t0", body("t0", "Ready", "me", stage="qa", inputs=("g0",), usage={"gpuSeconds": 3.0})),
        artifact_info("t1", body("t1", "Pending", "me", stage="qa", inputs=("g1",))),
        # g3 and its training stage are planned but not indexed yet: pending, never "done"
    ]
    status = summarize_experiment("me", planned(["g0", "g1", "g2", "g3"], ["t0", "t1", "t2", "t3"], 2), infos, 20)
    assert status["counts"] == {
        "points": 4,
        "artifacts": 8,
        "reused": 1,
        "created": 2,
        "pending": 2,
        "running": 1,
        "succeeded": 1,
        "failed": 0,
    }
    assert status["usage"]["promptTokens"] == 10
    assert status["usage"]["gpuSeconds"] == 3.0
    assert status["savedByReuse"]["promptTokens"] == 7
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["message"]) == ("False", "1/4 points done")


def test_failures_are_capped_with_a_total() -> None:
    names = [f"g{i:03d}" for i in range(50)]
    infos = [artifact_info(n, body(n, "Failed", "me")) for n in names]
    status = summarize_experiment("me", planned(names, [], 1), infos, 5)
    assert status["failures"]["total"] == 50
    assert [f["artifact"] for f in status["failures"]["items"]] == names[:5]
    assert status["counts"]["failed"] == 50
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"
    assert "50 Artifact(s) failed" in failed["message"]


def test_done_only_when_every_planned_point_is_ready() -> None:
    infos = [artifact_info("g0", body("g0", "Ready", "me"))]
    status = summarize_experiment("me", planned(["g0"], [], 1), infos, 20)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    # An Artifact the experiment consumed under an earlier spec (not planned now) does not count.
    stale = [*infos, artifact_info("old", body("old", "Failed", "me"))]
    assert summarize_experiment("me", planned(["g0"], [], 1), stale, 20)["failures"]["total"] == 0


def test_a_sampled_point_with_fewer_combinations_is_done_when_they_are() -> None:
    """spec.search may plan 2 of one point's combinations and 1 of another's."""
    infos = [
        artifact_info("g0", body("g0", "Ready", "me")),
        artifact_info("g1", body("g1", "Ready", "me")),
        *(artifact_info(t, body(t, "Ready", "me", stage="qa", inputs=(g,))) for t, g in (("a", "g0"), ("b", "g0"))),
        artifact_info("c", body("c", "Ready", "me", stage="qa", inputs=("g1",))),
    ]
    sampled = planned(["g0", "g1"], ["a", "b", "c"], 3)
    sampled.point_stages = {"g0": 3, "g1": 2}
    status = summarize_experiment("me", sampled, infos, 20)
    assert status["counts"]["succeeded"] == 2
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"


def test_batch_sums_its_experiments_and_caps_failures() -> None:
    summaries = [
        ExperimentSummary(
            name=f"e{i}",
            counts=(("points", 10), ("reused", 2), ("created", 8), ("succeeded", 9), ("failed", 1)),
            usage=(("promptTokens", 5),),
            saved=(("promptTokens", 1),),
            failures=(("a", "generate", "JobFailed", "boom"),),
            failures_total=1,
        )
        for i in range(300)
    ]
    status = summarize_batch(summaries, 20)
    assert status["counts"] == {
        "experiments": 300,
        "points": 3000,
        "reused": 600,
        "created": 2400,
        "ready": 2700,
        "failed": 300,
    }
    assert len(status["experiments"]) == 256
    assert status["failures"]["total"] == 300
    assert len(status["failures"]["items"]) == 20
    assert status["usage"]["promptTokens"] == 1500
