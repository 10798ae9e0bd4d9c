"""The batch tools against the cluster: Artifact and Batch objects created with kubectl in a test namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from datasweep.cli.main import cli
from datasweep.core import naming
from datasweep.k8s import labels

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BATCH_A = "batch_20241229_temperature"
BATCH_B = "batch_20241230_topp"


def artifact(
    name: str, semantic: str, fingerprint: str, first_batch: str, temperature: float, top_p: float, consumers: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    # Consumers are labels (bounded status): the points of an Experiment or Batch are the Artifacts labelled so.
    batch_of = {"copa-temperature": BATCH_A, "copa-topp": BATCH_B, "copa-pilot": "batch_20241201_pilot"}
    marked: dict[str, str] = {}
    for consumer in consumers:
        marked.update(labels.consumer_marks(consumer, naming.batch_object_name(batch_of[consumer]))["labels"])
    obj = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": "Artifact",
        "metadata": {"name": name, "labels": marked},
        "spec": {
            "stage": "generate",
            "dataset": "Copa",
            "fingerprint": fingerprint,
            "semanticName": semantic,
            "params": {"params": {"model": "gpt-4o", "temperature": temperature, "top_p": top_p}},
            "storage": {"path": f"_shared/Copa/{semantic}"},
        },
    }
    status = {
        "status": {
            "phase": "Ready",
            "firstBatch": first_batch,
            "firstExperiment": "copa-temperature",
            "consumers": consumers,
        }
    }
    return obj, status


def batch(
    batch_id: str, purpose: str, experiment: str, points: list[tuple[str, str, bool]], ready: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": "Batch",
        "metadata": {"name": batch_id.replace("_", "-")},
        "spec": {"batchId": batch_id, "purpose": purpose},
    }
    status = {
        "status": {
            "experiments": [experiment],
            # as the operator aggregates them: READY counts points whose every stage is Ready
            "counts": {
                "experiments": 1,
                "points": len(points),
                "reused": sum(reused for _, _, reused in points),
                "created": sum(not reused for _, _, reused in points),
                "ready": ready,
                "failed": 0,
            },
            "points": [
                {
                    "experiment": experiment,
                    "dataset": "Copa",
                    "semanticName": semantic,
                    "artifact": name,
                    "reused": reused,
                    "path": f"{batch_id}/Copa/{semantic}",
                    "ready": True,
                }
                for name, semantic, reused in points
            ],
        }
    }
    return obj, status


@pytest.fixture
def objects(control_plane: Any, namespace: str) -> str:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("artifacts", "batches", "experiments"):
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}.datasweep.io", "--timeout=60s")
    fp = {key: key * 64 for key in "abcd"}
    artifacts = [
        artifact(
            "copa-temp05-topp10-gpt4o-aaaaaaaaaaaa",
            "temp05_topp10_gpt4o",
            fp["a"],
            BATCH_A,
            0.5,
            1.0,
            ["copa-temperature"],
        ),
        artifact(
            "copa-temp07-topp10-gpt4o-bbbbbbbbbbbb",
            "temp07_topp10_gpt4o",
            fp["b"],
            BATCH_A,
            0.7,
            1.0,
            ["copa-temperature", "copa-topp"],
        ),
        artifact(
            "copa-temp07-topp08-gpt4o-cccccccccccc", "temp07_topp08_gpt4o", fp["c"], BATCH_B, 0.7, 0.8, ["copa-topp"]
        ),
        artifact(
            "copa-temp03-topp10-gpt4o-dddddddddddd",
            "temp03_topp10_gpt4o",
            fp["d"],
            "batch_20241201_pilot",
            0.3,
            1.0,
            ["copa-pilot"],
        ),
    ]
    batches = [
        batch(
            BATCH_A,
            "temperature_study",
            "copa-temperature",
            [
                ("copa-temp05-topp10-gpt4o-aaaaaaaaaaaa", "temp05_topp10_gpt4o", False),
                ("copa-temp07-topp10-gpt4o-bbbbbbbbbbbb", "temp07_topp10_gpt4o", False),
            ],
            ready=2,
        ),
        batch(
            BATCH_B,
            "topp_study",
            "copa-topp",
            [
                ("copa-temp07-topp08-gpt4o-cccccccccccc", "temp07_topp08_gpt4o", False),
                ("copa-temp07-topp10-gpt4o-bbbbbbbbbbbb", "temp07_topp10_gpt4o", True),
            ],
            ready=1,  # one point still trains: its data is Ready, READY counts it only when every stage is
        ),
    ]
    for obj, status in [*artifacts, *batches]:
        plural = "artifacts" if obj["kind"] == "Artifact" else "batches"
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))
        control_plane.kubectl(
            "patch",
            plural,
            obj["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
    return namespace


def run(namespace: str, *args: str, expect: int = 0) -> Result:
    result = CliRunner().invoke(cli, [*args, "--cluster", "-n", namespace], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def as_json(namespace: str, *args: str) -> Any:
    return json.loads(run(namespace, *args, "-o", "json").stdout)


def kubectl_columns(control_plane: Any, namespace: str, resource: str) -> dict[str, dict[str, str]]:
    """`kubectl get RESOURCE` as a person reads it: NAME -> {COLUMN: value}."""
    lines = control_plane.kubectl("get", resource, "-n", namespace).stdout.splitlines()
    header = lines[0].split()
    return {line.split()[0]: dict(zip(header, line.split(), strict=False)) for line in lines[1:]}


def test_read_tools_on_the_cluster(control_plane: Any, objects: str) -> None:
    ns = objects
    batches = as_json(ns, "batches")
    assert [(b["batchId"], b["points"], b["reused"]) for b in batches] == [(BATCH_A, 2, 0), (BATCH_B, 2, 1)]
    view = as_json(ns, "batch", BATCH_B)
    reused = {p["semanticName"]: (p["reused"], p["firstBatch"]) for p in view["pointList"]}
    assert reused["temp07_topp10_gpt4o"] == (True, BATCH_A)
    # tables name a Batch as kubectl does (its object name); commands take either spelling
    assert f"yes (first batch: {naming.batch_object_name(BATCH_A)})" in run(ns, "batch", BATCH_B).stdout
    assert as_json(ns, "batch", naming.batch_object_name(BATCH_B))["batchId"] == BATCH_B
    listed = run(ns, "batches").stdout
    for batch_id in (BATCH_A, BATCH_B):
        name = naming.batch_object_name(batch_id)
        assert name in listed
        assert batch_id not in listed
        row = next(line.split() for line in listed.splitlines() if line.startswith(name))
        kubectl = kubectl_columns(control_plane, ns, "batches")[name]  # kubectl get bat finds the printed name
        assert row[-4:] == [kubectl[c] for c in ("EXPERIMENTS", "POINTS", "REUSED", "READY")]
    assert [b["ready"] for b in batches] == [2, 1]
    artifacts = as_json(ns, "artifacts", "--dataset", "Copa")
    assert len(artifacts) == 4
    shared = next(a for a in artifacts if a["semanticName"] == "temp07_topp10_gpt4o")
    assert shared["consumers"] == ["copa-temperature", "copa-topp"]
    compared = as_json(ns, "compare", "Copa/temp07_topp10_gpt4o", "Copa/temp05_topp10_gpt4o")
    assert compared["different"] == {"params.temperature": {"first": 0.7, "second": 0.5}}
    paths = run(ns, "paths", "--dataset", "Copa", "--batch", BATCH_A, "--format", "yaml").stdout
    assert f"path: /data/{BATCH_A}/Copa/temp07_topp10_gpt4o/Copa" in paths
    resolved = as_json(ns, "resolve", f"/data/{BATCH_B}/Copa/temp07_topp10_gpt4o/Copa")
    assert resolved["fingerprint"] == "b" * 64
    assert resolved["sharedPath"] == "/data/_shared/Copa/temp07_topp10_gpt4o/Copa"
    assert len(resolved["batchPaths"]) == 2


def test_bad_input_and_gc_on_the_cluster(objects: str) -> None:
    ns = objects
    assert "unknown batch" in run(ns, "batch", "batch_20990101_none", expect=2).output
    assert "no artifact matches" in run(ns, "compare", "nothing", "Copa/temp05_topp10_gpt4o", expect=2).output
    gc = as_json(ns, "gc")
    assert [c["artifacts"] for c in gc["candidates"]] == [["copa-temp03-topp10-gpt4o-dddddddddddd"]]
    assert gc["dryRun"] is True
    assert len(as_json(ns, "artifacts")) == 4  # the dry run deleted nothing
