"""`datasweep retry EXPERIMENT`: the calls it makes, against a fake of the custom objects API (the operator's answer
to the annotation is tested in tests/unit/controller and tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from datasweep.cli.backends import ClusterBackend
from datasweep.cli.main import cli
from datasweep.k8s import labels


def artifact(name: str, phase: str, reason: str = "", consumer: str = "sweep") -> dict[str, Any]:
    ready = [{"type": "Ready", "status": "False", "reason": reason, "message": f"{name}: {reason}"}] if reason else []
    return {
        "metadata": {"name": name, "labels": {labels.experiment_key(consumer): "true"}},
        "spec": {"stage": "generate"},
        "status": {"phase": phase, "conditions": ready},
    }


class FakeCustomObjects:
    def __init__(self) -> None:
        self.experiments = {"sweep", "done"}
        self.artifacts = [
            artifact("a-failed", "Failed", "JobFailed"),
            artifact("b-ready", "Ready"),
            artifact("c-waits-for-input", "Failed", "InputFailed"),
            artifact("d-failed", "Failed", "PodsNotCreated"),
            artifact("e-other-experiment", "Failed", "JobFailed", consumer="other"),
            artifact("f-done", "Ready", consumer="done"),
        ]
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        if name not in self.experiments:
            raise ApiException(status=404, reason="Not Found")
        return {"metadata": {"name": name}}

    def list_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, label_selector: str = ""
    ) -> Any:
        key, _, value = label_selector.partition("=")
        return {"items": [a for a in self.artifacts if a["metadata"]["labels"].get(key) == value]}

    def patch_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str, body: dict[str, Any]
    ) -> Any:
        self.patches.append((plural, name, body))
        return {}


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    api = FakeCustomObjects()
    monkeypatch.setattr(ClusterBackend, "connect", classmethod(lambda cls, ns, ctx: cls(api, ns or "ns1", ctx)))
    return api


def test_retry_asks_for_every_failed_artifact_of_the_experiment_at_once(fake_api: FakeCustomObjects) -> None:
    result = CliRunner().invoke(cli, ["retry", "sweep", "--failed", "--cluster"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # One annotation on the Experiment (researchers may patch Experiments, not Artifacts); the operator retries.
    ((plural, name, body),) = fake_api.patches
    assert (plural, name) == ("experiments", "sweep")
    assert body["metadata"]["annotations"][labels.RETRY].startswith("cli-")
    assert "asked the operator to retry 2 failed Artifact(s) of Experiment sweep" in result.stderr
    assert "1 failed for an input and start again once it is Ready" in result.stderr
    assert "c-waits-for-input" in result.stdout
    assert "starts when its input is Ready" in result.stdout
    assert "e-other-experiment" not in result.stdout


def test_retry_with_nothing_failed_says_so(fake_api: FakeCustomObjects) -> None:
    result = CliRunner().invoke(cli, ["retry", "done", "--cluster"], catch_exceptions=False)
    assert result.exit_code == 0
    assert fake_api.patches == []
    assert "Experiment done has no failed Artifacts (1 in all): nothing to retry" in result.stderr


def test_retry_of_an_unknown_experiment_names_the_fix(fake_api: FakeCustomObjects) -> None:
    result = CliRunner().invoke(cli, ["retry", "swep", "--cluster", "-n", "team"])
    assert result.exit_code == 2
    assert "no Experiment 'swep' in namespace team" in result.stderr
    assert "kubectl get experiments -n team" in result.stderr


def test_retry_locally_says_to_run_the_file_again(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["retry", "sweep", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "`datasweep run EXPERIMENT_FILE` reruns only the failed and missing stages" in result.stderr
