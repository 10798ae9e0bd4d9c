"""The Batch: a logical view grouping experiments by date and purpose (batch_20241229_temperature)."""

from __future__ import annotations

from pydantic import Field

from datasweep.api._base import CamelModel
from datasweep.api.common import Condition
from datasweep.api.experiment import Failures, SweepProgress
from datasweep.store.manifest import Usage


class BatchSpec(CamelModel):
    batch_id: str = Field(pattern=r"^batch_[0-9]{8}_[a-z0-9_]+$", max_length=60)
    purpose: str = Field(default="", max_length=40)
    description: str = Field(default="", max_length=4096)


class BatchCounts(CamelModel):
    experiments: int = 0
    points: int = 0
    reused: int = 0
    created: int = 0
    ready: int = 0
    failed: int = 0


class BatchPoint(CamelModel):
    """One point of a batch in the local registry (on a cluster the points are the labelled Artifacts)."""

    experiment: str
    dataset: str
    semantic_name: str
    artifact: str
    reused: bool
    path: str | None = None
    ready: bool = False
    training: list[str] | None = Field(
        default=None,
        description="The training Artifacts this experiment's run planned on the point (None: recorded before "
        "they were; then every one it consumed there counts as planned)",
    )


class ExperimentBest(CamelModel):
    """An Experiment's status.best as its Batch lists it."""

    experiment: str
    artifact: str
    summary: str = ""


class BatchStatus(CamelModel):
    conditions: list[Condition] = Field(default_factory=list)
    experiments: list[str] = Field(
        default_factory=list, description="Experiment names (the first 256; counts.experiments has them all)"
    )
    counts: BatchCounts = Field(default_factory=BatchCounts)
    failures: Failures = Field(default_factory=Failures)
    usage: Usage = Field(default_factory=Usage)
    saved_by_reuse: Usage = Field(default_factory=Usage)
    progress: SweepProgress = Field(default_factory=SweepProgress)
    best: list[ExperimentBest] = Field(
        default_factory=list, description="The best Artifact of each Experiment with spec.objective (the first 256)"
    )
