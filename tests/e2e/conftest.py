"""Fixtures for tests against a real control plane (etcd, API server, controller-manager, scheduler, kwok).

`control_plane` (session): builds the binaries when missing, starts one cluster for the whole session and
stops it at the end. With DATASWEEP_TEST_KUBECONFIG set, that cluster is used instead and left running.
`namespace` (function): a fresh namespace with its default ServiceAccount, deleted after the test.
`real_images` (session): the real node's images (operator, worker) built where stale and imported; skips,
naming the reason, only where the host cannot run a real node (hack/realnode.py). `trainer_image` adds the
trainer image (tests marked `trainer`: `make e2e-real`). `real_namespace`: a namespace whose data claim is a
hostPath volume at `data_root`, writable by the images' user.
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
from datasweep.testing.openai_server import OpenAITestServer, ServerBehavior  # noqa: E402
from tests.e2e.operator_harness import cluster_fixtures, install_crds, real_fixtures, write_dataset  # noqa: E402


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


# The real node: pods that really run.


@pytest.fixture(scope="session")
def real_images(control_plane: ControlPlane) -> dict[str, str]:
    """{"operator": tag, "worker": tag} built (cached) and imported into the real node's containerd."""
    if control_plane.node is None:
        pytest.skip(f"no real node: {control_plane.node_unavailable or 'attached to an external cluster'}")
    from images import ensure_images

    tags = ensure_images(["operator", "worker"], quiet=True)
    control_plane.import_images(list(tags.values()))
    return tags


@pytest.fixture(scope="session")
def trainer_image(control_plane: ControlPlane, real_images: dict[str, str]) -> str:
    """The trainer image (torch): built once (~10 min cold) and imported (~3 min); `make e2e-real` only."""
    from images import ensure_images

    tag = ensure_images(["trainer"], quiet=True)["trainer"]
    control_plane.import_images([tag])
    return tag


@pytest.fixture
def real_namespace(control_plane: ControlPlane, namespace: str, data_root: Path, crds: None) -> Iterator[str]:
    pv = real_fixtures(control_plane, namespace, data_root)
    try:
        yield namespace
    finally:
        control_plane.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False)
        control_plane.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def openai_server(control_plane: ControlPlane, real_images: dict[str, str]) -> Iterator[OpenAITestServer]:
    """The OpenAI test server on the real node's bridge address: the only host address pods can reach."""
    assert control_plane.node is not None  # real_images skips without a real node
    with OpenAITestServer(host=control_plane.node.ip) as server:
        yield server


@pytest.fixture
def slow_server(
    request: pytest.FixtureRequest, control_plane: ControlPlane, real_images: dict[str, str]
) -> Iterator[OpenAITestServer]:
    """`openai_server` answering each chat request after the test module's LATENCY_S seconds (default 1): a
    worker stays mid-run long enough to be killed, suspended or watched."""
    assert control_plane.node is not None
    latency = float(getattr(request.module, "LATENCY_S", 1.0))
    with OpenAITestServer(ServerBehavior(latency_s=latency), host=control_plane.node.ip) as server:
        yield server
