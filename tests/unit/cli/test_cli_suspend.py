"""`datasweep suspend|resume EXPERIMENT`: spec.suspend on the cluster's Experiment; locally, a clear answer that a
local run has no suspend (Ctrl-C, then rerun). tests/e2e/test_suspend_real_node.py runs the operator's side."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from datasweep.cli.backends import ClusterBackend
from datasweep.cli.main import cli


class FakeExperiments:
    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {"sweep": {"purpose": "p"}}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        if name not in self.specs:
            raise ApiException(status=404, reason="Not Found")
        return {"metadata": {"name": name}, "spec": self.specs[name]}

    def patch_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str, body: dict[str, Any]
    ) -> Any:
        self.patches.append((ns, name, body))
        self.specs[name].update(body["spec"])
        return {"spec": self.specs[name]}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeExperiments:
    fake = FakeExperiments()
    monkeypatch.setattr(ClusterBackend, "connect", classmethod(lambda cls, ns, ctx: cls(fake, ns or "ns1", ctx)))
    return fake


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_suspend_and_resume_set_spec_suspend(api: FakeExperiments) -> None:
    suspended = run("suspend", "sweep", "--cluster", "-n", "team")
    assert suspended.exit_code == 0, suspended.output
    assert api.patches == [("team", "sweep", {"spec": {"suspend": True}})]
    assert "experiment sweep suspended" in suspended.output
    assert "datasweep resume sweep" in suspended.output
    again = run("suspend", "sweep", "--cluster", "-n", "team")
    assert "already suspended" in again.output
    assert len(api.patches) == 1  # nothing to write
    resumed = run("resume", "sweep", "-n", "team")
    assert resumed.exit_code == 0, resumed.output
    assert api.patches[-1] == ("team", "sweep", {"spec": {"suspend": False}})
    assert "resumed" in resumed.output


def test_an_unknown_experiment_is_named_with_the_fix(api: FakeExperiments) -> None:
    result = run("suspend", "nope", "--cluster")
    assert result.exit_code == 2
    assert "no Experiment nope in namespace ns1" in result.output
    assert "kubectl get experiments -n ns1" in result.output


def test_locally_it_says_there_is_no_suspend_and_what_to_do_instead(tmp_path: Any) -> None:
    result = run("suspend", "sweep", "--root", str(tmp_path))
    assert result.exit_code == 2
    assert "a local run has no suspend" in result.output
    assert "Ctrl-C" in result.output
    assert "rerun the same command to resume" in result.output
    assert "--cluster" in result.output


def test_a_local_run_of_a_suspended_experiment_starts_nothing_and_says_why(
    workspace: Any, write_experiment: Any, invoke: Any
) -> None:
    from cli_helpers import copa_dataset, fake_worker_command, generation

    body = {"batch": "batch_20250101_local", "datasets": copa_dataset(), "generation": generation(None)}
    experiment = write_experiment("local-suspended", {**body, "suspend": True})
    root = workspace / "root"
    result = invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    assert "spec.suspend: true: 1 stage(s) not started" in result.output
    assert "Ctrl-C" in result.output
    assert not list(root.glob("_shared/Copa/*/manifest.json"))
    experiment = write_experiment("local-suspended", {**body, "suspend": False})
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    assert len(list(root.glob("_shared/Copa/*/manifest.json"))) == 1
