"""The cluster backend's views from Artifact/Batch objects as the API server returns them (no server here;
tests/e2e/test_cli_cluster.py runs the same tools against a real control plane)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from datasweep.cli import common
from datasweep.cli.backends import ClusterBackend
from datasweep.cli.main import cli
from datasweep.k8s import labels

REPO = Path(__file__).resolve().parents[3]
BATCH_A = "batch_20241229_temperature"
BATCH_B = "batch_20241230_topp"


def artifact(
    semantic: str, fp: str, first_batch: str, consumers: list[str], temperature: float, batches: tuple[str, ...] = ()
) -> dict[str, Any]:
    """As the operator labels them: one key per consuming Experiment and per Batch."""
    marks = {labels.experiment_key(c): "true" for c in consumers} | {labels.batch_key(b): "true" for b in batches}
    return {
        "metadata": {"name": f"copa-{semantic.replace('_', '-')}-{fp * 12}", "labels": marks},
        "spec": {
            "stage": "generate",
            "dataset": "Copa",
            "fingerprint": fp * 64,
            "semanticName": semantic,
            "params": {"temperature": temperature},
            "storage": {"path": f"_shared/Copa/{semantic}"},
        },
        "status": {"phase": "Ready", "firstBatch": first_batch, "consumers": consumers},
    }


class FakeCustomObjects:
    """The two calls the read tools make, answering with what `kubectl get -o json` would show."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {
            "artifacts": [
                artifact("temp05_topp10_gpt4o", "a", BATCH_A, ["copa-temperature"], 0.5),
                artifact(
                    "temp07_topp10_gpt4o",
                    "b",
                    BATCH_A,
                    ["copa-temperature", "copa-topp"],
                    0.7,
                    ("batch-20241229-temperature", "batch-20241230-topp"),
                ),
                artifact("temp03_topp10_gpt4o", "d", "batch_20241201_pilot", ["copa-pilot"], 0.3),
            ],
            "batches": [
                {
                    "metadata": {"name": "batch-20241230-topp"},
                    "spec": {"batchId": BATCH_B, "purpose": "topp_study"},
                    "status": {"experiments": ["copa-topp"], "counts": {"experiments": 1, "points": 1}},
                }
            ],
            "experiments": [{"metadata": {"name": "copa-topp"}}],
        }
        self.deleted: list[str] = []

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str) -> Any:
        assert (group, version, namespace) == ("datasweep.io", "v1alpha1", "ns1")
        return {"items": self.objects[plural]}

    def delete_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> None:
        self.deleted.append(name)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    api = FakeCustomObjects()
    monkeypatch.setattr(ClusterBackend, "connect", classmethod(lambda cls, ns, ctx: cls(api, ns or "ns1", ctx)))
    return api


def as_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--cluster", "-o", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cluster_batch_and_artifacts(fake_api: FakeCustomObjects) -> None:
    view = as_json("batch", BATCH_B)
    assert len(view["pointList"]) == 1  # selected by the Batch's label, not every Artifact
    point = view["pointList"][0]
    assert (point["reused"], point["firstBatch"]) == (True, BATCH_A)
    assert point["experiment"] == "copa-topp"
    assert point["path"] == f"{BATCH_B}/Copa/temp07_topp10_gpt4o"
    assert point["sharedPath"] == "_shared/Copa/temp07_topp10_gpt4o"
    artifacts = as_json("artifacts", "--dataset", "Copa")
    assert [a["semanticName"] for a in artifacts] == [
        "temp03_topp10_gpt4o",
        "temp05_topp10_gpt4o",
        "temp07_topp10_gpt4o",
    ]
    resolved = as_json("resolve", f"/data/{BATCH_B}/Copa/temp07_topp10_gpt4o/Copa")
    assert resolved["batchPaths"] == [f"/data/{BATCH_B}/Copa/temp07_topp10_gpt4o/Copa"]


