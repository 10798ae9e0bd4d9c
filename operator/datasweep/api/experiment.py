"""The Experiment: a grid of generation settings over datasets, then training stages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from datasweep.api._base import CamelModel
from datasweep.api.common import (
    DNS_LABEL,
    Condition,
    HttpURL,
    LabelValue,
    ModelRef,
    PromptSource,
    Resources,
    SecretKeyRef,
    VolumePath,
)
from datasweep.api.stage_params import metric_names
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

NO_GENERATION = (
    "spec.generation is missing: say what generates the data, e.g. generation: {backend: openai, model: gpt-4o, "
    "apiKeySecret: {name: openai, key: api-key}}, or mark each dataset prepared: true to train on its records "
    "as they are; datasweep does not choose a (paid) model for you"
)

# Grid axes of spec.generation, in the order they appear in semantic names.
GRID_AXES = ("model", "temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty")
# Generate params that spec.generation's own fields (and spec.validation) set: not accepted in options.
SET_BY_SPEC = ("task", "backend", "base_url", "prompt", "cache_version", *GRID_AXES)
# `options.validation` may carry the judge's other settings (top_p, max_tokens), not what spec.validation sets.
VALIDATION_SET_BY_SPEC = ("model", "temperature", "prompt")


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
    base_url: HttpURL | None = Field(default=None, alias="baseURL", max_length=2048)
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

    @model_validator(mode="after")
    def _options_not_set_twice(self) -> GenerationSpec:
        twice = sorted(set(self.options) & set(SET_BY_SPEC))
        judge = self.options.get("validation")
        if isinstance(judge, dict):
            twice += [f"validation.{key}" for key in sorted(set(judge) & set(VALIDATION_SET_BY_SPEC))]
        if twice:
            raise ValueError(
                f"options {', '.join(twice)}: set by spec.generation / spec.validation themselves, not in options"
            )
        return self


class ValidationSpec(CamelModel):
    model: str = Field(default="gpt-4o", min_length=1, max_length=256)
    temperature: float = 0.0
    prompt: PromptSource = Field(default_factory=PromptSource)


class TrainingStage(CamelModel):
    name: str = Field(min_length=1, max_length=20, pattern=DNS_LABEL, description="Stage name, unique in the list")
    kind: TrainingKind
    base_model: ModelRef
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyper-parameters, typed per kind; a param given as a list of values is a grid axis: the "
        "stage's own grid is the cross product of its lists, one Artifact per point and combination",
    )
    resources: Resources = Field(default_factory=Resources)
    launcher: Literal["job", "trainjob"] = "job"


class Objective(CamelModel):
    """Which Artifact is best: status.best names it, `datasweep results` marks it."""

    stage: str = Field(
        min_length=1, max_length=20, pattern=DNS_LABEL, description="The training stage (its name in spec.training)"
    )
    metric: str = Field(
        min_length=1,
        max_length=40,
        description="A metric the stage's kind records (docs/stages.md): qa f1, em, bestF1, ...; fomaml "
        "queryLossAfter, lossDrop, tokenAccuracy, ...; moe-steer finalLoss, ...",
    )
    goal: Literal["maximize", "minimize"] = "maximize"


SEARCH_ALGORITHMS = ("random",)


class Search(CamelModel):
    """Plan a sample of the grid instead of all of it (Katib's random search): the same spec, the same sample."""

    algorithm: str = Field(
        default="random",
        description="random: N combinations drawn from the full grid (generation x training)",
        json_schema_extra={"enum": list(SEARCH_ALGORITHMS)},  # kubectl apply refuses `grid` before the operator
    )
    samples: int = Field(ge=1, le=10000, description="How many combinations; more than the grid plans all of it")
    seed: int = Field(default=0, ge=0, description="The same seed draws the same combinations")

    @model_validator(mode="after")
    def _known_algorithm(self) -> Search:
        if self.algorithm not in SEARCH_ALGORITHMS:
            raise ValueError(
                f"spec.search.algorithm: {self.algorithm!r} is not supported; use 'random', or leave spec.search "
                "out to plan the whole grid"
            )
        return self


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
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="The generation grid; required unless every dataset is prepared: datasweep never picks a "
        "(paid) model for you",
    )
    validation: ValidationSpec | None = None
    training: list[TrainingStage] = Field(default_factory=list, max_length=8)
    cache_version: str = Field(default="1", max_length=64)
    force_regenerate: bool = False
    parallelism: int = Field(default=16, ge=1, le=1024, description="Max Jobs of this Experiment running at once")
    queue_name: LabelValue | None = Field(
        default=None,
        description="Kueue LocalQueue for every Job (a label value: letters, digits, -, _, .)",
    )
    max_points: int = Field(
        default=256,
        ge=1,
        le=10000,
        description="Refuse grids that make more Artifacts than this: every point's data stage and each of its "
        "training Artifacts (one per combination of a stage's own grid) count",
    )
    retries: int = Field(default=2, ge=0, le=20, description="Retries per Artifact before it is Failed")
    objective: Objective | None = Field(
        default=None, description="The metric that ranks the Artifacts of one training stage: status.best"
    )
    search: Search | None = Field(
        default=None,
        description="Random search: plan `samples` combinations of the full grid (every generation point x each "
        "stage's training combinations), drawn with `seed`; maxPoints counts what is planned after sampling",
    )
    suspend: bool = Field(
        default=False,
        description="Stop spending (the convention of Job, JobSet and Kueue): no Job starts for this Experiment, "
        "and the Jobs of its Artifacts that no running Experiment consumes are suspended (their pods stop; "
        "workers keep what they answered). false resumes them. Never in a fingerprint",
    )

    @model_validator(mode="before")
    @classmethod
    def _generation_required(cls, data: Any) -> Any:
        # Say why instead of "Field required": a default here used to launch paid gpt-4o requests nobody asked for.
        if isinstance(data, Mapping) and data.get("generation") is None and not _all_prepared(data):
            raise ValueError(NO_GENERATION)
        return data

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
        if self.objective is not None:
            _check_objective(self.objective, self.training)
        prepared = [i for i, d in enumerate(self.datasets) if d.prepared]
        if prepared and not self.training:
            raise ValueError(
                f"spec.datasets[{prepared[0]}].prepared: a prepared dataset is only trained on; add spec.training"
            )
        return self


