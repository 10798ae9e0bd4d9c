"""The Experiment: a grid of generation settings over datasets, then training stages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from datasweep.api._base import CamelModel
from datasweep.api.common import (
    DNS_LABEL,
    Condition,
    ModelRef,
    PromptSource,
    Resources,
    SecretKeyRef,
    VolumePath,
)
from datasweep.store.manifest import Usage

TaskKind = Literal["rephrase", "code-scenarios"]
Backend = Literal["openai", "openai-batch", "openai-compatible", "transformers"]
TrainingKind = Literal["fomaml", "moe-steer", "qa"]
# Training kinds that are not rank-aware: one process on one GPU (fomaml runs under torchrun, FSDP optional).
SINGLE_GPU_KINDS = ("moe-steer", "qa")

# A grid axis: one value or a list of values (the grid is the cross product of all lists).
FloatAxis = float | list[float]
IntAxis = int | list[int]
StrAxis = str | list[str]

# Grid axes of spec.generation, in the order they appear in semantic names.
GRID_AXES = ("model", "temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")


class DatasetSpec(CamelModel):
    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Dataset name, e.g. Copa",
    )
    source: VolumePath = Field(description="Directory with <name>_{train,validation,test}.jsonl")
    prepared: bool = Field(
        default=False,
        description="Train on the records as they are, with no generation (the generation grid does not apply): "
        "one point per dataset; files may also be .json or .parquet",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Content hash of the source files, when the operator cannot read the source volume",
    )


class GenerationSpec(CamelModel):
    task: TaskKind = "rephrase"
    backend: Backend = "openai"
    base_url: str | None = Field(default=None, alias="baseURL", max_length=2048)
    api_key_secret: SecretKeyRef | None = None
    model: StrAxis = "gpt-4o"
    temperature: FloatAxis = 0.7
    top_p: FloatAxis = 1.0
    max_tokens: IntAxis = 256
    frequency_penalty: FloatAxis = 0.0
    presence_penalty: FloatAxis = 0.0
    prompt: PromptSource = Field(default_factory=PromptSource)
    model_path: ModelRef | None = Field(default=None, description="transformers backend: the model on a volume")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further generate-worker parameters (concurrency, caps, prices, ...)",
    )


class ValidationSpec(CamelModel):
    model: str = "gpt-4o"
    temperature: float = 0.0
    prompt: PromptSource = Field(default_factory=PromptSource)


class TrainingStage(CamelModel):
    name: str = Field(min_length=1, max_length=20, pattern=DNS_LABEL, description="Stage name, unique in the list")
    kind: TrainingKind
    base_model: ModelRef
    params: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters, typed per kind")
    resources: Resources = Field(default_factory=Resources)
    launcher: Literal["job", "trainjob"] = "job"


class ExperimentSpec(CamelModel):
    batch: str | None = Field(
        default=None,
        max_length=60,
        pattern=r"^batch_[0-9]{8}_[a-z0-9_]+$",
        description="batch_<YYYYMMDD>_<purpose>",
    )
    purpose: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_]+$")
    description: str = Field(default="", max_length=4096)
    datasets: list[DatasetSpec] = Field(min_length=1, max_length=64)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    validation: ValidationSpec | None = None
    training: list[TrainingStage] = Field(default_factory=list, max_length=8)
    cache_version: str = Field(default="1", max_length=64)
    force_regenerate: bool = False
    parallelism: int = Field(default=16, ge=1, le=1024, description="Max Jobs of this Experiment running at once")
    queue_name: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue for every Job")
    max_points: int = Field(default=256, ge=1, le=10000, description="Refuse grids larger than this")
    retries: int = Field(default=2, ge=0, le=20, description="Retries per Artifact before it is Failed")

    @model_validator(mode="after")
    def _cross_field(self) -> ExperimentSpec:
        if self.batch is None and self.purpose is None:
            raise ValueError("set spec.purpose (the batch defaults to batch_<YYYYMMDD>_<purpose>) or spec.batch")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError("spec.datasets: dataset names must be unique")
        stages = [t.name for t in self.training]
        if len(set(stages)) != len(stages):
            raise ValueError("spec.training: stage names must be unique")
        prepared = [i for i, d in enumerate(self.datasets) if d.prepared]
        if prepared and not self.training:
            raise ValueError(
                f"spec.datasets[{prepared[0]}].prepared: a prepared dataset is only trained on; add spec.training"
            )
        return self


class Failure(CamelModel):
    artifact: str
    stage: str = ""
    reason: str = ""
    message: str = Field(default="", max_length=512)


class Failures(CamelModel):
    """The first failures (at most `settings.maxFailuresListed`) and how many there are in all."""

    total: int = 0
    items: list[Failure] = Field(default_factory=list)


class Counts(CamelModel):
    """Points and Artifacts are planned numbers; the rest are points by their furthest state (bounded status:
    the points themselves are the Artifacts labelled exp.datasweep.io/<name>)."""

    points: int = 0
    artifacts: int = 0
    reused: int = 0
    created: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


class ExperimentStatus(CamelModel):
    observed_generation: int | None = None
    batch: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    counts: Counts = Field(default_factory=Counts)
    failures: Failures = Field(default_factory=Failures)
    usage: Usage = Field(default_factory=Usage)
    saved_by_reuse: Usage = Field(default_factory=Usage)
