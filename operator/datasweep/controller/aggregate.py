"""Experiment and Batch status, aggregated from their Artifacts (called on every Artifact change)."""

from __future__ import annotations

from typing import Any

from datasweep.k8s import client, labels
from datasweep.k8s.conditions import set_condition
from datasweep.store.manifest import Usage


def _usage(status: dict[str, Any]) -> Usage:
    return Usage.model_validate(status.get("usage") or {})


def refresh_experiment(namespace: str, name: str) -> None:
    experiment = client.get_custom("Experiment", namespace, name)
    if experiment is None:
        return
    status = dict(experiment.get("status") or {})
    points = [dict(p) for p in status.get("points", [])]
    if not points:
        return
    artifacts = {a["metadata"]["name"]: a for a in client.list_custom("Artifact", namespace)}
    counts = {
        "points": len(points),
        "reused": 0,
        "created": 0,
        "pending": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
    }
    usage, saved = Usage(), Usage()
    failures: list[str] = []
    generation = int(experiment["metadata"].get("generation", 1))
    all_data_ready, all_trained, seen = True, True, set()
    for point in points:
        phases = []
        for stage_name, stage in point.get("stages", {}).items():
            artifact = artifacts.get(stage["artifact"], {})
            art_status = artifact.get("status") or {}
            phase = art_status.get("phase", "Pending")
            stage["phase"] = phase
            phases.append(phase)
            if stage["artifact"] not in seen:
                seen.add(stage["artifact"])
                if stage.get("reused"):
                    saved = saved + _usage(art_status)
                else:
                    usage = usage + _usage(art_status)
            if phase != "Ready":
                if stage_name == "generate":
                    all_data_ready = False
                else:
                    all_trained = False
            if phase == "Failed":
                ready: dict[str, Any] = next(
                    (c for c in art_status.get("conditions", []) if c.get("type") == "Ready"), {}
                )
                failures.append(f"{stage['artifact']}: {ready.get('reason', 'Failed')}: {ready.get('message', '')}")
        counts["reused" if point.get("reused") else "created"] += 1
        if "Failed" in phases:
            counts["failed"] += 1
        elif all(p == "Ready" for p in phases):
            counts["succeeded"] += 1
        elif "Running" in phases:
            counts["running"] += 1
        else:
            counts["pending"] += 1
    counts["artifacts"] = len(seen)
    conditions = status.get("conditions", [])
    conditions = set_condition(
        conditions,
        "DataReady",
        all_data_ready,
        "DataReady" if all_data_ready else "Generating",
        "",
        generation,
    )
    conditions = set_condition(
        conditions, "Trained", all_trained, "Trained" if all_trained else "Training", "", generation
    )
    if failures:
        message = "; ".join(failures)[:1024]
        conditions = set_condition(conditions, "Failed", True, "ArtifactFailed", message, generation)
        conditions = set_condition(conditions, "Succeeded", False, "ArtifactFailed", message, generation)
    else:
        conditions = [c for c in conditions if c.get("type") != "Failed"]
        done = counts["succeeded"] == counts["points"]
        conditions = set_condition(
            conditions,
            "Succeeded",
            done,
            "Succeeded" if done else "InProgress",
            f"{counts['succeeded']}/{counts['points']} points done",
            generation,
        )
    client.patch_status(
        "Experiment",
        namespace,
        name,
        {
            "points": points,
            "counts": counts,
            "conditions": conditions,
            "usage": usage.model_dump(by_alias=True),
            "savedByReuse": saved.model_dump(by_alias=True),
        },
    )
    batch = experiment["metadata"].get("labels", {}).get(labels.BATCH)
    if batch:
        refresh_batch(namespace, batch)


def refresh_batch(namespace: str, batch: str) -> None:
    experiments = client.list_custom("Experiment", namespace, label_selector=f"{labels.BATCH}={batch}")
    counts = {
        "experiments": len(experiments),
        "points": 0,
        "reused": 0,
        "created": 0,
        "ready": 0,
        "failed": 0,
    }
    usage, saved, points = Usage(), Usage(), []
    for experiment in sorted(experiments, key=lambda e: e["metadata"]["name"]):
        status = experiment.get("status") or {}
        exp_counts = status.get("counts") or {}
        for key, source in (
            ("points", "points"),
            ("reused", "reused"),
            ("created", "created"),
            ("ready", "succeeded"),
            ("failed", "failed"),
        ):
            counts[key] += int(exp_counts.get(source, 0))
        usage = usage + _usage(status)
        saved = saved + Usage.model_validate(status.get("savedByReuse") or {})
        for point in status.get("points", []):
            stages = point.get("stages", {})
            points.append(
                {
                    "experiment": experiment["metadata"]["name"],
                    "dataset": point["dataset"],
                    "semanticName": point["semanticName"],
                    "artifact": point["artifact"],
                    "reused": bool(point.get("reused")),
                    "path": point.get("path"),
                    "ready": all(s.get("phase") == "Ready" for s in stages.values()),
                }
            )
    client.patch_status(
        "Batch",
        namespace,
        batch,
        {
            "experiments": sorted(e["metadata"]["name"] for e in experiments),
            "counts": counts,
            "points": points,
            "usage": usage.model_dump(by_alias=True),
            "savedByReuse": saved.model_dump(by_alias=True),
        },
    )
