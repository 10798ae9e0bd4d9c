"""The worker spec: the one file the operator (or `datasweep run`) hands to `datasweep worker <stage>`.

It is the contract between planner and workloads. Every path is absolute; `params` are the stage's
effective parameters (defaults filled in), validated again by the stage's own params model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from datasweep.api import kube_yaml
from datasweep.api._base import CamelModel, describe_validation_error

StageKind = Literal["generate", "dataset", "fomaml", "moe-steer", "qa"]
TRAINING_STAGES: tuple[StageKind, ...] = ("fomaml", "moe-steer", "qa")
# The first stage of a point, whose directory holds the data and the training stages: generate, or dataset
# (a prepared dataset snapshotted without generation).
DATA_STAGES: tuple[StageKind, ...] = ("generate", "dataset")


class WorkerSpecError(ValueError):
    """A worker spec that cannot be used; the message names the field and the fix."""


class WorkerSpec(CamelModel):
    api_version: Literal["datasweep.io/v1alpha1"] = "datasweep.io/v1alpha1"
    kind: Literal["WorkerSpec"] = "WorkerSpec"
    stage: StageKind
    artifact: str = Field(description="Artifact name (for logs and metadata)")
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    dataset: str
    semantic_name: str
    output_dir: str = Field(description="Absolute directory this stage writes; complete once manifest.json exists")
    source_dir: str | None = Field(default=None, description="generate, dataset: the dataset's source directory")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Input artifact directories by role, e.g. {'data': <generate dir>}"
    )
    base_model: str | None = Field(default=None, description="training: local model directory or hub id")
    params: dict[str, Any] = Field(default_factory=dict)
    batch: str | None = None
    experiment: str | None = None

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def load_worker_spec(path: str | Path, expected_stage: StageKind | None = None) -> WorkerSpec:
    """Read a worker spec (YAML or JSON) with errors that name the file and the field."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise WorkerSpecError(f"{source}: worker spec not found") from exc
    spec = parse_worker_spec(text, str(source))
    if expected_stage is not None and spec.stage != expected_stage:
        raise WorkerSpecError(
            f"{source}: stage is {spec.stage!r} but this is the {expected_stage!r} worker; "
            f"run `datasweep worker {spec.stage} --spec {source}`"
        )
    return spec


def parse_worker_spec(text: str, source: str) -> WorkerSpec:
    """A worker spec from its text; `source` names where it came from in the error messages."""
    try:
        # libyaml's parser (kube_yaml): the operator parses one spec per Artifact before each launch
        raw = kube_yaml.load(text)
    except kube_yaml.YAMLError as exc:
        raise WorkerSpecError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise WorkerSpecError(f"{source}: a worker spec is a mapping with stage, fingerprint, outputDir, params")
    try:
        spec = WorkerSpec.model_validate(raw)
    except ValidationError as exc:
        raise WorkerSpecError(f"{source}: invalid worker spec: {describe_validation_error(exc)}") from exc
    if not Path(spec.output_dir).is_absolute():
        raise WorkerSpecError(f"{source}: outputDir must be an absolute path, got {spec.output_dir!r}")
    return spec


def dump_worker_spec(spec: WorkerSpec) -> str:
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return kube_yaml.dump(data, sort_keys=False, allow_unicode=False)
