"""Operator configuration: one YAML file (the chart renders it into a ConfigMap), camelCase keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from datasweep.api import kube_yaml
from datasweep.api._base import CamelModel, describe_validation_error
from datasweep.api.common import Quantity

CONFIG_ENV = "DATASWEEP_CONFIG"


class Images(CamelModel):
    worker: str = "ghcr.io/datasweep/worker:0.1.0"
    trainer: str = "ghcr.io/datasweep/trainer:0.1.0"
    pull_policy: str = Field(default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$")
    pull_secrets: list[str] = Field(default_factory=list)


class JobDefaults(CamelModel):
    ttl_seconds_after_finished: int = Field(default=86400, ge=0)
    active_deadline_seconds: int = Field(default=172800, ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    service_account_name: str = "datasweep-worker"
    priority_class_name: str | None = None
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    shared_memory_size: Quantity | None = Field(
        default="16Gi",
        description="Size of the memory-backed /dev/shm of Jobs with gpus > 1 (NCCL's intra-node transport; "
        "the runtime's default is 64Mi). It counts against the pod's memory limit. null: no such volume",
    )


class OperatorSettings(CamelModel):
    data_root: str | None = Field(default="/data", description="Where the operator has the data volume mounted")
    data_claim_name: str = "datasweep-data"
    volumes: dict[str, str] = Field(default_factory=dict, description="Other PVC name -> mount path here")
    images: Images = Field(default_factory=Images)
    job_defaults: JobDefaults = Field(default_factory=JobDefaults)
    queue_name: str | None = None
    max_points: int = Field(default=256, ge=1)
    retries: int = Field(default=2, ge=0)
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    # Scale (docs/scale.md): how hard the operator may drive the API server, and how much it keeps in flight.
    api_qps: float = Field(default=50.0, gt=0, description="Requests per second of the operator's own client")
    api_burst: int = Field(default=100, ge=1, description="Requests allowed at once above apiQps")
    create_concurrency: int = Field(default=8, ge=1, le=64, description="Artifact creates in flight per Experiment")
    max_jobs_per_namespace: int = Field(
        default=512, ge=0, description="Jobs in flight per namespace, over all Experiments (0: no cap)"
    )
    status_interval_seconds: float = Field(
        default=1.0, ge=0, description="At most one status patch per object per interval"
    )
    progress_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How often Running Artifacts' progress files are read from the data volume (0: never)",
    )
    progress_writes_per_second: float = Field(
        default=5.0, gt=0, description="At most this many Artifact progress writes a second, over all Artifacts"
    )
    peering_lifetime_seconds: int = Field(
        default=60, ge=5, description="With replicas > 1: how long a silent active replica blocks a standby"
    )
    max_failures_listed: int = Field(default=20, ge=0, le=100, description="Failures listed in a status")
    input_wait_timeout_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long an Artifact waits for an input Artifact that does not exist before it fails "
        "(InputMissing)",
    )
    pods_not_created_timeout_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How long a Job may fail to create its pods (FailedCreate: missing ServiceAccount, quota) "
        "before its Artifact fails (PodsNotCreated)",
    )
    resync_period_seconds: float = Field(
        default=30.0,
        ge=1,
        description="How often every non-terminal Artifact is compared with its Job and pods (from the operator's "
        "indices: a Job that ended unseen, a Job deleted, a pod stuck)",
    )
    pod_stuck_report_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a pod may fail to start (image not pullable, missing Secret, unschedulable) before "
        "its Artifact's Ready condition names the cause",
    )
    pod_stuck_timeout_seconds: float = Field(
        default=900.0,
        ge=0,
        description="How long a pod may fail to start before its Artifact fails with that cause (the Job's "
        "activeDeadlineSeconds stays the outer bound)",
    )
    require_manifest: bool = Field(
        default=True,
        description="A completed Job makes its Artifact Ready only when the worker's manifest.json is on the data "
        "volume (checked where the operator has the volume mounted). Off only where no worker runs (kwok).",
    )

    def volume_root(self, pvc: str | None) -> Path | None:
        """Where this process sees a PVC (None: the data volume), or None when it is not mounted here."""
        if pvc is None or pvc == self.data_claim_name:
            return Path(self.data_root) if self.data_root and Path(self.data_root).is_dir() else None
        mount = self.volumes.get(pvc)
        return Path(mount) if mount and Path(mount).is_dir() else None


def load_settings(path: str | None = None) -> OperatorSettings:
    source = path or os.environ.get(CONFIG_ENV)
    if not source:
        return OperatorSettings()
    try:
        raw = kube_yaml.load(Path(source).read_text(encoding="utf-8")) or {}
        return OperatorSettings.model_validate(raw)
    except FileNotFoundError as exc:
        raise SystemExit(f"{source}: operator config not found (set {CONFIG_ENV} or --config)") from exc
    except ValidationError as exc:
        raise SystemExit(f"{source}: invalid operator config: {describe_validation_error(exc)}") from exc
