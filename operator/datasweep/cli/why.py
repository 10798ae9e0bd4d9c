"""`datasweep why FILE|EXPERIMENT [POINT]`: why each point is reused or made anew.

For a miss: the nearest existing Artifact of the same dataset and stage kind and the fields its fingerprint
input differs in (core/why.py). For a hit: who made the Artifact, when, and for which batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from datasweep.api.worker import TRAINING_STAGES, WorkerSpecError, parse_worker_spec
from datasweep.cli.backends import ArtifactView, ClusterBackend, LocalBackend
from datasweep.cli.common import (
    BadInput,
    backend_options,
    choose_backend,
    dump,
    experiment_root,
    kubeconfig_available,
    output_option,
)
from datasweep.cli.run import experiment_options
from datasweep.core.imported import ImportedMatch
from datasweep.core.plan import StagePlan
from datasweep.core.why import Candidate, Nearest, Side, nearest, summary
from datasweep.local.experiment_file import ExperimentFileError, LocalExperiment, load_experiment, parse_prompt_files
from datasweep.local.registry import Registry
from datasweep.store.progress import RequestReuseCounts

Backend = LocalBackend | ClusterBackend


@dataclass
class StageWhy:
    dataset: str
    semantic_name: str
    stage: str  # the stage's label (`generate`, `squad(lr3e-5)`) or kind
    artifact: str
    status: str  # hit | imported | miss
    found: ArtifactView | None = None  # a hit: the Artifact reused; a miss: one with its fingerprint, incomplete
    imported: ImportedMatch | None = None
    nearest: Nearest | None = None
    nearest_view: ArtifactView | None = None
    # a generate miss: its requests the request store holds (a local root: counted as plan counts them; a
    # cluster: as its worker reported them)
    request_reuse: RequestReuseCounts | None = None
    request_reuse_note: str = ""  # why it could not be counted

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dataset": self.dataset,
            "semanticName": self.semantic_name,
            "stage": self.stage,
            "artifact": self.artifact,
            "status": self.status,
        }
        if self.status == "hit" and self.found is not None:
            data["producedBy"] = _producer(self.found)
        if self.imported is not None:
            data["imported"] = self.imported.to_dict()
        if self.status == "miss":
            data["incomplete"] = (
                None if self.found is None else {"artifact": self.found.name, "phase": self.found.phase}
            )
            data["nearest"] = None if self.nearest is None else self.nearest.to_dict()
            data["requestReuse"] = (
                None if self.request_reuse is None else self.request_reuse.model_dump(mode="json", by_alias=True)
            )
        return data

    def lines(self) -> list[str]:
        head = f"{self.dataset}/{self.semantic_name} {self.stage}:"
        if self.status == "imported" and self.imported is not None:
            return [f"{head} hit (imported) {self.imported.describe()}"]
        if self.status == "hit" and self.found is not None:
            return [f"{head} hit {self.found.name}: {_produced_words(self.found)}"]
        lines = [f"{head} MISS ({self.artifact})"]
        if self.request_reuse is not None:
            lines.append(f"  request store: {self.request_reuse.sentence()}")
        elif self.request_reuse_note:
            lines.append(f"  request store: not counted: {self.request_reuse_note}")
        if self.found is not None:
            lines.append(
                f"  its fingerprint exists as {self.found.name} ({self.found.phase}), not complete: made again"
            )
        if self.nearest is None:
            if self.found is None:
                lines.append(
                    f"  no other Artifact of dataset {self.dataset} and stage {self.stage_kind} to compare with"
                )
            return lines
        count = len(self.nearest.differences)
        phase = f" ({self.nearest_view.phase})" if self.nearest_view is not None else ""
        differ = "1 field differs" if count == 1 else f"{count} fields differ"
        lines.append(f"  nearest: {self.nearest.candidate.name}{phase}; {differ}:")
        lines += [f"    {d.render()}" for d in self.nearest.differences]
        return lines

    @property
    def stage_kind(self) -> str:
        return self.stage.split("(", 1)[0]


def _producer(view: ArtifactView) -> dict[str, Any]:
    return {
        "experiment": view.first_experiment,
        "job": view.job,
        "batch": view.first_batch,
        "createdAt": view.created_at,
        "completedAt": view.completed_at,
        "phase": view.phase,
    }


def _produced_words(view: ArtifactView) -> str:
    who = f"made by experiment {view.first_experiment or '(unknown)'}"
    if view.job:
        who += f" (Job {view.job})"
    when = (
        f", completed {view.completed_at}"
        if view.completed_at
        else (f", created {view.created_at}" if view.created_at else "")
    )
    batch = f" for batch {view.first_batch}" if view.first_batch else ""
    return f"{who}{batch}{when} ({view.phase})"


# ---- sides and candidates ----


def _local_effective(backend: Backend, view: ArtifactView) -> dict[str, Any] | None:
    """The effective parameters of a local Artifact (prompt texts): the WorkerSpec it ran with."""
    if not isinstance(backend, LocalBackend):
        return view.params  # an Artifact object's spec.params are the effective ones
    path = Registry(backend.root).specs_dir / f"{view.name}.yaml"
    try:
        return parse_worker_spec(path.read_text(encoding="utf-8"), str(path)).params
    except (OSError, WorkerSpecError):
        return None


def side_of(backend: Backend, view: ArtifactView, texts: bool = False) -> Side:
    """An Artifact's side of a comparison; `texts` adds the effective parameters where they cost a file read."""
    effective = view.params if isinstance(backend, ClusterBackend) else None
    if texts:
        effective = _local_effective(backend, view)
    return Side(view.canonical, effective, view.dataset_files)


