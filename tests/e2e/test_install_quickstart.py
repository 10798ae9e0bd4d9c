"""The install path of docs/deploy.md on the project's control plane: hack/install.py (`make install`) puts the
images on the real node, a volume under the data claim and the chart in place with the operator Running from its
image; then the quick start's commands (the API-key Secret, the quick-start Experiment of examples/quickstart)
generate Copa rephrases in real pods against the local OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import REPO, condition, get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

QUICKSTART = REPO / "examples" / "quickstart" / "copa-quickstart.yaml"
POD_TIMEOUT = 300.0


def test_install_then_the_quick_start_succeeds_in_real_pods(
    control_plane: Any, real_images: dict[str, str], namespace: str, tmp_path: Path, openai_server: OpenAITestServer
) -> None:
    import install

    assert control_plane.node is not None  # real_images skips without a real node
    target = install.Target(
        control_plane, control_plane.node.socket, control_plane.node.import_record, control_plane.api_for_pods
    )
    data_dir = tmp_path / "data"
    install.install(target, namespace, data_dir)
    pv = f"{namespace}-datasweep-data"
    try:
        pods = get(control_plane, namespace, "pods", selector="app.kubernetes.io/name=datasweep")["items"]
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        assert pods[0]["spec"]["containers"][0]["image"] == real_images["operator"]
        claim = get(control_plane, namespace, "persistentvolumeclaim", "datasweep-data")
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["volumeName"] == pv

        # docs/deploy.md's quick start, with the OpenAI-compatible server the deploy page names
        control_plane.kubectl(
            "-n", namespace, "create", "secret", "generic", "openai", "--from-literal=api-key=sk-test"
        )
        body = yaml.safe_load(QUICKSTART.read_text())
        body["spec"]["generation"].update(backend="openai-compatible", baseURL=openai_server.url)
        control_plane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body))

        def finished() -> Any:
            obj = get(control_plane, namespace, "experiment", "copa-quickstart")
            states = [condition(obj, kind).get("status") for kind in ("Succeeded", "Failed")]
            return obj if "True" in states else None

        def explain() -> str:
            return control_plane.kubectl("-n", namespace, "logs", "deploy/datasweep", "--tail=60", check=False).stdout

        done = wait_for("the quick-start Experiment", finished, POD_TIMEOUT, explain=explain)
        assert condition(done, "Succeeded")["status"] == "True", explain()
        listed = control_plane.kubectl("-n", namespace, "get", "exp,bat,art").stdout
        assert "copa-quickstart" in listed
    finally:
        install.helm(control_plane, "uninstall", "datasweep", "--namespace", namespace, "--wait")
        control_plane.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)
    artifacts = get(control_plane, namespace, "artifacts")["items"]
    assert len(artifacts) == 2  # two temperatures
    for artifact in artifacts:
        path = data_dir / artifact["spec"]["storage"]["path"]
        assert read_manifest(path) is not None
        rows = [json.loads(line) for line in (path / "Copa" / "copa_train.jsonl").open()]
        assert len(rows) == 8
        assert all(row["premise"].startswith("rephrased: ") for row in rows)
    assert openai_server.counts["POST /v1/chat/completions"] >= 2 * 16
