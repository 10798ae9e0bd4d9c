"""The local store's registry: what the cluster keeps in Artifact and Batch objects, as JSON files.

    <root>/.datasweep/artifacts/<artifact>.json     one per (stage, fingerprint)
    <root>/.datasweep/batches/<batch_id>.json       experiments and points of a batch
    <root>/.datasweep/specs/<artifact>.yaml         the WorkerSpec each stage ran with
    <root>/.datasweep/logs/<artifact>-<attempt>.log the worker's output

Every write is atomic; read-modify-write cycles hold an exclusive lock on the root so two local runs
on one root never lose each other's consumers.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from datasweep.api._base import CamelModel
from datasweep.api.batch import BatchPoint
from datasweep.store.atomic import atomic_write_json
from datasweep.store.manifest import ManifestSummary, Usage

STATE_DIR = ".datasweep"
LocalPhase = Literal["Pending", "Running", "Ready", "Failed"]


class RegistryError(RuntimeError):
    pass


class LocalArtifact(CamelModel):
    name: str
    stage: str
    dataset: str
    semantic_name: str
    fingerprint: str
    path: str = Field(description="Relative to the root, e.g. _shared/Copa/temp07_topp10_gpt4o")
    params: dict[str, Any] = Field(default_factory=dict, description="Canonical parameters (the fingerprint input)")
    dataset_files: dict[str, str] = Field(
        default_factory=dict, description="A data stage's dataset files and the sha256 of each (what `why` counts)"
    )
    inputs: list[str] = Field(default_factory=list)
    phase: LocalPhase = "Pending"
    first_batch: str | None = None
    first_experiment: str | None = None
    consumers: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    manifest: ManifestSummary | None = None
    created_at: str | None = None
    completed_at: str | None = None
    attempts: int = 0
    imported: bool = False
    legacy_fingerprint: str | None = Field(default=None, description="import: the imported tree's own .fingerprint")
    source_sha256: str | None = Field(
        default=None,
        description="import --source: content hash of the dataset the directory was generated from (as the "
        "planner hashes it); with it, a point with the same params and prompt hashes reuses the directory",
    )


class LocalBatch(CamelModel):
    batch_id: str
    purpose: str = ""
    description: str = ""
    experiments: list[str] = Field(default_factory=list)
    points: list[BatchPoint] = Field(default_factory=list)
    best: dict[str, str] = Field(
        default_factory=dict, description="experiment -> its best Artifact (spec.objective) after its last run"
    )
    training: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="experiment -> its spec.training at its last run (results' STAGE names)"
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_DIR

    @property
    def artifacts_dir(self) -> Path:
        return self.state / "artifacts"

    @property
    def batches_dir(self) -> Path:
        return self.state / "batches"

    @property
    def specs_dir(self) -> Path:
        return self.state / "specs"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True)
        with (self.state / "registry.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # ---- artifacts ----
    def artifact_file(self, name: str) -> Path:
        return self.artifacts_dir / f"{name}.json"

    def get_artifact(self, name: str) -> LocalArtifact | None:
        path = self.artifact_file(name)
        try:
            return LocalArtifact.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            raise RegistryError(f"{path}: not a datasweep artifact record ({exc.error_count()} errors)") from exc

    def put_artifact(self, artifact: LocalArtifact) -> None:
        atomic_write_json(self.artifact_file(artifact.name), artifact.model_dump(mode="json", by_alias=True))

    def artifacts(self) -> list[LocalArtifact]:
        if not self.artifacts_dir.is_dir():
            return []
        found = []
        for path in sorted(self.artifacts_dir.glob("*.json")):
            artifact = self.get_artifact(path.stem)
            if artifact is not None:
                found.append(artifact)
        return found

    def delete_artifact(self, name: str) -> None:
        self.artifact_file(name).unlink(missing_ok=True)

    def record_consumer(self, template: LocalArtifact, batch: str, experiment: str) -> LocalArtifact:
        """Create the record on first sight (first batch/experiment), else add the experiment as a consumer."""
        with self.locked():
            existing = self.get_artifact(template.name)
            if existing is None:
                artifact = template.model_copy(
                    update={
                        "first_batch": batch,
                        "first_experiment": experiment,
                        "consumers": [experiment],
                        "created_at": now_iso(),
                    }
                )
            else:
                consumers = (
                    existing.consumers if experiment in existing.consumers else [*existing.consumers, experiment]
                )
                artifact = existing.model_copy(update={"consumers": consumers, "path": template.path})
            self.put_artifact(artifact)
            return artifact

    def update_artifact(self, name: str, **changes: Any) -> LocalArtifact:
        with self.locked():
            existing = self.get_artifact(name)
            if existing is None:
                raise RegistryError(f"artifact {name} is not registered under {self.artifacts_dir}")
            artifact = existing.model_copy(update=changes)
            self.put_artifact(artifact)
            return artifact

    # ---- batches ----
    def batch_file(self, batch_id: str) -> Path:
        return self.batches_dir / f"{batch_id}.json"

    def get_batch(self, batch_id: str) -> LocalBatch | None:
        path = self.batch_file(batch_id)
        try:
            return LocalBatch.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            raise RegistryError(f"{path}: not a datasweep batch record ({exc.error_count()} errors)") from exc

    def batches(self) -> list[LocalBatch]:
        if not self.batches_dir.is_dir():
            return []
        return [b for path in sorted(self.batches_dir.glob("*.json")) if (b := self.get_batch(path.stem))]

    def record_best(self, batch_id: str, experiment: str, artifact: str | None) -> None:
        """What `datasweep results` marks as the experiment's best (the local status.best)."""
        with self.locked():
            batch = self.get_batch(batch_id)
            if batch is None:
                return
            best = {k: v for k, v in batch.best.items() if k != experiment}
            if artifact is not None:
                best[experiment] = artifact
            updated = batch.model_copy(update={"best": best})
            atomic_write_json(self.batch_file(batch_id), updated.model_dump(mode="json", by_alias=True))

    def record_training(self, batch_id: str, experiment: str, training: list[dict[str, Any]]) -> None:
        """The experiment's spec.training, from which `datasweep results` names each training row's entry."""
        with self.locked():
            batch = self.get_batch(batch_id)
            if batch is None:
                return
            updated = batch.model_copy(update={"training": {**batch.training, experiment: training}})
            atomic_write_json(self.batch_file(batch_id), updated.model_dump(mode="json", by_alias=True))

    def record_batch_points(
        self,
        batch_id: str,
        experiment: str,
        points: list[BatchPoint],
        purpose: str = "",
        description: str = "",
    ) -> LocalBatch:
        """Replace this experiment's points in the batch (others' points are kept)."""
        with self.locked():
            batch = self.get_batch(batch_id) or LocalBatch(batch_id=batch_id, purpose=purpose, description=description)
            experiments = batch.experiments if experiment in batch.experiments else [*batch.experiments, experiment]
            kept = [p for p in batch.points if p.experiment != experiment]
            updated = batch.model_copy(
                update={
                    "experiments": experiments,
                    "points": kept + points,
                    "purpose": batch.purpose or purpose,
                    "description": batch.description or description,
                }
            )
            atomic_write_json(self.batch_file(batch_id), updated.model_dump(mode="json", by_alias=True))
            return updated

    def forget_points(self, artifacts: set[str], batch_id: str | None = None, experiment: str | None = None) -> int:
        """Drop batch points (of every batch, or `batch_id`) whose artifact is in `artifacts` or, with
        `experiment`, that this experiment recorded; an experiment left without points leaves the batch."""
        removed = 0
        with self.locked():
            for batch in self.batches():
                if batch_id is not None and batch.batch_id != batch_id:
                    continue
                kept = [
                    p
                    for p in batch.points
                    if p.artifact not in artifacts and (experiment is None or p.experiment != experiment)
                ]
                if len(kept) == len(batch.points):
                    continue
                removed += len(batch.points) - len(kept)
                still = {p.experiment for p in kept}
                experiments = [e for e in batch.experiments if e in still]
                updated = batch.model_copy(update={"points": kept, "experiments": experiments})
                atomic_write_json(self.batch_file(batch.batch_id), updated.model_dump(mode="json", by_alias=True))
        return removed

    def next_log(self, artifact: str) -> Path:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        attempt = 1
        while (self.logs_dir / f"{artifact}-{attempt}.log").exists():
            attempt += 1
        return self.logs_dir / f"{artifact}-{attempt}.log"
