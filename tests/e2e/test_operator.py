"""The operator on the real control plane (kwok completes the Jobs): SPEC section 4, issue 3."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

from datasweep.k8s.labels import consumers_of
from tests.e2e.operator_harness import (
    apply,
    condition,
    experiment,
    get,
    running_operator,
    seed_experiments,
    wait_for,
)


def succeeded(control_plane: Any, namespace: str, name: str, points: int) -> Any:
    obj = get(control_plane, namespace, "experiment", name)
    counts = (obj.get("status") or {}).get("counts", {})
    return obj if counts.get("succeeded") == points and condition(obj, "Succeeded").get("status") == "True" else None


def test_seed_scenario_reuses_the_shared_point(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    experiment_a, experiment_b = seed_experiments()
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, experiment_a)
        wait_for("experiment A done", lambda: succeeded(control_plane, ns, "copa-temperature", 3))
        apply(control_plane, ns, experiment_b)
        b = wait_for("experiment B done", lambda: succeeded(control_plane, ns, "copa-topp", 3))
        batches = wait_for(
            "both batches counted",
            lambda: (
                items
                if len(items := get(control_plane, ns, "batches")["items"]) == 2
                and all(i.get("status", {}).get("counts", {}).get("ready") == 3 for i in items)
                else None
            ),
        )
    artifacts = get(control_plane, ns, "artifacts")["items"]
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    assert len(artifacts) == 5
    assert len(jobs) == 5
    assert all(a["status"]["phase"] == "Ready" for a in artifacts)

    assert b["status"]["counts"]["reused"] == 1
    assert b["status"]["counts"]["created"] == 2
    assert "points" not in b["status"]  # bounded status: the points are the labelled Artifacts
    of_b = get(control_plane, ns, "artifacts", selector="exp.datasweep.io/copa-topp")["items"]
    assert len(of_b) == 3
    in_batch = get(control_plane, ns, "artifacts", selector="batch.datasweep.io/batch-20241230-topp")["items"]
    assert sorted(a["metadata"]["name"] for a in in_batch) == sorted(a["metadata"]["name"] for a in of_b)
    reused_artifact = next(
        a for a in of_b if a["metadata"]["annotations"]["datasweep.io/first-experiment"] != "copa-topp"
    )
    assert reused_artifact["spec"]["semanticName"] == "temp07_topp10_gpt4o"
    assert consumers_of(reused_artifact["metadata"], reused_artifact["status"]) == ["copa-temperature", "copa-topp"]
    assert reused_artifact["status"]["firstBatch"] == "batch_20241229_temperature"

    by_id = {b_["spec"]["batchId"]: b_["status"]["counts"] for b_ in batches}
    assert by_id["batch_20241229_temperature"] == {
        "experiments": 1,
        "points": 3,
        "reused": 0,
        "created": 3,
        "ready": 3,
        "failed": 0,
    }
    assert by_id["batch_20241230_topp"]["reused"] == 1

    # The layout: one shared directory per fingerprint, relative symlinks per batch.
    assert sorted(p.name for p in (data_root / "_shared" / "Copa").iterdir()) == [
        "temp05_topp10_gpt4o",
        "temp07_topp08_gpt4o",
        "temp07_topp09_gpt4o",
        "temp07_topp10_gpt4o",
        "temp09_topp10_gpt4o",
    ]
    link = data_root / "batch_20241230_topp" / "Copa" / "temp07_topp10_gpt4o"
    assert link.is_symlink()
    assert str(link.readlink()) == "../../_shared/Copa/temp07_topp10_gpt4o"

    table = control_plane.kubectl("get", "batches", "-n", ns).stdout
    assert "batch-20241229-temperature" in table
    # Every kubectl table names a Batch as `kubectl get bat NAME` takes it: the object name, not the id.
    experiments = control_plane.kubectl("get", "exp", "copa-topp", "-n", ns, "--no-headers").stdout.split()
    assert experiments[1] == "batch-20241230-topp", experiments
    control_plane.kubectl("get", "bat", experiments[1], "-n", ns)  # found (check=True)
    first_batches = control_plane.kubectl(
        "get", "art", "-n", ns, "-o", "custom-columns=FIRST:.status.firstBatchName", "--no-headers"
    ).stdout.split()
    assert set(first_batches) <= {"batch-20241229-temperature", "batch-20241230-topp"}, first_batches
    assert len(first_batches) == 5
    listing = control_plane.kubectl("get", "datasweep", "-n", ns).stdout
    assert "experiment.datasweep.io/copa-topp" in listing
    assert "artifact.datasweep.io/" in listing


def test_training_stage_requests_gpus_and_completes(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    with running_operator(ns, data_root, tmp_path):
        apply(
            control_plane,
            ns,
            experiment(
                "meta",
                purpose="meta",
                training=[
                    {
                        "name": "meta",
                        "kind": "fomaml",
                        "baseModel": {"path": "models/tiny"},
                        "params": {
                            "task_key": "label",
                            "prompt_template": "{premise}",
                            "response_template": " {label}",
                        },
                        "resources": {"gpus": 4, "cpu": "8", "memory": "64Gi"},
                    }
                ],
            ),
        )
        done = wait_for("training done", lambda: succeeded(control_plane, ns, "meta", 1))
    assert condition(done, "Trained")["status"] == "True"
    training_jobs = get(control_plane, ns, "jobs", selector="datasweep.io/stage=fomaml")["items"]
    assert len(training_jobs) == 1
    container = training_jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["command"][0] == "torchrun"
    assert training_jobs[0]["status"]["succeeded"] == 1
    pods = get(control_plane, ns, "pods", selector=f"job-name={training_jobs[0]['metadata']['name']}")["items"]
    nodes = get(control_plane, "default", "nodes")["items"]
    gpu_nodes = {n["metadata"]["name"] for n in nodes if "nvidia.com/gpu" in n["status"].get("allocatable", {})}
    assert pods[0]["spec"]["nodeName"] in gpu_nodes


def test_concurrent_experiments_make_one_artifact_and_one_job_per_fingerprint(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    temperatures = [0.1, 0.3, 0.5, 0.7]
    grids = [[temperatures[i % 4], temperatures[(i + 1) % 4]] for i in range(10)]
    with running_operator(ns, data_root, tmp_path):
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            list(
                pool.map(
                    lambda item: apply(
                        control_plane,
                        ns,
                        experiment(f"overlap-{item[0]}", purpose="overlap", generation={"temperature": item[1]}),
                    ),
                    enumerate(grids),
                )
            )
        for index in range(10):
            wait_for(
                f"overlap-{index}", lambda index=index: succeeded(control_plane, ns, f"overlap-{index}", 2), timeout=240
            )
    artifacts = get(control_plane, ns, "artifacts")["items"]
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    assert len(artifacts) == 4
    assert len(jobs) == 4
    fingerprints = [a["spec"]["fingerprint"] for a in artifacts]
    assert len(set(fingerprints)) == 4
    consumers = sorted(c for a in artifacts for c in consumers_of(a["metadata"], a.get("status") or {}))
    assert consumers == sorted(f"overlap-{i}" for i in range(10) for _ in range(2))


def test_failed_job_fails_the_experiment_and_the_retry_annotation_recovers(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    failing = {"jobDefaults": {"podAnnotations": {"datasweep.io/kwok-fail": "true"}}}
    with running_operator(ns, data_root, tmp_path, **failing):
        apply(control_plane, ns, experiment("doomed", purpose="doomed", retries=1))
        failed = wait_for(
            "experiment failed",
            lambda: (
                obj
                if condition(obj := get(control_plane, ns, "experiment", "doomed"), "Failed").get("status") == "True"
                else None
            ),
        )
    assert condition(failed, "Failed")["reason"] == "ArtifactFailed"
    assert "JobFailed" in condition(failed, "Failed")["message"]
    assert condition(failed, "Succeeded")["status"] == "False"
    artifact = get(control_plane, ns, "artifacts")["items"][0]
    assert artifact["status"]["phase"] == "Failed"
    assert artifact["status"]["attempts"] == 2  # the first try and one retry
    events = control_plane.kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=JobFailed", "-o", "name"
    ).stdout
    assert events.strip()

    with running_operator(ns, data_root, tmp_path):  # the cause is fixed; a person asks for a retry
        name = artifact["metadata"]["name"]
        control_plane.kubectl("annotate", "artifact", name, "-n", ns, "datasweep.io/retry=1")
        wait_for("experiment recovered", lambda: succeeded(control_plane, ns, "doomed", 1))
    assert get(control_plane, ns, "artifact", name)["status"]["attempts"] == 3


def test_deleting_experiments_and_batches_keeps_artifacts_and_data(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, experiment("short-lived", purpose="ephemeral"))
        wait_for("done", lambda: succeeded(control_plane, ns, "short-lived", 1))
        control_plane.kubectl("delete", "experiment", "short-lived", "-n", ns, "--wait=true")
        control_plane.kubectl("delete", "batches", "--all", "-n", ns, "--wait=true")
    artifacts = get(control_plane, ns, "artifacts")["items"]
    assert len(artifacts) == 1
    assert artifacts[0]["status"]["phase"] == "Ready"
    assert not artifacts[0]["metadata"].get("ownerReferences")
    assert (data_root / artifacts[0]["spec"]["storage"]["path"] / ".fingerprint").is_file()


def test_operator_restart_mid_sweep_creates_no_duplicate_job(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    sweep = experiment("restart", purpose="restart", parallelism=1, generation={"temperature": [0.2, 0.4, 0.6, 0.8]})
    slow_pods = {"jobDefaults": {"podAnnotations": {"datasweep.io/kwok-duration": "4s"}}}
    with running_operator(ns, data_root, tmp_path, **slow_pods):
        apply(control_plane, ns, sweep)
        wait_for("a first Job", lambda: get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"])
        time.sleep(1)  # the other three handlers have run by now, and must have waited
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    assert len(jobs) == 1, "parallelism 1 allows one Job at a time"
    # The operator is gone mid-sweep; a new process picks up where it stopped.
    with running_operator(ns, data_root, tmp_path, **slow_pods):
        done = wait_for("sweep done", lambda: succeeded(control_plane, ns, "restart", 4), timeout=240)
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    assert len(jobs) == 4
    assert sorted({j["metadata"]["labels"]["datasweep.io/artifact"] for j in jobs}) == sorted(
        a["metadata"]["name"] for a in get(control_plane, ns, "artifacts", selector="exp.datasweep.io/restart")["items"]
    )
    assert done["status"]["counts"] == {
        "points": 4,
        "artifacts": 4,
        "reused": 0,
        "created": 4,
        "pending": 0,
        "running": 0,
        "succeeded": 4,
        "failed": 0,
    }
