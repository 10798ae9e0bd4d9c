"""The check before reuse on the cluster (issue 25 item 4): a Ready Artifact whose file was deleted on the volume
is not reused by the next Experiment; it is marked Damaged, its files are kept aside for gc, and it is produced
again. kwok runs no worker, so the test writes what the worker would (its files and manifest) on the volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME, write_manifest
from tests.e2e.operator_harness import apply, condition, experiment, get, running_operator, wait_for


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
