"""The two places the batch tools read: a local root (files + registry) and the cluster (Artifact/Batch objects).

Both answer with the same views, so every tool prints the same words on a laptop and on a cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datasweep import GROUP, VERSION
from datasweep.api import kube_yaml
from datasweep.api.experiment import TrainingStage
from datasweep.api.worker import DATA_STAGES
from datasweep.cli.errors import BadInput
from datasweep.core.naming import batch_object_name
from datasweep.k8s import labels as k8s_labels
from datasweep.k8s.builders import DATA_MOUNT
from datasweep.local.registry import LocalArtifact, Registry, RegistryError
from datasweep.store.layout import SHARED
from datasweep.store.manifest import ManifestSummary, Usage
from datasweep.store.progress import RequestReuseCounts
from datasweep.store.provenance import Provenance

BATCH_DIR = re.compile(r"^batch_[0-9]{8}_[A-Za-z0-9_]+$")


@dataclass
class ArtifactView:
    name: str
    stage: str
    dataset: str
    semantic_name: str
    fingerprint: str
    path: str  # relative to the root / data volume
    phase: str
    first_batch: str | None = None
    first_experiment: str | None = None
    consumers: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    manifest: ManifestSummary | None = None
    imported: bool = False
    legacy_fingerprint: str | None = None
    source_sha256: str | None = None  # import --source: the hash of the dataset it was generated from
    label_keys: frozenset[str] = frozenset()  # on a cluster: the consumer labels (exp./batch.datasweep.io/...)
    base_model: dict[str, Any] | None = None  # a training Artifact's model identity: pvc, path, hub_id
    # what `datasweep why` reads: the fingerprint's input (None where not recorded, and for imported trees), the
    # data stage's dataset files with their sha256 (local runs), when it was made and by which Job
    canonical: dict[str, Any] | None = None
    dataset_files: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None
    completed_at: str | None = None
    job: str | None = None
    provenance: Provenance | None = None  # what produced it (issue 25); on a cluster with the pod's image
    # a generate stage's requests the request store answered: its manifest's, on a cluster also its running
    # worker's last report
    request_reuse: RequestReuseCounts | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "dataset": self.dataset,
            "semanticName": self.semantic_name,
            "fingerprint": self.fingerprint,
            "path": self.path,
            "phase": self.phase,
            "firstBatch": self.first_batch,
            "firstExperiment": self.first_experiment,
            "consumers": self.consumers,
            "usage": self.usage.model_dump(mode="json", by_alias=True),
            "inputs": self.inputs,
            "imported": self.imported,
            "legacyFingerprint": self.legacy_fingerprint,
            "manifest": self.manifest.model_dump(mode="json", by_alias=True) if self.manifest else None,
            "provenance": self.provenance.model_dump(mode="json", by_alias=True) if self.provenance else None,
        }


@dataclass
class PointView:
    dataset: str
    name: str  # the directory name in the batch view (the semantic name, or with a fingerprint suffix)
    path: str  # the batch path, relative to the root: batch_x/Copa/temp07_topp10_gpt4o
    shared_path: str | None  # _shared/Copa/temp07_topp10_gpt4o, None for a broken link
    artifact: str | None
    experiment: str | None
    reused: bool
    ready: bool  # its data is ready (what `datasweep paths` lists)
    first_batch: str | None
    broken: str | None = None  # why the view entry does not lead to data
    done: bool = False  # its data and every training stage on it are Ready (a Batch's READY counts these)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "semanticName": self.name,
            "path": self.path,
            "sharedPath": self.shared_path,
            "artifact": self.artifact,
            "experiment": self.experiment,
            "reused": self.reused,
            "ready": self.ready,
            "done": self.done,
            "firstBatch": self.first_batch,
            **({"broken": self.broken} if self.broken else {}),
        }


@dataclass
class BatchView:
    batch_id: str  # batch_20241229_temperature: the directory of the batch view, Experiments' spec.batch
    purpose: str = ""
    description: str = ""
    experiments: list[str] = field(default_factory=list)
    points: list[PointView] = field(default_factory=list)
    name: str = ""  # on a cluster the Batch object's name (batch-20241229-temperature), what kubectl accepts
    status_counts: dict[str, int] | None = None  # on a cluster the Batch's status.counts (kubectl's columns)

    @property
    def counts(self) -> dict[str, int]:
        """EXPERIMENTS, POINTS, REUSED, READY as `kubectl get batches` prints them: the Batch status where the
        operator wrote one, else the same sums from the points (READY: points whose every stage is Ready)."""
        if self.status_counts is not None:
            return {k: int(self.status_counts.get(k, 0)) for k in ("experiments", "points", "reused", "ready")}
        return {
            "experiments": len(self.experiments),
            "points": len(self.points),
            "reused": sum(p.reused for p in self.points),
            "ready": sum(p.done for p in self.points),
        }

    def to_dict(self, verbose: bool = True) -> dict[str, Any]:
        counts = self.counts
        data: dict[str, Any] = {
            "batchId": self.batch_id,
            "name": self.name or self.batch_id,
            "purpose": self.purpose,
            "experiments": self.experiments,
            "points": counts["points"],
            "reused": counts["reused"],
            "ready": counts["ready"],
            "datasets": {d: sum(p.dataset == d for p in self.points) for d in self.datasets},
        }
        if self.description:
            data["description"] = self.description
        if verbose:
            data["pointList"] = [p.to_dict() for p in self.points]
        return data

    @property
    def datasets(self) -> list[str]:
        return sorted({p.dataset for p in self.points})

    def matches(self, ident: str) -> bool:
        """Either spelling names the batch: the id (batch_x_y) or the object name kubectl shows (batch-x-y)."""
        return ident in (self.batch_id, self.name) or batch_object_name(ident) == batch_object_name(self.batch_id)


def built_on(artifacts: Iterable[ArtifactView]) -> dict[str, list[ArtifactView]]:
    """Artifact name -> the Artifacts that take it as an input."""
    index: dict[str, list[ArtifactView]] = {}
    for a in artifacts:
        for name in a.inputs:
            index.setdefault(name, []).append(a)
    return index


def stages_done(
    data: ArtifactView, children: dict[str, list[ArtifactView]], belongs: Callable[[ArtifactView], bool]
) -> bool:
    """Whether a point is done: its data Ready and every training Artifact built on it (directly or through
    another stage) that `belongs` to the batch Ready too."""
    if not data.ready:
        return False
    seen, frontier = {data.name}, [data.name]
    while frontier:
        for a in children.get(frontier.pop(), []):
            if a.name in seen or not belongs(a):
                continue
            if not a.ready:
                return False
            seen.add(a.name)
            frontier.append(a.name)
    return True


def _view_of_local(artifact: LocalArtifact) -> ArtifactView:
    return ArtifactView(
        name=artifact.name,
        stage=artifact.stage,
        dataset=artifact.dataset,
        semantic_name=artifact.semantic_name,
        fingerprint=artifact.fingerprint,
        path=artifact.path,
        phase=artifact.phase,
        first_batch=artifact.first_batch,
        first_experiment=artifact.first_experiment,
        consumers=list(artifact.consumers),
        usage=artifact.usage,
        params=dict(artifact.params),
        inputs=list(artifact.inputs),
        manifest=artifact.manifest,
        imported=artifact.imported,
        legacy_fingerprint=artifact.legacy_fingerprint,
        source_sha256=artifact.source_sha256,
        base_model=_local_base_model(artifact.params),
        canonical=None if artifact.imported else dict(artifact.params),
        dataset_files=dict(artifact.dataset_files),
        created_at=artifact.created_at,
        completed_at=artifact.completed_at,
        provenance=artifact.manifest.provenance if artifact.manifest is not None else None,
        request_reuse=artifact.manifest.request_reuse if artifact.manifest is not None else None,
    )


def _training_entries(raw: Any) -> list[TrainingStage]:
    """spec.training as recorded (an Experiment object's, or a local run's); an entry that no longer reads is
    left out: its Artifacts then show their kind."""
    entries = []
    for item in raw if isinstance(raw, list) else []:
        try:
            entries.append(TrainingStage.model_validate(item))
        except ValidationError:
            continue
    return entries


def _local_base_model(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """A local record keeps the fingerprinted form of a training stage: its base model identity inside."""
    found = params.get("base_model") if "stage" in params else None
    return dict(found) if isinstance(found, dict) else None


def _cluster_base_model(worker: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model identity (pvc, path) of a training Artifact from its Job details: the worker spec's baseModel
    under the mount of its volume (the data volume when no model volume holds it)."""
    try:
        loaded = kube_yaml.load(worker.get("workerSpec") or "") or {}
    except kube_yaml.YAMLError:
        return None
    path = loaded.get("baseModel") if isinstance(loaded, dict) else None
    if not isinstance(path, str):
        return None
    mounts = [(v.get("mountPath", ""), v.get("claimName")) for v in worker.get("volumes") or [] if isinstance(v, dict)]
    for mount, claim in [*mounts, (DATA_MOUNT, None)]:
        if mount and path.startswith(f"{mount}/"):
            return {"pvc": claim, "path": path[len(mount) + 1 :], "hub_id": None}
    return None


