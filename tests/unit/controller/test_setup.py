"""Operator-wide Kopf settings: the diff base leaves an Artifact's spec out (no Artifact handler reacts to it),
an Experiment's in, and keeps an Artifact's in memory (no patch); the routine success lines of the per-event
handlers are not logged, and no INFO line becomes a Kubernetes Event."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from datasweep.controller.setup import DiffBase, _RoutineLines
from datasweep.k8s import labels


def body(kind: str) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": "x",
            "uid": "u-1",
            "annotations": {"datasweep.io/retry": "1", labels.experiment_key("e" * 80): "e" * 80},
            "labels": {"a": "b"},
        },
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
    quiet = _RoutineLines(verbose=False)
    assert not quiet.filter(record(logging.INFO, "Handler 'artifact_event' succeeded."))
    assert not quiet.filter(record(logging.INFO, "Handler 'job_event' succeeded."))
    assert quiet.filter(record(logging.INFO, "Handler 'artifact_changed' succeeded."))
    assert quiet.filter(record(logging.INFO, "job copa-x created"))
    assert quiet.filter(record(logging.ERROR, "Handler 'artifact_event' succeeded."))
    assert _RoutineLines(verbose=True).filter(record(logging.INFO, "Handler 'job_event' succeeded."))


def test_info_lines_are_logged_but_not_posted_as_events_warnings_are() -> None:
    """Kopf's poster skips records marked k8s_skip: an INFO line per Artifact would be an Event write each."""
    quiet = _RoutineLines(verbose=False)
    info, warning = record(logging.INFO, "job copa-x created"), record(logging.WARNING, "Handler failed")
    assert quiet.filter(info)
    assert quiet.filter(warning)
    assert getattr(info, "k8s_skip", False) is True
    assert not hasattr(warning, "k8s_skip")


def test_an_artifacts_diff_base_stays_in_memory_and_ignores_consumer_annotations() -> None:
    """No diff-base patch per Artifact; an Experiment's goes into its annotation as before."""
    storage = DiffBase(prefix="kopf.datasweep.io", ignored_fields=["metadata.labels"])
    artifact = body("Artifact")
    essence = storage.build(body=artifact)
    assert essence["metadata"]["annotations"] == {"datasweep.io/retry": "1"}  # a consumer is no news
    assert storage.fetch(body=artifact) is None  # never seen: Kopf calls the handler as for a new one
    patch = kopf.Patch()
    storage.store(body=artifact, patch=patch, essence=essence)
    assert not patch
    assert storage.fetch(body=artifact) == essence
    storage.forget("u-1")
    assert storage.fetch(body=artifact) is None

    experiment = body("Experiment")
    patch = kopf.Patch()
    storage.store(body=experiment, patch=patch, essence=storage.build(body=experiment))
    assert "kopf.datasweep.io/last-handled-configuration" in patch["metadata"]["annotations"]


def test_jobs_and_events_are_filtered_by_the_api_server(monkeypatch: Any) -> None:
    from kopf._cogs.structs.references import Resource

    from datasweep.controller import setup

    monkeypatch.setattr(setup.client, "warm_up", lambda: None)
    settings = kopf.OperatorSettings()
    setup.configure(settings=settings, logger=logging.getLogger("test"))

    def selectors(group: str, version: str, plural: str) -> tuple[list[str], list[str]]:
        resource = Resource(group, version, plural, namespaced=True)
        return list(settings.watching.label_selectors.collect(resource)), list(
            settings.watching.field_selectors.collect(resource)
        )

    # Only our Jobs and the FailedCreate Events of Jobs reach the operator; every Artifact and Experiment does.
    assert selectors("batch", "v1", "jobs") == ([labels.ARTIFACT], [])
    assert selectors("", "v1", "pods") == ([labels.ARTIFACT], [])  # the Jobs' pods (resync.py)
    assert selectors("", "v1", "events") == ([], ["reason=FailedCreate,involvedObject.kind=Job"])
    assert selectors("events.k8s.io", "v1", "events") == ([], [])
    assert selectors("datasweep.io", "v1alpha1", "artifacts") == ([], [])