def test_cluster_gc_keeps_referenced_and_consumed_artifacts(fake_api: FakeCustomObjects) -> None:
    gc = as_json("gc")
    # temp07 is in a batch; temp05 and temp03 have consumers, but only copa-topp still exists as an Experiment
    assert sorted(c["artifacts"][0] for c in gc["candidates"]) == [
        "copa-temp03-topp10-gpt4o-dddddddddddd",
        "copa-temp05-topp10-gpt4o-aaaaaaaaaaaa",
    ]
    assert fake_api.deleted == []
    result = CliRunner().invoke(cli, ["gc", "--cluster", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(fake_api.deleted) == [c["artifacts"][0] for c in gc["candidates"]]
    # the volume's request store is not compacted from here: the line says what does it
    assert "request store is compacted by the chart's CronJob <release>-request-store-gc" in result.stderr


def test_default_backend_is_the_cluster_when_a_kubeconfig_exists(
    fake_api: FakeCustomObjects, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert isinstance(common.choose_backend(None, False, None, None), ClusterBackend)
    result = CliRunner().invoke(cli, ["batches", "-o", "json"], catch_exceptions=False)
    assert [b["batchId"] for b in json.loads(result.stdout)] == [BATCH_B]


def test_cluster_results_by_experiment_and_batch(fake_api: FakeCustomObjects) -> None:
    fake_api.objects["artifacts"][0]["status"]["manifest"] = {
        "files": 3,
        "rows": 9,
        "bytes": 100,
        "sha256": "0" * 64,
        "usage": {"promptTokens": 120, "completionTokens": 30, "costUsd": 0.0012},
    }
    rows = as_json("results", "copa-temperature")
    assert [(r["semanticName"], r["temperature"], r["stage"]) for r in rows] == [
        ("temp05_topp10_gpt4o", 0.5, "generate"),
        ("temp07_topp10_gpt4o", 0.7, "generate"),
    ]
    assert (rows[0]["tokens"], rows[0]["costUsd"]) == (150, 0.0012)
    assert [r["semanticName"] for r in as_json("results", BATCH_B)] == ["temp07_topp10_gpt4o"]
    result = CliRunner().invoke(cli, ["results", "copa-temperature", "--cluster"], catch_exceptions=False)
    assert "pass --data-root where it is mounted" in result.output


def test_cluster_gc_offers_a_failed_artifact_a_batch_lists(fake_api: FakeCustomObjects) -> None:
    fake_api.objects["artifacts"][1]["status"]["phase"] = "Failed"  # temp07, listed by the batch
    gc = as_json("gc")
    reasons = {c["artifacts"][0]: c["reason"] for c in gc["candidates"]}
    assert reasons["copa-temp07-topp10-gpt4o-bbbbbbbbbbbb"] == "failed, never completed"


def table(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--cluster"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def printer_column(crd_file: str, column: str, obj: dict[str, Any]) -> Any:
    """What `kubectl get` prints in COLUMN for OBJ: the CRD's printer column jsonPath (simple dotted paths)."""
    crd = yaml.safe_load((REPO / "crds" / crd_file).read_text())
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    value: Any = obj
    for part in columns[column].strip(".").split("."):
        value = (value or {}).get(part)
    return value


def test_tables_print_the_batch_name_kubectl_finds_and_take_either_spelling(fake_api: FakeCustomObjects) -> None:
    """`kubectl get bat batch-20241230-topp` finds the Batch; the tables print that name, and every command that
    takes a batch accepts it as well as the id batch_20241230_topp."""
    listed = table("batches")
    assert "batch-20241230-topp" in listed
    assert BATCH_B not in listed
    for spelling in (BATCH_B, "batch-20241230-topp"):
        view = as_json("batch", spelling)
        assert (view["batchId"], view["name"]) == (BATCH_B, "batch-20241230-topp")
        assert [r["semanticName"] for r in as_json("results", spelling)] == ["temp07_topp10_gpt4o"]
    detail = table("batch", "batch-20241230-topp")
    assert "yes (first batch: batch-20241229-temperature)" in detail
    assert "FIRST BATCH" in table("artifacts")
    assert "batch-20241229-temperature" in table("artifacts")
    assert BATCH_A not in table("artifacts")
    assert "batch-20241230-topp" in table("paths", "--batch", "batch-20241230-topp")
    result = CliRunner().invoke(cli, ["batch", "batch-20990101-none", "--cluster"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "known batches: batch-20241230-topp" in result.output


def test_ready_means_what_kubectl_get_batches_prints(fake_api: FakeCustomObjects) -> None:
    """READY in `datasweep batches` is the Batch's READY column (status.counts.ready: points whose every stage is
    Ready), not a count of its Ready data Artifacts; without a status the same is summed from the points."""
    batch = fake_api.objects["batches"][0]
    batch["status"]["counts"] = {"experiments": 1, "points": 1, "reused": 1, "ready": 0}  # data Ready, training not
    [listed] = as_json("batches")
    assert listed["ready"] == printer_column("datasweep.io_batches.yaml", "Ready", batch) == 0
    assert (listed["points"], listed["reused"]) == (1, 1)
    row = next(line for line in table("batches").splitlines() if line.startswith("batch-20241230-topp"))
    assert row.split()[-4:] == ["1", "1", "1", "0"]  # EXPERIMENTS POINTS REUSED READY
    batch["status"]["counts"]["ready"] = 1
    assert as_json("batches")[0]["ready"] == printer_column("datasweep.io_batches.yaml", "Ready", batch) == 1

    # No status yet: a point is done when its data and every training stage on it in this batch are Ready.
    del batch["status"]["counts"]
    data = fake_api.objects["artifacts"][1]
    training = {
        "metadata": {"name": "copa-temp07-fomaml-cccccccccccc", "labels": dict(data["metadata"]["labels"])},
        "spec": {"stage": "fomaml", "dataset": "Copa", "fingerprint": "c" * 64, "inputs": [data["metadata"]["name"]]},
        "status": {"phase": "Running"},
    }
    fake_api.objects["artifacts"].append(training)
    assert as_json("batches")[0]["ready"] == 0
    assert "  no" in table("batch", BATCH_B)  # the point's READY
    training["status"]["phase"] = "Ready"
    assert as_json("batches")[0]["ready"] == 1