def _check_objective(objective: Objective, training: list[TrainingStage]) -> None:
    entry = next((t for t in training if t.name == objective.stage), None)
    if entry is None:
        named = ", ".join(t.name for t in training) or "none"
        raise ValueError(
            f"spec.objective.stage: {objective.stage!r} is not a stage in spec.training (its stages: {named})"
        )
    metrics = metric_names(entry.kind)
    if objective.metric not in metrics:
        raise ValueError(
            f"spec.objective.metric: a {entry.kind} stage records {', '.join(metrics)}; {objective.metric!r} is "
            "none of them"
        )


def _all_prepared(data: Mapping[str, Any]) -> bool:
    datasets = data.get("datasets")
    return isinstance(datasets, list) and all(isinstance(d, Mapping) and d.get("prepared") is True for d in datasets)


def parse_spec(raw: Mapping[str, Any]) -> ExperimentSpec:
    """The one validation of an Experiment spec, for the operator, `datasweep plan` and `datasweep run`.

    Strict, as the API server's schema is for typed fields: `temperature: "0.7"`, `temperature: true` and
    `maxTokens: "256"` are refused, never coerced (grid axes are untyped in the CRD, so this is their check).
    Raises pydantic's ValidationError; `describe_validation_error(exc, "spec")` names the fields.
    """
    return ExperimentSpec.model_validate(dict(raw), strict=True)


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


class SweepProgress(CamelModel):
    """A running sweep summed over its Artifacts (their status.progress, from the workers' progress files)."""

    percent: int = Field(default=0, ge=0, le=100, description="Work done over all planned Artifacts")
    summary: str = Field(default="", description="The PROGRESS column, e.g. 37%")
    cost: str = Field(default="", description="The COST column: dollars so far, e.g. $0.1234")
    cost_usd: float = Field(default=0.0, description="Produced Artifacts' usage plus what unfinished ones spent so far")
    tokens: int = 0
    requests_done: int = Field(default=0, description="Of the Artifacts reporting requests now")
    requests_total: int = 0
    steps_done: int = Field(default=0, description="Of the Artifacts reporting training steps now")
    steps_total: int = 0
    eta_seconds: int | None = Field(default=None, description="At the rate seen since the operator started")
    # request-level reuse of the Artifacts made for this sweep (beside counts.reused and savedByReuse: the
    # Artifacts reused whole)
    requests_stored: int = Field(default=0, description="Requests the request store answered: not sent, not paid")
    requests_to_send: int = Field(default=0, description="Requests the running Artifacts' workers have left to send")
    rows_reused: int = Field(default=0, description="Records whose every request the request store answered")
    saved_usd: float = Field(default=0.0, description="What the stored answers cost when first paid for")
    saved: str = Field(default="", description="The SAVED column, e.g. 432 requests, $0.4100")


class BestArtifact(CamelModel):
    """The best Ready Artifact of the objective's stage among those the Experiment consumes."""

    artifact: str
    stage: str
    metric: str
    goal: str
    value: float
    params: dict[str, Any] = Field(
        default_factory=dict, description="Its point's grid values and its stage combination's values"
    )
    candidates: int = Field(default=0, description="Ready Artifacts of the stage that recorded the metric")
    tied: int = Field(default=1, description="Candidates with the best value (the first name is shown)")
    summary: str = Field(default="", description="The BEST column, e.g. f1=81.2 (temperature=0.5, learning_rate=3e-05)")


class PlannedSet(CamelModel):
    """What the Experiment's current plan consumes: the Artifacts labelled exp.datasweep.io/<name> once the
    operator has released those a smaller grid left (labelled left.datasweep.io/<name> instead)."""

    artifacts: int = Field(default=0, description="How many Artifacts the plan has")
    digest: str = Field(
        default="",
        description="sha256 (first 16 hex) of the plan's Artifact names, sorted and joined by newlines: equal to "
        "that of the Artifacts labelled as consumed when the labels are the current plan",
    )
    generation: int | None = Field(default=None, description="The metadata.generation it was planned for")


class ExperimentStatus(CamelModel):
    observed_generation: int | None = None
    batch: str | None = Field(default=None, description="The Batch's id: its directory's name on the volume")
    batch_name: str | None = Field(default=None, description="The Batch's object name: what `kubectl get batch` takes")
    conditions: list[Condition] = Field(default_factory=list)
    counts: Counts = Field(default_factory=Counts)
    failures: Failures = Field(default_factory=Failures)
    usage: Usage = Field(default_factory=Usage)
    saved_by_reuse: Usage = Field(default_factory=Usage)
    progress: SweepProgress = Field(default_factory=SweepProgress)
    best: BestArtifact | None = Field(default=None, description="With spec.objective: its best Ready Artifact")
    planned: PlannedSet | None = Field(default=None, description="The Artifacts its current plan consumes")
