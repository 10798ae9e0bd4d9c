"""The Jobs datasweep creates: labels, GPUs, Indexed Jobs for several nodes, secrets by reference, non-root."""

from __future__ import annotations

import subprocess
from datetime import datetime
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment
from datasweep.k8s import builders, labels


def stages(resources: dict[str, Any] | None = None) -> tuple[StagePlan, StagePlan]:
    spec = ExperimentSpec.model_validate(
        {
            "purpose": "p",
            "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
            "generation": {"apiKeySecret": {"name": "openai"}},
            "training": [
                {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "resources": resources or {"gpus": 4}}
            ],
        }
    )
    plan = plan_experiment(spec, PlanInputs({"Copa": "0" * 64}, created=datetime(2024, 12, 29)))
    return plan.points[0].generate, plan.points[0].training[0]


def job_for(stage: StagePlan, worker: dict[str, Any] | None = None, queue: str | None = None) -> dict[str, Any]:
    settings = OperatorSettings()
    artifact = builders.artifact_body(
        stage,
        storage_path="_shared/Copa/x",
        settings=settings,
        experiment="e",
        batch="batch_20241229_p",
        retries=2,
        parallelism=4,
        queue_name=queue,
        worker=worker or {},
    )
    return builders.worker_job(artifact, attempt=1, settings=settings, queue_name=queue)


def test_generate_job_reads_the_key_through_a_secret_reference() -> None:
    generate, _ = stages()
    job = job_for(generate, {"apiKeySecret": {"name": "openai", "key": "api-key"}}, queue="team-a")
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["name"].endswith("-r1")
    assert meta["labels"][labels.ARTIFACT] == generate.artifact
    assert meta["labels"][labels.FINGERPRINT] == generate.fingerprint[:12]
    assert meta["labels"][labels.STAGE] == "generate"
    assert meta["labels"][labels.KUEUE_QUEUE] == "team-a"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    container = pod["containers"][0]
    assert container["command"] == ["datasweep", "worker", "generate", "--spec", "/spec/worker.yaml"]
    key = next(e for e in container["env"] if e["name"] == "OPENAI_API_KEY")
    assert key == {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}
    assert "sk-" not in yaml.safe_dump(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "nvidia.com/gpu" not in str(container["resources"])


def test_the_worker_spec_is_the_pods_annotation_mounted_by_the_downward_api() -> None:
    """No ConfigMap per Artifact: the file the command names is the pod's own annotation."""
    generate, _ = stages()
    job = job_for(generate, {"workerSpec": "stage: generate\nfingerprint: abc\n"})
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert pod["metadata"]["annotations"][labels.WORKER_SPEC] == "stage: generate\nfingerprint: abc\n"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "spec")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "spec")
    (item,) = volume["downwardAPI"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == container["command"][-1]
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{labels.WORKER_SPEC}']"


def test_training_job_requests_gpus_and_tolerates_gpu_nodes() -> None:
    _, training = stages({"gpus": 4})
    job = job_for(training)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["command"][:3] == ["torchrun", "--nnodes=1", "--nproc-per-node=4"]
    assert job["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "completionMode" not in job["spec"]


def test_multi_node_training_is_an_indexed_job_whose_pods_rendezvous_at_pod_0() -> None:
    _, training = stages({"gpus": 8, "nodes": 2})
    job = job_for(training)
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    service = builders.headless_service(job)
    assert service["metadata"]["name"] == name  # exact and repeatable: a second launch reuses it (409)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # pods are not Ready while they rendezvous
    assert service["spec"]["selector"] == {"job-name": name}
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]  # gives pod i the DNS name <job>-i.<service>
    container = pod["containers"][0]
    # pod 0 (and only pod 0) hosts the rendezvous store, whatever DNS answers when it starts
    for index, is_host in (("0", "1"), ("1", "0")):
        script, argv0 = container["command"][2:4]
        shell = subprocess.run(
            ["sh", "-c", script.replace("exec torchrun", "echo"), argv0, "x"],
            env={"JOB_COMPLETION_INDEX": index},
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout.split() == [f"--rdzv-conf=is_host={is_host}", "x"]
    assert container["command"][:2] == ["sh", "-c"]
    assert container["command"][3:9] == [
        "torchrun",
        "--nnodes=2",
        "--nproc-per-node=8",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={name}-0.{name}:{builders.RENDEZVOUS_PORT}",
        f"--rdzv-id={name}",
    ]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in container["command"]
    assert "--local-addr=$(POD_IP)" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert {key: env[key]["value"] for key in builders.DISTRIBUTED_ENV} == builders.DISTRIBUTED_ENV
    assert service["spec"]["ports"][0]["port"] == builders.RENDEZVOUS_PORT


def test_several_gpus_in_a_pod_get_a_memory_backed_dev_shm_sized_by_the_setting() -> None:
    _, training = stages({"gpus": 4})
    job = job_for(training)
    pod = job["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    container = pod["containers"][0]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NCCL_DEBUG"] == "WARN"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert "POD_IP" not in env  # one node: torchrun's local rendezvous needs no address

    sized = OperatorSettings.model_validate({"jobDefaults": {"sharedMemorySize": "64Gi"}})
    artifact = builders.artifact_body(
        training,
        storage_path="x",
        settings=sized,
        experiment="e",
        batch="b",
        retries=0,
        parallelism=1,
        queue_name=None,
        worker={},
    )
    volumes = builders.worker_job(artifact, attempt=0, settings=sized, queue_name=None)["spec"]["template"]["spec"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in volumes["volumes"]
    off = OperatorSettings.model_validate({"jobDefaults": {"sharedMemorySize": None}})
    pod_off = builders.worker_job(artifact, attempt=0, settings=off, queue_name=None)["spec"]["template"]["spec"]
    assert all(v["name"] != "shm" for v in pod_off["volumes"])


def test_one_gpu_or_none_keeps_the_runtimes_dev_shm_and_no_nccl_settings() -> None:
    generate, _ = stages()
    for stage in (generate, stages({"gpus": 1})[1]):
        pod = job_for(stage)["spec"]["template"]["spec"]
        assert all(v["name"] != "shm" for v in pod["volumes"])
        assert all(not e["name"].startswith(("NCCL_", "TORCH_NCCL_")) for e in pod["containers"][0]["env"])


def test_a_bad_shared_memory_size_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match=r"sharedMemorySize|shared_memory_size"):
        OperatorSettings.model_validate({"jobDefaults": {"sharedMemorySize": "lots"}})


def test_bad_input_fails_the_job_at_once_and_a_disrupted_pod_is_replaced() -> None:
    """Exit code 2 (the workers' bad input) ends the Job (reason PodFailurePolicy), which the operator does not
    retry (core/recovery.py); an evicted or preempted pod does not count as a failure. The pods carry the
    Artifact's label: the operator watches them with that label as a server-side selector."""
    generate, training = stages()
    for stage in (generate, training):
        job = job_for(stage)
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0] == {
            "action": "FailJob",
            "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [2]},
        }
        assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        assert job["spec"]["template"]["metadata"]["labels"][labels.ARTIFACT] == stage.artifact
