"""The Artifact: the output of one stage at one fingerprint (files on the shared volume plus this object)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from datasweep.api._base import CamelModel
from datasweep.api.common import Condition, Resources, VolumeRelPath
from datasweep.api.worker import StageKind
from datasweep.store.manifest import ManifestSummary, Usage
from datasweep.store.progress import ProgressReport
from datasweep.store.provenance import Provenance


class ArtifactStorage(CamelModel):
    claim_name: str | None = Field(default=None, description="PVC of the data volume")
    path: VolumeRelPath = Field(
        max_length=1024, description="Directory relative to the data volume root, e.g. _shared/Copa/temp07_topp10"
    )


class ArtifactSpec(CamelModel):
    stage: StageKind
    dataset: str
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    semantic_name: str
    params: dict[str, Any] = Field(default_factory=dict, description="Canonical effective parameters")
    canonical: dict[str, Any] = Field(
        default_factory=dict,
        description="The fingerprint's input (what core/fingerprint.py hashes): what `datasweep why` compares",
    )
    inputs: list[str] = Field(default_factory=list, description="Names of the input Artifacts")
    storage: ArtifactStorage
    image: str | None = None
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(default=2, ge=0, le=20)
    worker: dict[str, Any] = Field(default_factory=dict, description="Job details: source dir, base model, secrets")


# Suspended: every Experiment consuming it is suspended or deleted; no Job runs (its Job, if any, is suspended).
Phase = Literal["Pending", "Waiting", "Running", "Retrying", "Suspended", "Ready", "Failed"]


class ArtifactStatus(CamelModel):
    phase: Phase = "Pending"
    conditions: list[Condition] = Field(default_factory=list)
    job: str | None = None
    attempts: int = 0
    first_batch: str | None = Field(default=None, description="The first Batch's id (its directory's name)")
    first_batch_name: str | None = Field(
        default=None, description="The first Batch's object name: what `kubectl get batch NAME` takes"
    )
    first_experiment: str | None = None
    consumers: list[str] = Field(
        default_factory=list,
        description="Written by earlier versions only; the consumers are the exp.datasweep.io/<name> labels",
    )
    started_at: str | None = None
    completed_at: str | None = None
    usage: Usage = Field(default_factory=Usage)
    manifest: ManifestSummary | None = None
    regenerated_for: str | None = None
    waiting_reason: str | None = Field(default=None, description="Why a Waiting Artifact waits")
    waiting_since: str | None = Field(default=None, description="When the current waiting reason began")
    suspended_job: str | None = Field(
        default=None, description="The Job suspended with this Artifact: resumed, not replaced, when it resumes"
    )
    progress: ProgressReport | None = Field(
        default=None, description="The worker's last progress report (its output directory's .progress.json)"
    )
    provenance: Provenance | None = Field(
        default=None,
        description="What produced it: datasweep and recipe version, image and digest, library versions, the "
        "models the API answered with, the GPU (written when it becomes Ready or Failed)",
    )
