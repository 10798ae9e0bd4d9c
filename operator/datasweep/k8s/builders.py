"""Pure builders of the Kubernetes objects datasweep creates: dicts in, dicts out, no I/O."""

from __future__ import annotations

from typing import Any

from datasweep import API_VERSION
from datasweep.api.settings import OperatorSettings
from datasweep.core import naming
from datasweep.core.fingerprint import short
from datasweep.core.plan import StagePlan
from datasweep.core.recovery import EXIT_BAD_INPUT
from datasweep.k8s import labels

DATA_MOUNT = "/data"
SPEC_MOUNT = "/spec"
SPEC_KEY = "worker.yaml"
_SPEC_FIELD = f"metadata.annotations['{labels.WORKER_SPEC}']"
RUN_AS_USER = 10001


def artifact_body(
    stage: StagePlan,
    *,
    storage_path: str,
    settings: OperatorSettings,
    experiment: str,
    batch: str,
    retries: int,
    parallelism: int,
    queue_name: str | None,
    worker: dict[str, Any],
) -> dict[str, Any]:
    """The Artifact of one stage at one fingerprint; the first experiment and batch are fixed at creation."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Artifact",
        "metadata": {
            "name": stage.artifact,
            "labels": {
                labels.STAGE: stage.stage,
                labels.DATASET: naming.dns_name(stage.dataset),
                labels.FINGERPRINT: short(stage.fingerprint),
                labels.MANAGED_BY: "datasweep",
            },
            "annotations": {
                labels.FULL_FINGERPRINT: stage.fingerprint,
                labels.FIRST_BATCH: batch,
                labels.FIRST_EXPERIMENT: experiment,
                labels.PARALLELISM: str(parallelism),
                **({labels.QUEUE: queue_name} if queue_name else {}),
            },
        },
        "spec": {
            "stage": stage.stage,
            "dataset": stage.dataset,
            "fingerprint": stage.fingerprint,
            "semanticName": stage.semantic_name,
            "params": stage.params,
            "canonical": stage.canonical,
            "inputs": list(stage.inputs),
            "storage": {"claimName": settings.data_claim_name, "path": storage_path},
            # The worker image has no torch: every training stage runs in the trainer image, on CPU or GPU.
            "image": settings.images.worker if stage.stage == "generate" else settings.images.trainer,
            "resources": stage.resources.model_dump(by_alias=True, exclude_none=True),
            "retries": retries,
            "worker": worker,
        },
    }


def batch_body(batch_id: str, purpose: str, description: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Batch",
        "metadata": {"name": naming.batch_object_name(batch_id), "labels": {labels.MANAGED_BY: "datasweep"}},
        "spec": {"batchId": batch_id, "purpose": purpose, "description": description},
    }


def _job_labels(artifact: dict[str, Any], queue_name: str | None) -> dict[str, str]:
    spec = artifact["spec"]
    out = {
        labels.ARTIFACT: artifact["metadata"]["name"],
        labels.FINGERPRINT: short(spec["fingerprint"]),
        labels.STAGE: spec["stage"],
        labels.MANAGED_BY: "datasweep",
    }
    if queue_name:
        out[labels.KUEUE_QUEUE] = queue_name
    return out


RENDEZVOUS_PORT = 29500
SHM_MOUNT = "/dev/shm"
# Jobs that run torchrun. NCCL_DEBUG=WARN puts the reason of a failed collective in the pod's log; with
# TORCH_NCCL_ASYNC_ERROR_HANDLING=1 a failed or timed-out collective ends the process (a hung rank would hold
# its GPUs until activeDeadlineSeconds). No transport tuning: NCCL picks it per cluster.
DISTRIBUTED_ENV = {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}


# Pod 0 hosts the c10d store, said explicitly: torchrun's own guess compares the endpoint's DNS answer with the
# pod's address, and a pod that starts before its name is in cluster DNS would guess "not me" and wait for itself.
_HOST_ON_POD_0 = (
    'if [ "$JOB_COMPLETION_INDEX" = 0 ]; then host=1; else host=0; fi; exec torchrun --rdzv-conf=is_host=$host "$@"'
)


def _command(stage: str, gpus: int, nodes: int, job: str, service: str | None) -> list[str]:
    if nodes > 1 or gpus > 1:
        module = "datasweep.workloads." + stage.replace("-", "_")
        launcher = ["torchrun"]
        rendezvous: list[str] = []
        if nodes > 1 and service:
            # c10d: pod 0's torchrun hosts the rendezvous store at its stable name (<job>-0.<service>, the headless
            # Service's DNS record); the workers' process group then meets at the address each agent gives
            # (--local-addr, the pod's IP: no name of a pod but pod 0's has to resolve). --node-rank is what a
            # static rendezvous would use; c10d assigns ranks itself.
            launcher = ["sh", "-c", _HOST_ON_POD_0, "torchrun"]
            rendezvous = [
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={job}-0.{service}:{RENDEZVOUS_PORT}",
                f"--rdzv-id={job}",
                "--node-rank=$(JOB_COMPLETION_INDEX)",
                "--local-addr=$(POD_IP)",
            ]
        return [
            *launcher,
            f"--nnodes={nodes}",
            f"--nproc-per-node={max(gpus, 1)}",
            *rendezvous,
            "-m",
            module,
            "--spec",
            f"{SPEC_MOUNT}/{SPEC_KEY}",
        ]
    return ["datasweep", "worker", stage, "--spec", f"{SPEC_MOUNT}/{SPEC_KEY}"]


def _volumes(artifact: dict[str, Any], settings: OperatorSettings) -> tuple[list[Any], list[Any]]:
    worker = artifact["spec"].get("worker", {})
    volumes: list[dict[str, Any]] = [
        {
            "name": "data",
            "persistentVolumeClaim": {
                "claimName": artifact["spec"]["storage"].get("claimName") or settings.data_claim_name
            },
        },
        # The worker spec is the pod's own annotation, as a file (downward API): no ConfigMap per Artifact,
        # one write fewer per point of a fan-out (docs/scale.md), and nothing to clean up.
        {
            "name": "spec",
            "downwardAPI": {
                "items": [
                    {"path": SPEC_KEY, "fieldRef": {"fieldPath": f"metadata.annotations['{labels.WORKER_SPEC}']"}}
                ]
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": DATA_MOUNT},
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    shm_size = settings.job_defaults.shared_memory_size
    if int(artifact["spec"].get("resources", {}).get("gpus", 0)) > 1 and shm_size is not None:
        # Several GPUs in one pod: NCCL moves data between its ranks through /dev/shm, which the container
        # runtime makes 64Mi; a memory-backed emptyDir (counted against the memory limit) replaces it.
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm_size)}})
        mounts.append({"name": "shm", "mountPath": SHM_MOUNT})
    for index, extra in enumerate(worker.get("volumes", [])):
        name = f"extra-{index}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": extra["claimName"], "readOnly": True}})
        mounts.append({"name": name, "mountPath": extra["mountPath"], "readOnly": True})
    return volumes, mounts


def worker_job(
    artifact: dict[str, Any],
    *,
    attempt: int,
    settings: OperatorSettings,
    queue_name: str | None,
) -> dict[str, Any]:
    """The Job that produces an Artifact: deterministic name, labels, limits, non-root, secrets by reference."""
    spec = artifact["spec"]
    resources = spec.get("resources", {})
    gpus, nodes = int(resources.get("gpus", 0)), int(resources.get("nodes", 1))
    name = naming.job_name(artifact["metadata"]["name"], attempt)
    service = name if nodes > 1 else None
    defaults = settings.job_defaults
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.get("cpu") is not None:  # a quantity may be written as a number (cpu: 8)
        requests["cpu"] = str(resources["cpu"])
    if resources.get("memory") is not None:
        requests["memory"] = limits["memory"] = str(resources["memory"])
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "DATASWEEP_TERMINATION_LOG", "value": "/dev/termination-log"},
    ]
    if gpus > 1 or nodes > 1:
        env += [{"name": key, "value": value} for key, value in DISTRIBUTED_ENV.items()]
    if nodes > 1:
        env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    secret = spec.get("worker", {}).get("apiKeySecret")
    if secret:
        env.append(
            {
                "name": spec["worker"].get("apiKeyEnv", "OPENAI_API_KEY"),
                "valueFrom": {"secretKeyRef": {"name": secret["name"], "key": secret.get("key", "api-key")}},
            }
        )
    volumes, mounts = _volumes(artifact, settings)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": defaults.service_account_name,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "worker",
                "image": spec.get("image") or settings.images.worker,
                "imagePullPolicy": settings.images.pull_policy,
                "command": _command(spec["stage"], gpus, nodes, name, service),
                "env": env,
                "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
                "volumeMounts": mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": volumes,
        "nodeSelector": {**defaults.node_selector, **(defaults.gpu_node_selector if gpus else {})},
        "tolerations": [*defaults.tolerations, *(defaults.gpu_tolerations if gpus else [])],
    }
    if settings.images.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.images.pull_secrets]
    if defaults.priority_class_name:
        pod_spec["priorityClassName"] = defaults.priority_class_name
    if service:
        pod_spec["subdomain"] = service
    job_labels = _job_labels(artifact, queue_name)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # the operator retries with backoff (spec.retries), each attempt a new Job
        # Bad input (the workers' exit code 2) fails the Job at once, reason PodFailurePolicy, and the operator does
        # not retry it (core/recovery.py); a pod evicted or preempted (DisruptionTarget) is replaced, not counted.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "worker", "operator": "In", "values": [EXIT_BAD_INPUT]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        # A resumed (unsuspended) Job starts its pod once the stopped one is gone: never two workers on a journal.
        "podReplacementPolicy": "Failed",
        "ttlSecondsAfterFinished": defaults.ttl_seconds_after_finished,
        "activeDeadlineSeconds": defaults.active_deadline_seconds,
        "completions": nodes,
        "parallelism": nodes,
        "template": {
            "metadata": {
                "labels": dict(job_labels),
                "annotations": {
                    **defaults.pod_annotations,
                    labels.WORKER_SPEC: str(spec.get("worker", {}).get("workerSpec", "")),
                },
            },
            "spec": pod_spec,
        },
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": job_labels,
            "annotations": {labels.FULL_FINGERPRINT: spec["fingerprint"]},
        },
        "spec": job_spec,
    }


def headless_service(job: dict[str, Any]) -> dict[str, Any]:
    """Stable DNS for the pods of an Indexed Job: <job>-<index>.<service>; pod 0 is MASTER_ADDR."""
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(job["metadata"]["labels"])},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"job-name": name},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }
