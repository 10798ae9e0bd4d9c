"""Operator-wide Kopf settings: the diff base leaves an Artifact's spec out (no Artifact handler reacts to it),
an Experiment's in; the routine success lines of the per-event handlers are not logged."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from datasweep.controller.setup import DiffBase, _not_routine


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


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_only_the_per_event_handlers_success_lines_are_dropped() -> None:
    assert not _not_routine(record(logging.INFO, "Handler 'artifact_event' succeeded."))
    assert not _not_routine(record(logging.INFO, "Handler 'job_event' succeeded."))
    assert _not_routine(record(logging.INFO, "Handler 'artifact_changed' succeeded."))
    assert _not_routine(record(logging.INFO, "job copa-x created"))
    assert _not_routine(record(logging.ERROR, "Handler 'artifact_event' succeeded."))
