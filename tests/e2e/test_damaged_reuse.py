"""The check before reuse on the cluster (issue 25 item 4): a Ready Artifact whose file was deleted on the volume
is not reused by the next Experiment; it is marked Damaged, its files are kept aside for gc, and it is produced
again. Under kwok no worker runs, so the first test writes what the worker would (its files and manifest) on the
volume; the second runs the real workers in pods (real node)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME, read_manifest, write_manifest
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, running_operator, wait_for
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, with_server


def succeeded(control_plane: Any, namespace: str, name: str) -> Any:
    obj = get(control_plane, namespace, "experiment", name)
    return obj if condition(obj, "Succeeded").get("status") == "True" else None


def test_a_ready_artifact_with_a_deleted_file_is_produced_again(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    point = {"temperature": 0.7, "topP": 1.0}
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, experiment("first", batch="batch_20250101_first", generation=point))
        wait_for("first done", lambda: succeeded(control_plane, ns, "first"))
        (artifact,) = get(control_plane, ns, "artifacts")["items"]
        name, path = artifact["metadata"]["name"], artifact["spec"]["storage"]["path"]
        assert artifact["status"]["attempts"] == 1
        # what the worker writes (kwok ran none), then a file lost on the volume
        directory = data_root / path
        (directory / "Copa").mkdir(parents=True)
        (directory / "Copa" / "copa_train.jsonl").write_text('{"id": 1, "premise": "rephrased"}\n')
        (directory / FINGERPRINT_NAME).write_text(artifact["spec"]["fingerprint"] + "\n")
        write_manifest(directory, fingerprint=artifact["spec"]["fingerprint"], stage="generate")
        (directory / "Copa" / "copa_train.jsonl").unlink()

        apply(control_plane, ns, experiment("second", batch="batch_20250102_second", generation=point))
        replaced = wait_for(
            "the damaged Artifact produced again",
            lambda: (
                a
                if (a := get(control_plane, ns, "artifact", name))["status"].get("phase") == "Ready"
                and condition(a, "Damaged").get("reason") == "Replaced"
                else None
            ),
        )
        wait_for("second done", lambda: succeeded(control_plane, ns, "second"))
    assert replaced["status"]["attempts"] == 2
    assert condition(replaced, "Damaged")["status"] == "False"
    jobs = get(control_plane, ns, "jobs", selector=f"datasweep.io/artifact={name}")["items"]
    assert len(jobs) == 2  # the first attempt's Job and the replacement's
    events = get(control_plane, ns, "events")["items"]
    damaged = [e for e in events if e.get("reason") == "Damaged" and e["involvedObject"]["name"] == name]
    assert len(damaged) == 1
    assert "missing file Copa/copa_train.jsonl: not reused, produced again (attempt 2)" in damaged[0]["message"]
    aside = directory.parent / f".{directory.name}.damaged-1"
    assert (aside / MANIFEST_NAME).is_file()  # the damaged files, kept for gc
    assert sorted(p.name for p in directory.iterdir()) == [FINGERPRINT_NAME]  # the claim: the replacement's


@pytest.mark.realnode
def test_on_the_real_node_the_damaged_point_is_produced_again_by_a_pod_and_the_intact_one_reused(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    grid = {"temperature": [0.5, 0.7], "topP": 1.0}
    first = with_server(experiment("first", batch="batch_20250101_first", generation=grid), openai_server)
    second = with_server(experiment("second", batch="batch_20250102_second", generation=grid), openai_server)
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, first)
        done = wait_for("first finished", lambda: finished(control_plane, ns, "first"), POD_TIMEOUT)
        assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
        by_temperature = {a["spec"]["semanticName"][:6]: a for a in get(control_plane, ns, "artifacts")["items"]}
        damaged, intact = by_temperature["temp05"], by_temperature["temp07"]
        lost = data_root / damaged["spec"]["storage"]["path"] / "Copa" / "copa_train.jsonl"
        lost.unlink()  # a file of a Ready Artifact the worker wrote, gone from the volume

        apply(control_plane, ns, second)
        done = wait_for("second finished", lambda: finished(control_plane, ns, "second"), POD_TIMEOUT)
        assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    replaced = get(control_plane, ns, "artifact", damaged["metadata"]["name"])
    assert replaced["status"]["attempts"] == 2
    assert condition(replaced, "Damaged")["reason"] == "Replaced"
    assert lost.is_file()  # written again, by the replacement's pod
    assert lost.stat().st_uid == 10001
    manifest = read_manifest(lost.parent.parent)
    assert manifest is not None
    assert replaced["status"]["manifest"]["sha256"] == manifest.summary().sha256
    aside = lost.parent.parent.parent / f".{lost.parent.parent.name}.damaged-1"
    assert (aside / MANIFEST_NAME).is_file()
    assert not (aside / "Copa" / "copa_train.jsonl").exists()
    reused = get(control_plane, ns, "artifact", intact["metadata"]["name"])
    assert reused["status"]["attempts"] == 1  # a worker's own manifest passes the check: reused as it was
    assert condition(reused, "Damaged") == {}