class Pool:
    """The Artifacts a miss may be compared with, by dataset and stage kind (imported trees record the seed's
    parameters, not ours: never compared)."""

    def __init__(self, backend: Backend, artifacts: Sequence[ArtifactView]) -> None:
        self.backend = backend
        self.groups: dict[tuple[str, str], list[tuple[ArtifactView, Candidate]]] = {}
        for a in artifacts:
            if not a.imported:
                candidate = Candidate(a.name, side_of(backend, a), a.ready, a.completed_at or a.created_at or "")
                self.groups.setdefault((a.dataset, a.stage), []).append((a, candidate))

    def explain(
        self, planned: Side, dataset: str, kind: str, exclude: str, before: str | None = None
    ) -> tuple[Nearest | None, ArtifactView | None]:
        """The nearest Artifact of `dataset` and stage `kind` (other than fingerprint `exclude`; made no later
        than `before` when given) and how the planned parameters differ from its own."""
        views = {
            a.name: (a, candidate)
            for a, candidate in self.groups.get((dataset, kind), [])
            if a.fingerprint != exclude and (before is None or not a.created_at or a.created_at <= before)
        }
        found = nearest(planned, [candidate for _, candidate in views.values()])
        if found is None:
            return None, None
        view = views[found.candidate.name][0]
        # once more with the texts, so that a prompt difference names its line
        again = nearest(planned, [Candidate(view.name, side_of(self.backend, view, texts=True), view.ready)])
        return (again or found), view


def planned_side(experiment: LocalExperiment, stage: StagePlan) -> Side:
    files = experiment.datasets[stage.dataset].file_sha256 if stage.stage not in TRAINING_STAGES else {}
    return Side(stage.canonical, stage.params, files)


def why_column(backend: Backend, experiment: LocalExperiment, stages: Sequence[StagePlan]) -> dict[str, str]:
    """plan -o wide's WHY: for each of `stages` (the misses), the first difference from its nearest Artifact."""
    if not stages:
        return {}
    artifacts = backend.artifacts() if isinstance(backend, ClusterBackend) or backend.root.is_dir() else []
    pool = Pool(backend, artifacts)
    column = {}
    for stage in stages:
        found, _ = pool.explain(planned_side(experiment, stage), stage.dataset, stage.stage, stage.fingerprint)
        column[stage.artifact] = summary(found.differences) if found else "no Artifact to compare with"
    return column


# ---- the two targets: an experiment file, or an experiment by name ----


def _point_matches(point: str | None, *idents: str) -> bool:
    return point is None or point in idents


def why_file(backend: Backend, experiment: LocalExperiment, point: str | None) -> list[StageWhy]:
    """Each planned stage of the file: a hit (as plan finds it) or a miss with its nearest Artifact and, for a
    generate miss, how many of its requests the request store holds."""
    from datasweep.cli.plan import (  # plan imports this module for its WHY column
        estimate_generate,
        local_request_store,
        match_stages,
    )

    the_plan = experiment.plan()
    artifacts = backend.artifacts() if isinstance(backend, ClusterBackend) or backend.root.is_dir() else []
    pool = Pool(backend, artifacts)
    points = [
        p
        for p in the_plan.points
        if _point_matches(
            point, p.generate.artifact, p.generate.semantic_name, f"{p.generate.dataset}/{p.generate.semantic_name}"
        )
    ]
    found: list[StageWhy] = []
    for match in match_stages(backend, experiment, points, artifacts):
        stage = match.stage
        entry = StageWhy(
            stage.dataset, stage.semantic_name, stage.label, stage.artifact, "miss", match.found, match.imported
        )
        if match.imported is not None:
            entry.status = "imported"
        elif match.hit:
            entry.status = "hit"
        else:
            entry.nearest, entry.nearest_view = pool.explain(
                planned_side(experiment, stage), stage.dataset, stage.stage, stage.fingerprint
            )
            if stage.stage == "generate" and isinstance(backend, ClusterBackend):
                entry.request_reuse = match.found.request_reuse if match.found is not None else None
            elif stage.stage == "generate":
                try:
                    entry.request_reuse = estimate_generate(experiment, stage, local_request_store(backend)).reuse()
                except BadInput as exc:  # what plan refuses (an unreadable dataset): the explanation still stands
                    entry.request_reuse_note = str(exc)
        found.append(entry)
    return found


