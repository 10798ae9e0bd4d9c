"""Kopf's diff base leaves an Artifact's spec out (no Artifact handler reacts to it), an Experiment's in."""

from __future__ import annotations

from typing import Any

import kopf

from datasweep.controller.setup import DiffBase


def body(kind: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "annotations": {"datasweep.io/retry": "1"}, "labels": {"a": "b"}},
        "spec": {"stage": "generate", "worker": {"workerSpec": "stage: generate\n" * 100}},
        "status": {"phase": "Ready"},
    }
    return kopf.Body(raw)


def test_an_artifacts_diff_base_keeps_its_annotations_but_not_its_spec() -> None:
    storage = DiffBase(prefix="kopf.datasweep.io", ignored_fields=["metadata.labels"])
    essence = storage.build(body=body("Artifact"))
    assert "spec" not in essence
    assert essence["metadata"]["annotations"] == {"datasweep.io/retry": "1"}  # what its update handler diffs


def test_an_experiments_diff_base_keeps_its_spec() -> None:
    storage = DiffBase(prefix="kopf.datasweep.io", ignored_fields=["metadata.labels"])
    essence = storage.build(body=body("Experiment"))
    assert essence["spec"]["stage"] == "generate"
    assert "labels" not in essence.get("metadata", {})