class LocalBackend:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry = Registry(root)

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def display_root(self) -> str:
        """How paths are shown for training configs: the root as the user gave it."""
        return str(self.root).rstrip("/")

    def require_root(self) -> None:
        if not self.root.is_dir():
            raise BadInput(
                f"{self.root}: no such directory; pass --root DIR (the local store, default ./Data_v2/synthetic) "
                f"or --cluster"
            )

    def artifacts(self) -> list[ArtifactView]:
        self.require_root()
        try:
            return [_view_of_local(a) for a in self.registry.artifacts()]
        except RegistryError as exc:
            raise BadInput(str(exc)) from exc

    def batch_ids(self) -> list[str]:
        self.require_root()
        on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and BATCH_DIR.match(p.name)}
        recorded = {b.batch_id for b in self.registry.batches()}
        return sorted(on_disk | recorded)

    def batches(self) -> list[BatchView]:
        artifacts = self.artifacts()
        return [self._batch(batch_id, artifacts) for batch_id in self.batch_ids()]

    def batch(self, ident: str) -> BatchView | None:
        """The batch `ident` names, in either spelling (batch_x_y or batch-x-y)."""
        found = next((i for i in self.batch_ids() if BatchView(i).matches(ident)), None)
        return None if found is None else self._batch(found, self.artifacts())

    def experiment_training(self, name: str) -> list[TrainingStage]:
        """The spec.training of the experiment's last `datasweep run` (empty when none was recorded)."""
        recorded = [b.training[name] for b in self.registry.batches() if name in b.training]
        return _training_entries(recorded[-1] if recorded else None)

    @staticmethod
    def batch_label(batch_id: str) -> str:
        """How tables name a batch here: its directory."""
        return batch_id

    def _batch(self, batch_id: str, artifacts: list[ArtifactView]) -> BatchView:
        """The batch directory is the view (seed 000); the registry adds experiments and reuse."""
        record = self.registry.get_batch(batch_id)
        by_path = {a.path: a for a in artifacts if a.stage in DATA_STAGES}
        recorded = {(p.dataset, Path(p.path or "").name): p for p in (record.points if record else [])}
        experiments = set(record.experiments) if record else set()
        children = built_on(artifacts)
        points = []
        directory = self.root / batch_id
        entries = sorted(directory.glob("*/*"), key=lambda p: (p.parent.name, p.name)) if directory.is_dir() else []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            dataset = entry.parent.name
            rel = f"{batch_id}/{dataset}/{entry.name}"
            shared, broken = self._shared_target(entry)
            artifact = by_path.get(shared) if shared else None
            known = recorded.get((dataset, entry.name))
            reused = known.reused if known else bool(artifact and artifact.first_batch != batch_id)
            if broken is None and artifact is None:
                broken = f"{shared} is not a registered artifact (run `datasweep import {self.root}`)"
            points.append(
                PointView(
                    dataset=dataset,
                    name=entry.name,
                    path=rel,
                    shared_path=shared,
                    artifact=artifact.name if artifact else None,
                    experiment=known.experiment if known else None,
                    reused=reused,
                    ready=bool(artifact and artifact.ready and broken is None),
                    first_batch=artifact.first_batch if artifact else None,
                    broken=broken,
                    done=bool(
                        artifact
                        and broken is None
                        and stages_done(
                            artifact, children, lambda a: not experiments or bool(experiments & set(a.consumers))
                        )
                    ),
                )
            )
        return BatchView(
            batch_id=batch_id,
            purpose=record.purpose if record else "",
            description=record.description if record else "",
            experiments=list(record.experiments) if record else [],
            points=points,
        )

    def _shared_target(self, entry: Path) -> tuple[str | None, str | None]:
        """(path relative to the root, problem) of one batch view entry."""
        if not entry.is_symlink():
            return None, f"{entry} is a real directory, not a symlink into {SHARED}/"
        target = os.readlink(entry)
        resolved = (entry.parent / target).resolve()
        if not resolved.exists():
            return None, f"broken symlink: {entry} -> {target} (the target does not exist)"
        try:
            rel = resolved.relative_to(self.root.resolve())
        except ValueError:
            return None, f"{entry} -> {target} points outside the root {self.root}"
        return str(rel), None


