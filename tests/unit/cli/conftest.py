"""Fixtures for the CLI tests: a Copa source dataset, experiment files, and the CLI invoked in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import experiment_yaml, write_copa
from click.testing import CliRunner, Result

from datasweep.cli.main import cli


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local backend unless a test asks for the cluster: no kubeconfig, an API key for the workers."""
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("DATASWEEP_ROOT", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """tmp/raw/superglue/copa (the data dir) and tmp/root (the store)."""
    write_copa(tmp_path / "raw" / "superglue" / "copa")
    return tmp_path


@pytest.fixture
def write_experiment(workspace: Path) -> Callable[..., Path]:
    def write(name: str, spec: dict[str, Any], file_name: str | None = None) -> Path:
        path = workspace / (file_name or f"{name}.yaml")
        path.write_text(experiment_yaml(name, spec), encoding="utf-8")
        return path

    return write


Invoke = Callable[..., Result]


@pytest.fixture
def invoke() -> Invoke:
    def run(*args: str | Path, expect: int | None = 0) -> Result:
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
        return result

    return run


@pytest.fixture(scope="module")
def openai_server() -> Iterator[Any]:
    from datasweep.testing.openai_server import serve_openai

    with serve_openai() as server:
        yield server
