"""Fixtures for tests against a real control plane (etcd, API server, controller-manager, scheduler, kwok).

`control_plane` (session): builds the binaries when missing, starts one cluster for the whole session and
stops it at the end. With DATASWEEP_TEST_KUBECONFIG set, that cluster is used instead and left running.
`namespace` (function): a fresh namespace with its default ServiceAccount, deleted after the test.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HACK_DIR = Path(__file__).resolve().parents[2] / "hack"
if str(HACK_DIR) not in sys.path:
    sys.path.insert(0, str(HACK_DIR))

from controlplane import ControlPlane, build  # noqa: E402
from tests.e2e.operator_harness import cluster_fixtures, install_crds, write_dataset  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    previous = os.environ.get("KUBECONFIG")
    external = os.environ.get("DATASWEEP_TEST_KUBECONFIG")
    if external:
        plane = ControlPlane.attach(external)
    else:
        build()
        plane = ControlPlane.start()
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield plane
    finally:
        plane.stop()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    # Pods cannot be created before the serviceaccount controller has made the namespace's default account.
    deadline = time.monotonic() + 60
    while control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"the default ServiceAccount of namespace {name} did not appear within 60s")
        time.sleep(0.2)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


# Operator tests: the CRDs, a data volume root and a namespace with the API-key Secret and data PVC.


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    """The CRDs generated from the models, installed once."""
    install_crds(control_plane)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    write_dataset(root)
    return root


@pytest.fixture
def ready_namespace(control_plane: ControlPlane, namespace: str, data_root: Path, crds: None) -> str:
    cluster_fixtures(control_plane, namespace, data_root)
    return namespace