def _usage(raw: Any) -> Usage:
    try:
        return Usage.model_validate(raw or {})
    except ValueError:
        return Usage()


def _manifest(raw: Any) -> ManifestSummary | None:
    if not raw:
        return None
    try:
        return ManifestSummary.model_validate(raw)
    except ValueError:
        return None


def _provenance(raw: Any) -> Provenance | None:
    if not raw:
        return None
    try:
        return Provenance.model_validate(raw)
    except ValueError:
        return None


class ClusterBackend:
    kind = "cluster"
    display_root = "/data"

    def __init__(self, api: Any, namespace: str, context: str | None) -> None:
        self.api = api
        self.namespace = namespace
        self.context = context

    @classmethod
    def connect(cls, namespace: str | None, context: str | None) -> ClusterBackend:
        from datasweep.k8s import client as k8s_client

        try:
            api = k8s_client.custom(context)
        except k8s_client.KubeConfigError as exc:
            raise BadInput(f"{exc}; pass --root DIR to use a local store instead") from exc
        return cls(api, namespace or k8s_client.default_namespace(context), context)

    @property
    def location(self) -> str:
        return f"namespace {self.namespace}" + (f" (context {self.context})" if self.context else "")

    def _list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            selected = {"label_selector": label_selector} if label_selector else {}
            result = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, **selected)
        except ApiException as exc:
            if exc.status == 404:
                raise BadInput(
                    f"the cluster has no {plural}.{GROUP} resource: install the datasweep CRDs "
                    f"(kubectl apply -f crds/) or pass --root DIR for a local store"
                ) from exc
            raise BadInput(f"listing {plural} in {self.location}: {exc.status} {exc.reason}") from exc
        except OSError as exc:
            raise BadInput(f"cannot reach the cluster ({exc}); pass --root DIR for a local store") from exc
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def artifacts(self) -> list[ArtifactView]:
        views = []
        for obj in self._list("artifacts"):
            spec = obj.get("spec") or {}
            status = obj.get("status") or {}
            labels = (obj.get("metadata") or {}).get("labels") or {}
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            views.append(
                ArtifactView(
                    name=obj["metadata"]["name"],
                    stage=spec.get("stage", ""),
                    dataset=spec.get("dataset", ""),
                    semantic_name=spec.get("semanticName", ""),
                    fingerprint=spec.get("fingerprint", ""),
                    path=(spec.get("storage") or {}).get("path", ""),
                    phase=status.get("phase") or "Pending",
                    first_batch=status.get("firstBatch"),
                    first_experiment=status.get("firstExperiment"),
                    consumers=k8s_labels.consumers_of(obj.get("metadata") or {}, status),
                    usage=_usage(status.get("usage")),
                    params=dict(spec.get("params") or {}),
                    inputs=list(spec.get("inputs") or []),
                    manifest=_manifest(status.get("manifest")),
                    imported=labels.get(k8s_labels.IMPORTED) == "true",
                    legacy_fingerprint=annotations.get(k8s_labels.LEGACY_FINGERPRINT),
                    source_sha256=annotations.get(k8s_labels.SOURCE_SHA256),
                    label_keys=frozenset(labels),
                    base_model=_cluster_base_model(spec.get("worker") or {}),
                    canonical=dict(spec["canonical"]) if spec.get("canonical") else None,
                    created_at=(obj.get("metadata") or {}).get("creationTimestamp"),
                    completed_at=status.get("completedAt"),
                    job=status.get("job"),
                    provenance=_provenance(status.get("provenance")),
                    request_reuse=RequestReuseCounts.from_raw((status.get("progress") or {}).get("requestReuse"))
                    or RequestReuseCounts.from_raw((status.get("manifest") or {}).get("requestReuse")),
                )
            )
        return sorted(views, key=lambda a: (a.dataset, a.semantic_name, a.stage, a.name))

    def experiment_best(self, name: str) -> str | None:
        """The Artifact an Experiment's status.best names (its spec.objective), if any."""
        found = next((e for e in self._list("experiments") if e["metadata"]["name"] == name), None)
        best = ((found or {}).get("status") or {}).get("best") or {}
        return str(best["artifact"]) if best.get("artifact") else None

    def experiment_planned(self, name: str) -> tuple[int, str] | None:
        """How many Artifacts the Experiment's current plan has and their digest (status.planned), if recorded."""
        found = next((e for e in self._list("experiments") if e["metadata"]["name"] == name), None)
        planned = ((found or {}).get("status") or {}).get("planned") or {}
        return (int(planned.get("artifacts", 0)), str(planned["digest"])) if planned.get("digest") else None

    def experiment_training(self, name: str) -> list[TrainingStage]:
        """The Experiment's spec.training (empty when it is gone or has none)."""
        found = next((e for e in self._list("experiments") if e["metadata"]["name"] == name), None)
        return _training_entries(((found or {}).get("spec") or {}).get("training"))

    def batches(self) -> list[BatchView]:
        artifacts = {a.name: a for a in self.artifacts()}
        return sorted((self._batch(obj, artifacts) for obj in self._list("batches")), key=lambda b: b.batch_id)

    def batch(self, ident: str) -> BatchView | None:
        """The Batch `ident` names: its object name (batch-x-y, as kubectl prints it) or its id (batch_x_y)."""
        return next((b for b in self.batches() if b.matches(ident)), None)

    @staticmethod
    def batch_label(batch_id: str) -> str:
        """How tables name a batch on a cluster: the Batch object's name, which `kubectl get bat NAME` finds."""
        return batch_object_name(batch_id)

    @staticmethod
    def _batch(obj: dict[str, Any], artifacts: dict[str, ArtifactView]) -> BatchView:
        """A batch's points are its generate Artifacts, selected by the label batch.datasweep.io/<Batch name>
        (the Batch status holds counts only: it stays small at any sweep size)."""
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        batch_id = spec.get("batchId") or obj["metadata"]["name"]
        key = k8s_labels.batch_key(obj["metadata"]["name"])
        experiments = list(status.get("experiments") or [])
        children = built_on(artifacts.values())
        points = []
        for artifact in artifacts.values():
            if artifact.stage != "generate" or key not in artifact.label_keys:
                continue
            name = Path(artifact.path).name or artifact.semantic_name
            experiment = next((c for c in artifact.consumers if c in experiments), None)
            points.append(
                PointView(
                    dataset=artifact.dataset,
                    name=name,
                    path=f"{batch_id}/{artifact.dataset}/{name}",
                    shared_path=artifact.path,
                    artifact=artifact.name,
                    experiment=experiment,
                    reused=artifact.first_batch not in (None, batch_id),
                    ready=artifact.ready,
                    first_batch=artifact.first_batch,
                    done=stages_done(artifact, children, lambda a: key in a.label_keys),
                )
            )
        counts = status.get("counts")
        return BatchView(
            batch_id=batch_id,
            purpose=spec.get("purpose", ""),
            description=spec.get("description", ""),
            experiments=experiments,
            points=sorted(points, key=lambda p: (p.dataset, p.name)),
            name=obj["metadata"]["name"],
            status_counts=dict(counts) if isinstance(counts, dict) else None,
        )
