"""A start that failed hands the Artifact to its handler through a nudge annotation; while the API server is
away that patch fails too, and it must be tried again (the API-server restart test lost one: 39 of 40 points)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from datasweep.controller import artifact


def test_a_nudge_that_fails_while_the_api_server_is_down_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    delivered = threading.Event()

    def patch_custom(kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        calls.append(name)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        assert artifact.labels.NUDGED in patch["metadata"]["annotations"]
        delivered.set()
        return {}

    monkeypatch.setattr(artifact.client, "patch_custom", patch_custom)
    artifact._nudge("ns", "a", retry_in=0.01)
    assert delivered.wait(10), calls
    assert calls == ["a", "a", "a"]


def test_a_nudge_for_a_deleted_artifact_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def patch_custom(kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        calls.append(name)
        raise ApiException(status=404)

    monkeypatch.setattr(artifact.client, "patch_custom", patch_custom)
    artifact._nudge("ns", "gone", retry_in=0.01)
    threading.Event().wait(0.2)
    assert calls == ["gone"]
