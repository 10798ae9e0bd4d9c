"""Issue 14: a 10,000-point plan; no object the operator writes may exceed 256 KiB (etcd's limit is ~1.5 MiB)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.controller.aggregate import Planned, summarize_batch, summarize_experiment
from datasweep.controller.experiment import _worker_details
from datasweep.controller.indices import ExperimentSummary, artifact_info
from datasweep.core import naming
from datasweep.core.plan import PlanInputs, plan_experiment
from datasweep.k8s import builders, labels
from datasweep.store import layout

LIMIT = 256 * 1024
POINTS = 10_000


def size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def test_no_object_of_a_10000_point_sweep_exceeds_256_kib() -> None:
    spec = ExperimentSpec.model_validate(
        {
            "purpose": "scale",
            "maxPoints": POINTS,
            "datasets": [{"name": "Copa", "source": {"path": "superglue/copa"}}],
            "generation": {
                "apiKeySecret": {"name": "openai"},
                "temperature": [round(0.01 * i, 2) for i in range(100)],
                "topP": [round(0.01 * i, 2) for i in range(1, 101)],
                "prompt": {"text": "Rephrase: {premise}\n" * 50},
            },
            "training": [{"name": "qa", "kind": "qa", "baseModel": {"path": "models/tiny"}}],
        }
    )
    plan = plan_experiment(spec, PlanInputs({"Copa": "c" * 64}, created=datetime(2026, 1, 1)), max_points=2 * POINTS)
    assert len(plan.points) == POINTS
    settings = OperatorSettings(dataRoot=None)
    paths: dict[str, str] = {}
    biggest_artifact = biggest_job = 0
    # 100 experiments share every Artifact, half of them with names too long for a label key: the marks
    # they add are the same for every Artifact, so they are measured once and added.
    consumers = [f"experiment-{i:03d}-" + "x" * (40 if i % 2 else 200) for i in range(100)]
    marks: dict[str, dict[str, str]] = {"labels": {}, "annotations": {}}
    for consumer in consumers:
        for key, values in labels.consumer_marks(consumer, naming.batch_object_name(plan.batch)).items():
            marks[key].update(values)
    shared_status = {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "JobFailed", "message": "m" * 1024}],
        "manifest": {"files": 3, "rows": 10**6, "bytes": 10**9, "sha256": "f" * 64, "path": "p" * 200},
    }
    overhead = size(marks) + size(shared_status)
    infos = []
    for point in plan.points:
        for stage in point.stages:
            if stage.stage == "generate":
                path = layout.shared_relpath(stage.dataset, f"{stage.semantic_name}_{stage.short_fingerprint}")
                paths[stage.artifact] = path
            else:
                path = layout.training_relpath(paths[stage.inputs[0]], stage.stage, stage.fingerprint)
            worker = _worker_details(spec, stage, path, paths, batch=plan.batch, experiment="scale")
            body = builders.artifact_body(
                stage,
                storage_path=path,
                settings=settings,
                experiment="scale",
                batch=plan.batch,
                retries=2,
                parallelism=16,
                queue_name="team-a",
                worker=worker,
            )
            biggest_artifact = max(biggest_artifact, size(body) + overhead)
            job = builders.worker_job(body, attempt=0, settings=settings, queue_name="team-a")  # carries the spec
            biggest_job = max(biggest_job, size(job))
            body["metadata"]["labels"].update(marks["labels"])
            body["status"] = shared_status
            infos.append(artifact_info(stage.artifact, body))
    assert biggest_artifact < LIMIT
    assert biggest_job < LIMIT

    planned = Planned(
        points=POINTS,
        stages=2,
        generate=frozenset(p.generate.artifact for p in plan.points),
        artifacts=frozenset(s.artifact for s in plan.stages),
        batch_object=naming.batch_object_name(plan.batch),
        generation=1,
    )
    status = summarize_experiment("scale", planned, infos, OperatorSettings().max_failures_listed)
    assert status["failures"]["total"] == 2 * POINTS  # every Artifact failed: the worst case for the list
    experiment = {"metadata": {"name": "scale"}, "spec": spec.model_dump(by_alias=True), "status": status}
    assert size(experiment) < LIMIT

    summaries = [
        ExperimentSummary(
            name=f"experiment-{i:04d}-" + "y" * 200,
            counts=tuple(status["counts"].items()),
            usage=(),
            saved=(),
            failures=tuple((f["artifact"], f["stage"], f["reason"], f["message"]) for f in status["failures"]["items"]),
            failures_total=status["failures"]["total"],
        )
        for i in range(1000)
    ]
    assert size({"status": summarize_batch(summaries, OperatorSettings().max_failures_listed)}) < LIMIT