def why_experiment(backend: Backend, name: str, point: str | None) -> list[StageWhy]:
    """Each Artifact an existing experiment consumes: made by it (a miss then: its nearest older Artifact), or
    reused from another experiment (a hit: who made it, when, for which batch)."""
    artifacts = backend.artifacts()
    members = [a for a in artifacts if name in a.consumers]
    if not members:
        known = sorted({c for a in artifacts for c in a.consumers})
        raise BadInput(
            f"{name!r} is neither an experiment file nor an experiment in {backend.location}"
            + (f"; experiments there: {', '.join(known)}" if known else "; it has no Artifacts")
        )
    by_name = {a.name: a for a in artifacts}
    pool = Pool(backend, artifacts)
    found = []
    for view in members:
        inputs = [by_name[i] for i in view.inputs if i in by_name]
        idents = [
            ident for a in (view, *inputs) for ident in (a.name, a.semantic_name, f"{a.dataset}/{a.semantic_name}")
        ]
        if not _point_matches(point, *idents):
            continue
        entry = StageWhy(view.dataset, view.semantic_name, view.stage, view.name, "hit", found=view)
        if view.first_experiment == name or view.first_experiment is None:
            entry.status, entry.found, entry.request_reuse = "miss", None, view.request_reuse
            entry.nearest, entry.nearest_view = pool.explain(
                side_of(backend, view, texts=True), view.dataset, view.stage, view.fingerprint, before=view.created_at
            )
        found.append(entry)
    return found


@click.command("why")
@experiment_options
@click.argument("point", required=False)
@backend_options
@output_option
def why(
    experiment_file: Path,
    point: str | None,
    data_dir: Path | None,
    prompt_files: tuple[str, ...],
    root: Path | None,
    cluster: bool,
    namespace: str | None,
    kube_context: str | None,
    output: str,
) -> None:
    """Why each point of EXPERIMENT_FILE (or of an experiment by name) is reused or made anew.

    A miss names the nearest existing Artifact of its dataset and stage and every parameter that differs
    (`temperature 0.7 → 0.75`); a hit names the experiment, Job and batch that made it, and when. POINT
    (Dataset/semantic, a semantic name or an Artifact name) picks one point.
    """
    if experiment_file.is_file():
        try:
            experiment = load_experiment(experiment_file, data_dir, parse_prompt_files(prompt_files))
        except ExperimentFileError as exc:
            raise BadInput(str(exc)) from exc
        local_default = root is None and not cluster and not (namespace or kube_context or kubeconfig_available())
        default_root, reason = experiment_root(experiment_file) if local_default else (Path(), "--root")
        backend = choose_backend(root, cluster, namespace, kube_context, default_root=default_root)
        if backend.kind == "local":
            click.echo(f"store: {backend.root.resolve()} ({reason})", err=True)
        try:
            found = why_file(backend, experiment, point)
        except ExperimentFileError as exc:
            raise BadInput(str(exc)) from exc
        target = f"{experiment.name} ({experiment_file})"
    else:
        backend = choose_backend(root, cluster, namespace, kube_context)
        found = why_experiment(backend, str(experiment_file), point)
        target = f"experiment {experiment_file}"
    if point is not None and not found:
        raise BadInput(
            f"{point!r}: no point of {target} has this name (give Dataset/semantic, a semantic name or an Artifact)"
        )
    if output not in ("table",):
        click.echo(
            dump({"target": target, "backend": backend.location, "stages": [s.to_dict() for s in found]}, output)
        )
        return
    click.echo(f"{target} in {backend.location}:")
    for entry in found:
        for line in entry.lines():
            click.echo(line)
    misses = sum(s.status == "miss" for s in found)
    click.echo(f"{len(found)} stages: {len(found) - misses} hits, {misses} misses")
