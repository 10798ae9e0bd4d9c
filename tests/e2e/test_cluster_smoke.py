"""The test control plane is a real Kubernetes: scheduling, Jobs, kwok lifecycles, CEL rules, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane import ControlPlane, process_running

pytestmark = pytest.mark.e2e

GPU_NODES = {"kwok-gpu-0", "kwok-gpu-1"}
CONTROLPLANE_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "controlplane.py"


def job_manifest(name: str, gpus: int = 0, annotations: dict[str, str] | None = None, backoff_limit: int = 0) -> str:
    container: dict[str, Any] = {"name": "worker", "image": "datasweep/worker:test", "command": ["true"]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
    return json.dumps(job)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll until condition() returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.3)


def job_pods(cp: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def wait_job_condition(cp: ControlPlane, namespace: str, job: str, condition: str) -> None:
    cp.kubectl("wait", "-n", namespace, f"--for=condition={condition}", f"job/{job}", "--timeout=90s")


def test_one_gpu_job_runs_on_a_gpu_node_and_completes(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest("one-gpu", gpus=1))
    wait_job_condition(control_plane, namespace, "one-gpu", "Complete")
    (pod,) = job_pods(control_plane, namespace, "one-gpu")
    assert pod["spec"]["nodeName"] in GPU_NODES
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_job_wanting_more_gpus_than_any_node_stays_unschedulable(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest("nine-gpus", gpus=9))

    def unschedulable_condition() -> dict[str, Any] | None:
        for pod in job_pods(control_plane, namespace, "nine-gpus"):
            for cond in pod.get("status", {}).get("conditions", []):
                if cond["type"] == "PodScheduled" and cond["status"] == "False":
                    return dict(cond)
        return None

    cond = wait_for(unschedulable_condition, "the 9-GPU pod's PodScheduled=False condition")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"]
    (pod,) = job_pods(control_plane, namespace, "nine-gpus")
    assert not pod["spec"].get("nodeName")


def test_pod_annotated_to_fail_fails_its_job(control_plane: ControlPlane, namespace: str) -> None:
    manifest = job_manifest("doomed", gpus=1, annotations={"datasweep.io/kwok-fail": "true"})
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    wait_job_condition(control_plane, namespace, "doomed", "Failed")
    (pod,) = job_pods(control_plane, namespace, "doomed")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_termination_message_annotation_arrives_in_pod_status(control_plane: ControlPlane, namespace: str) -> None:
    message = json.dumps({"artifact": "gen-abc", "fingerprint": "f" * 64, "usage": {"requests": 3}})
    manifest = job_manifest("reporter", annotations={"datasweep.io/kwok-termination-message": message})
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    wait_job_condition(control_plane, namespace, "reporter", "Complete")
    (pod,) = job_pods(control_plane, namespace, "reporter")
    assert pod["spec"]["nodeName"] == "kwok-cpu-0"  # no GPU asked for: the GPU nodes' taint keeps it off them
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["message"] == message
    assert json.loads(terminated["message"])["usage"] == {"requests": 3}


def test_pvc_is_provisioned_and_a_job_mounting_it_completes(control_plane: ControlPlane, namespace: str) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "artifacts"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pvc))
    job = json.loads(job_manifest("mounts-pvc"))
    pod_spec = job["spec"]["template"]["spec"]
    pod_spec["volumes"] = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}]
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "artifacts", "mountPath": "/artifacts"}]
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
    wait_job_condition(control_plane, namespace, "mounts-pvc", "Complete")
    claim = json.loads(control_plane.kubectl("get", "pvc", "artifacts", "-n", namespace, "-o", "json").stdout)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "kwok-volume"


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.datasweep.io"},
    "spec": {
        "group": "smoke.datasweep.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "spec.min must not exceed spec.max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, low: int, high: int) -> str:
    return json.dumps(
        {
            "apiVersion": "smoke.datasweep.io/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"min": low, "max": high},
        }
    )


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    try:
        control_plane.kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.datasweep.io", "--timeout=60s")
        # Discovery may lag the Established condition by a moment.
        wait_for(
            lambda: (
                control_plane.kubectl(
                    "apply", "-n", namespace, "-f", "-", input=widget("good", 1, 2), check=False
                ).returncode
                == 0
            ),
            "a valid Widget to be accepted",
            timeout=60,
        )
        bad = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=widget("bad", 3, 2), check=False)
        assert bad.returncode != 0
        assert "spec.min must not exceed spec.max" in bad.stderr
        missing = control_plane.kubectl("get", "widget", "bad", "-n", namespace, check=False)
        assert missing.returncode != 0
    finally:
        control_plane.kubectl("delete", "crd", "widgets.smoke.datasweep.io", "--wait=false", check=False)


def _run_controlplane(*args: str) -> subprocess.CompletedProcess[str]:
    # kwok only: these check the process lifecycle; test_real_node.py checks the real node's clean stop.
    return subprocess.run(
        [sys.executable, str(CONTROLPLANE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATASWEEP_REAL_NODE": "0"},
    )


def _start_background_cluster(state_dir: Path) -> dict[str, Any]:
    result = _run_controlplane("up", "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    state: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    assert all(process_running(pid) for pid in [state["supervisor"], *state["pids"]])
    return state


def test_cluster_down_leaves_no_processes(tmp_path: Path) -> None:
    state_dir = tmp_path / "cluster"
    up = _run_controlplane("up", "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stdout + up.stderr
    # every hint names this cluster: without --state-dir it would point at the default one
    for verb in ("env", "status", "down"):
        assert f"python hack/controlplane.py {verb} --state-dir {state_dir}" in up.stdout, up.stdout
    state: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
    assert all(process_running(pid) for pid in [state["supervisor"], *state["pids"]])
    kubeconfig = Path(state["kubeconfig"])
    plane = ControlPlane.attach(kubeconfig)
    assert plane.kubectl("get", "nodes", "-o", "name").stdout.split() == [
        "node/kwok-cpu-0",
        "node/kwok-gpu-0",
        "node/kwok-gpu-1",
    ]
    result = _run_controlplane("down", "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr
    assert "killed" not in result.stdout, result.stdout  # the supervisor stopped everything itself
    alive = [pid for pid in [state["supervisor"], *state["pids"]] if process_running(pid)]
    assert alive == []
    assert "all processes stopped in" in (state_dir / "supervisor.log").read_text()


def test_crash_of_the_owner_leaves_no_processes(tmp_path: Path) -> None:
    state = _start_background_cluster(tmp_path / "cluster")
    os.kill(state["supervisor"], signal.SIGKILL)  # no chance to clean up: the watchdog must do it
    wait_for(
        lambda: not any(process_running(pid) for pid in state["pids"]),
        f"the cluster's processes {state['pids']} to end after their owner was killed",
        timeout=60,
    )
    assert _run_controlplane("down", "--state-dir", str(tmp_path / "cluster")).returncode == 0
