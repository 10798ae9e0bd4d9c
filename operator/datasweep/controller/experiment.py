"""Experiment handler: expand the grid, create one Artifact per (stage, fingerprint), 409 means reuse."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from datasweep.api._base import describe_validation_error
from datasweep.api.artifact import ArtifactSpec
from datasweep.api.experiment import ExperimentSpec, parse_spec
from datasweep.api.worker import TRAINING_STAGES, dump_worker_spec
from datasweep.controller import aggregate, consumption, suspension
from datasweep.controller.artifact import replace_if_damaged
from datasweep.controller.indices import EXPERIMENTS, ArtifactInfo, artifact_info, info_of, lookup
from datasweep.controller.setup import settings
from datasweep.core import naming
from datasweep.core.imported import ImportedMatch, plan_matches
from datasweep.core.memory import GPU_PRODUCT_LABEL, UnknownModel, plan_memory, read_model_config
from datasweep.core.plan import Plan, PlanError, PlanInputs, StagePlan, plan_experiment
from datasweep.core.shape import check_shapes, check_task_files
from datasweep.core.templates import template_problems
from datasweep.core.worker_spec import worker_spec_for
from datasweep.k8s import builders, client, labels
from datasweep.k8s.conditions import set_condition
from datasweep.store import layout
from datasweep.store.records import RECORD_SUFFIXES


class Refused(Exception):
    """The API server or a foreign Artifact refuses a planned Artifact: a Failed condition, not a retry loop."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InputError(Exception):
    """Something only the operator can see is missing (Secret, dataset files, prompt ConfigMap)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _fail(namespace: str, name: str, status: dict[str, Any], generation: int, reason: str, message: str) -> None:
    conditions = status.get("conditions", [])
    conditions = set_condition(conditions, "Planned", False, reason, message, generation)
    conditions = set_condition(conditions, "Succeeded", False, reason, message, generation)
    conditions = set_condition(conditions, "Failed", True, reason, message, generation)
    state = aggregate.aggregator()
    if state is not None:
        state.forget(namespace, name)  # no aggregate overwrites this answer
    client.patch_status("Experiment", namespace, name, {"observedGeneration": generation, "conditions": conditions})


def _prompt_text(namespace: str, prompt: Any, where: str) -> str | None:
    if prompt.config_map_key_ref is not None:
        ref = prompt.config_map_key_ref
        text = client.read_configmap_key(namespace, ref.name, ref.key)
        if text is None:
            raise InputError("PromptNotFound", f"{where}.configMapKeyRef: ConfigMap {ref.name} has no key {ref.key}")
        return text
    text = prompt.text
    return text if isinstance(text, str) else None


def _dataset_hashes(
    spec: ExperimentSpec, samples: dict[str, Any] | None = None, listed: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """Content hash of every dataset; `samples` receives the first records of those the operator can read,
    `listed` their files (relative to the dataset's directory)."""
    hashes = {}
    for index, dataset in enumerate(spec.datasets):
        where = f"spec.datasets[{index}].source"
        if dataset.sha256:
            hashes[dataset.name] = dataset.sha256
            root = settings().volume_root(dataset.source.pvc)
            if samples is not None and root is not None:  # read what can be read, for the shape checks
                suffixes = RECORD_SUFFIXES if dataset.prepared else (".jsonl",)
                with suppress(layout.LayoutError):
                    files = layout.dataset_files(root / dataset.source.path, dataset.name, suffixes)
                    samples[dataset.name] = layout.split_samples(files)
                    if listed is not None:
                        listed[dataset.name] = files.relative_files()
            continue
        root = settings().volume_root(dataset.source.pvc)
        if root is None:
            pvc = dataset.source.pvc
            mount = f"chart value sourceVolumes.{pvc}: /sources/{pvc}" if pvc else "chart value data.dataRoot"
            raise InputError(
                "DatasetUnreadable",
                f"{where}: the operator cannot read PVC {pvc or 'data'}; mount it ({mount}) or set "
                f"spec.datasets[{index}].sha256",
            )
        directory = _inside_volume(root, dataset.source.path, f"{where}.path")
        suffixes = RECORD_SUFFIXES if dataset.prepared else (".jsonl",)
        try:
            files = layout.dataset_files(directory, dataset.name, suffixes)
        except layout.LayoutError as exc:
            raise InputError("DatasetNotFound", f"{where}: {exc}") from exc
        hashes[dataset.name] = files.sha256
        if samples is not None:
            samples[dataset.name] = layout.split_samples(files)
        if listed is not None:
            listed[dataset.name] = files.relative_files()
    return hashes


def _inside_volume(root: Path, relpath: str, where: str) -> Path:
    directory = layout.resolve_inside(root, relpath)
    if directory is None:  # the schema refuses `..`; this catches a symlink that points out of the volume
        raise InputError("PathOutsideVolume", f"{where}: {relpath} leads out of its volume; give a path inside it")
    return directory


def _check_templates(spec: ExperimentSpec, plan: Plan) -> None:
    """Render every prompt template against each readable dataset's first records (SPEC 4: answer early)."""
    problems = []
    for point in {point.dataset: point for point in plan.points}.values():
        if point.generate.stage != "generate":  # a prepared dataset: no prompt is rendered
            continue
        dataset = next(d for d in spec.datasets if d.name == point.dataset)
        root = settings().volume_root(dataset.source.pvc)
        if root is None:  # the operator cannot read this volume (spec.datasets[].sha256): the worker checks
            continue
        try:
            files = layout.dataset_files(_inside_volume(root, dataset.source.path, ""), dataset.name).files
        except (InputError, layout.LayoutError):  # answered by plan_for already
            continue
        problems += template_problems(point.generate.params, layout.sample_records(files))
    if problems:
        raise PlanError("; ".join(dict.fromkeys(problems)), "InvalidTemplate")


def _check_secret(namespace: str, spec: ExperimentSpec) -> None:
    secret = spec.generation.api_key_secret
    if secret is None:
        generated = any(not d.prepared for d in spec.datasets)
        if generated and spec.generation.backend in (
            "openai",
            "openai-batch",
        ):  # the schema says so too; a Job would fail
            raise PlanError(
                "spec.generation.apiKeySecret: backend openai needs an API key: apiKeySecret: {name: <Secret>, "
                "key: api-key}",
                "MissingSecret",
            )
        return
    present = client.secret_has_key(namespace, secret.name, secret.key)
    if present is None:
        raise InputError(
            "MissingSecret",
            f"spec.generation.apiKeySecret: Secret {secret.name} not found in {namespace}; "
            f"create it: kubectl create secret generic {secret.name} --from-literal={secret.key}=...",
        )
    if not present:
        raise InputError("MissingSecret", f"spec.generation.apiKeySecret: Secret {secret.name} has no key {secret.key}")


def plan_for(namespace: str, spec: ExperimentSpec, created: datetime) -> Plan:
    _check_secret(namespace, spec)
    generation_prompt = _prompt_text(namespace, spec.generation.prompt, "spec.generation.prompt")
    validation_prompt = (
        _prompt_text(namespace, spec.validation.prompt, "spec.validation.prompt") if spec.validation else None
    )
    samples: dict[str, Any] = {}
    listed: dict[str, list[str]] = {}
    inputs = PlanInputs(
        dataset_sha256=_dataset_hashes(spec, samples, listed),
        generation_prompt=generation_prompt,
        validation_prompt=validation_prompt,
        created=created,
    )
    plan = plan_experiment(spec, inputs, max_points=min(spec.max_points, settings().max_points))
    missing = check_task_files(plan, listed)
    if missing:  # before any Artifact or Job
        raise PlanError("files the stages name are missing: " + "; ".join(missing), "FileNotFound")
    problems = check_shapes(plan, samples)
    if problems:  # before any Artifact, Job or request
        raise PlanError("the records lack fields the stages need: " + "; ".join(problems), "FieldMismatch")
    product = settings().job_defaults.gpu_node_selector.get(GPU_PRODUCT_LABEL)
    _, too_big = plan_memory(plan, _model_config, product)
    if too_big:  # before any Artifact, Job or request
        raise PlanError("a training stage cannot fit its GPU: " + "; ".join(too_big), "InsufficientGPUMemory")
    return plan


def _model_config(stage: StagePlan) -> dict[str, Any] | None:
    """The base model's config.json where the operator sees its volume; None otherwise (no memory check)."""
    ref = stage.base_model
    root = settings().volume_root(ref.pvc) if ref is not None and ref.path else None
    directory = layout.resolve_inside(root, ref.path) if root is not None and ref is not None and ref.path else None
    if directory is None:
        return None
    try:
        return read_model_config(directory)
    except UnknownModel:
        return None  # the worker reports an unreadable config


def _storage_path(stage: StagePlan, generate_paths: dict[str, str]) -> str:
    if stage.stage in TRAINING_STAGES:
        return layout.training_relpath(generate_paths[stage.inputs[0]], stage.stage, stage.fingerprint)
    root = settings().volume_root(None)
    if root is None:  # no volume here: a name that can never clash
        return layout.shared_relpath(stage.dataset, f"{stage.semantic_name}_{stage.short_fingerprint}")
    return layout.claim_generate_dir(root, stage.dataset, stage.semantic_name, stage.fingerprint)


def _worker_details(
    spec: ExperimentSpec,
    stage: StagePlan,
    path: str,
    generate_paths: dict[str, str],
    *,
    batch: str,
    experiment: str,
) -> dict[str, Any]:
    dataset = next(d for d in spec.datasets if d.name == stage.dataset)
    volumes = []
    source_dir = None
    base_model = None
    if stage.stage not in TRAINING_STAGES:  # generate, or the dataset stage of a prepared dataset
        source_root = builders.DATA_MOUNT
        if dataset.source.pvc and dataset.source.pvc != settings().data_claim_name:
            source_root = "/sources/0"
            volumes.append({"claimName": dataset.source.pvc, "mountPath": source_root})
        source_dir = f"{source_root}/{dataset.source.path}"
    ref = stage.base_model
    if ref is not None and ref.path:  # hubId is refused by the schema: Jobs run offline
        model_root = builders.DATA_MOUNT
        if ref.pvc and ref.pvc != settings().data_claim_name:
            model_root = f"/models/{len(volumes)}"
            volumes.append({"claimName": ref.pvc, "mountPath": model_root})
        base_model = f"{model_root}/{ref.path}"
    inputs = {"data": generate_paths[stage.inputs[0]]} if stage.inputs else {}
    worker_spec = worker_spec_for(
        stage,
        data_root=builders.DATA_MOUNT,
        relpath=path,
        input_relpaths=inputs,
        source_dir=source_dir,
        base_model=base_model,
        batch=batch,
        experiment=experiment,
    )
    details: dict[str, Any] = {"workerSpec": dump_worker_spec(worker_spec), "volumes": volumes}
    secret = spec.generation.api_key_secret
    if stage.stage == "generate" and secret is not None:
        details["apiKeySecret"] = {"name": secret.name, "key": secret.key}
        details["apiKeyEnv"] = stage.params.get("api_key_env", "OPENAI_API_KEY")
    return details


def _reuse_imported(
    namespace: str, plan: Plan, index: kopf.Index[Any, Any] | None
) -> tuple[Plan, dict[str, tuple[StagePlan, ImportedMatch, ArtifactInfo]]]:
    """The plan with every generate stage that has no Artifact of its own but matches a Ready imported directory
    (`datasweep import --source`, core/imported.py) replaced by that imported Artifact, and its training stages
    reading from it (they nest under its path, as locally); and, by imported Artifact name, what replaced what."""
    if index is None:
        return plan, {}
    root = settings().volume_root(None)

    @functools.cache  # once per dataset, not per point: a stat per candidate on the volume
    def candidates(dataset: str) -> list[ArtifactInfo]:
        infos = (info_of(index, namespace, n) for n in lookup(index, ("imported", namespace, dataset)))
        return [
            info
            for info in infos
            if info is not None
            and info.stage == "generate"
            and info.phase == "Ready"
            and (root is None or layout.is_complete(root / info.path))  # its data still there, where visible
        ]

    own = [p.generate for p in plan.points if info_of(index, namespace, p.generate.artifact) is None]
    matches = plan_matches(own, candidates)
    if not matches:
        return plan, {}
    reused: dict[str, tuple[StagePlan, ImportedMatch, ArtifactInfo]] = {}
    points = []
    for point in plan.points:
        match = matches.get(point.generate.artifact)
        info = info_of(index, namespace, match.artifact) if match is not None else None
        if match is None or info is None:
            points.append(point)
            continue
        # Under the imported Artifact's own name and fingerprint `_ensure_artifact` adds this consumer, as on a
        # cache hit (the planned generate Artifact is never created)
        generate = dataclasses.replace(point.generate, artifact=info.name, fingerprint=info.fingerprint)
        training = tuple(dataclasses.replace(t, inputs=(info.name,)) for t in point.training)
        points.append(dataclasses.replace(point, generate=generate, training=training))
        reused[info.name] = (point.generate, match, info)
    return dataclasses.replace(plan, points=tuple(points)), reused


def planned_artifact(
    spec: ExperimentSpec,
    stage: StagePlan,
    path: str,
    plan: Plan,
    generate_paths: dict[str, str],
    experiment: str,
    queue: str | None,
) -> dict[str, Any]:
    """The Artifact the Experiment handler creates for one planned stage, consumed by `experiment`."""
    body = _produced_as(spec, stage, path, generate_paths, queue, experiment=experiment, batch=plan.batch)
    marks = labels.consumer_marks(experiment, naming.batch_object_name(plan.batch))
    body["metadata"]["labels"].update(marks["labels"])
    body["metadata"]["annotations"].update(marks.get("annotations", {}))
    body["metadata"]["annotations"][labels.DETAILS] = details_digest(body)
    return body


def _produced_as(
    spec: ExperimentSpec,
    stage: StagePlan,
    path: str,
    generate_paths: dict[str, str],
    queue: str | None,
    *,
    experiment: str,
    batch: str,
) -> dict[str, Any]:
    """The Artifact of `stage` as this spec would produce it at `path`, first made by `experiment` in `batch`."""
    return builders.artifact_body(
        stage,
        storage_path=path,
        settings=settings(),
        experiment=experiment,
        batch=batch,
        retries=spec.retries,
        parallelism=spec.parallelism,
        queue_name=queue,
        worker=_worker_details(spec, stage, path, generate_paths, batch=batch, experiment=experiment),
    )


# How an Artifact is produced, never what (operational: out of the fingerprint): an Experiment applied again
# with a correction (baseURL, API-key Secret, image, resources, retries, queue, parallelism, ...) updates them
# on its Artifacts that are not Ready. The identity (stage, fingerprint, inputs) and the storage path never change.
DETAIL_FIELDS = ("params", "image", "resources", "retries", "worker")
DETAIL_ANNOTATIONS = (labels.PARALLELISM, labels.QUEUE)


def worker_details(body: dict[str, Any]) -> dict[str, Any] | None:
    """The operational details of an Artifact, as the API server stores them (the schema's defaults filled in,
    nulls dropped): equal details compare equal, whoever wrote them. None for a body that is no valid Artifact."""
    try:
        spec = ArtifactSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    annotations = body["metadata"].get("annotations") or {}
    details = spec.model_dump(mode="json", by_alias=True, include=set(DETAIL_FIELDS))
    details.update({key: annotations.get(key) for key in DETAIL_ANNOTATIONS})
    cleaned: dict[str, Any] = _without_nulls(details)
    return cleaned


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def details_digest(planned: dict[str, Any]) -> str:
    """Of a planned Artifact (`_produced_as`), recorded on it (labels.DETAILS, in the index): a re-applied
    Experiment finds unchanged details without reading the Artifact. From the planned values as they are (no
    model validation: a tenth of the time, for each Artifact of a fan-out)."""
    annotations = planned["metadata"]["annotations"]
    details = {key: planned["spec"].get(key) for key in DETAIL_FIELDS}
    details.update({key: annotations.get(key) for key in DETAIL_ANNOTATIONS})
    text = json.dumps(_without_nulls(details), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs, named as in the Artifact: `params.base_url`, `worker.apiKeySecret`, `retries`."""
    fields: list[str] = []
    for key in sorted(set(current) | set(wanted)):
        old, new = current.get(key), wanted.get(key)
        if old == new:
            continue
        if key in ("params", "worker") and isinstance(old, dict) and isinstance(new, dict):
            inner = [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            fields += [f for f in inner if f != "worker.workerSpec" or not any(i.startswith("params.") for i in fields)]
        else:
            fields.append(key)
    return fields


def merge_patch(current: Any, wanted: Any) -> Any:
    """The RFC 7386 merge patch from `current` to `wanted`: objects merge key by key, a key that is gone is null."""
    if not (isinstance(current, dict) and isinstance(wanted, dict)):
        return wanted
    patch: dict[str, Any] = {key: None for key in current if key not in wanted}
    patch.update({k: merge_patch(current.get(k), v) for k, v in wanted.items() if current.get(k) != v})
    return patch


@dataclasses.dataclass(frozen=True)
class Correction:
    """A planned Artifact whose worker details differ from what this Experiment plans."""

    artifact: str
    fields: tuple[str, ...]
    relaunched: bool = False
    decided_by: str | None = None  # another Experiment decides them: nothing was written


@dataclasses.dataclass(frozen=True)
class Applying:
    """How this run of the Experiment handler treats the Artifacts it plans."""

    decides: Callable[[str], bool]  # whether an Experiment exists: while it does, it decides what it decided
    # A Failed Artifact is relaunched by a correction the user applied (a create or an update of the spec),
    # not by a resume: an operator restart or upgrade (new images, new defaults) never relaunches failed points.
    relaunch: bool


# A Failed Artifact is relaunched by a correction unless it failed for an input (that one is relaunched instead;
# its dependents start again once it is Ready) or before any Job could run (hand-made Artifacts).
_NOT_RELAUNCHED = ("InputFailed", "InputCycle", "InvalidWorkerSpec")


def _correct_details(
    namespace: str,
    experiment: str,
    name: str,
    artifact: dict[str, Any] | None,
    produced_as: Callable[[dict[str, Any]], dict[str, Any]],
    applying: Applying,
) -> Correction | None:
    """Give a not-Ready Artifact the worker details this Experiment plans, when it decides them: the Artifact's
    decider (labels.DETAILS_FROM, else its first experiment) while that Experiment exists, else whoever applies.
    A Failed one is relaunched (the retry annotation, in the same write). Conditional on the resourceVersion read:
    a 409 means the Artifact changed (it may be Ready now): read it again and decide again."""
    for _ in range(5):
        if artifact is None:
            artifact = client.get_custom("Artifact", namespace, name)
            if artifact is None:
                return None
        meta, status = artifact["metadata"], artifact.get("status") or {}
        annotations = meta.get("annotations") or {}
        if status.get("phase") == "Ready" or (meta.get("labels") or {}).get(labels.IMPORTED) == "true":
            return None  # produced: its data and details are never touched
        wanted = produced_as(artifact)
        current, planned = worker_details(artifact), worker_details(wanted)
        if current is None or planned is None:
            return None  # not an Artifact this operator made: nothing to compare
        digest = details_digest(wanted)
        patch: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"]}}
        fields: list[str] = []
        relaunch = False
        if current == planned:
            if annotations.get(labels.DETAILS) == digest:
                return None
            patch["metadata"]["annotations"] = {labels.DETAILS: digest}  # recorded: the next apply reads nothing
        else:
            fields = _changed_fields(current, planned)
            decider = annotations.get(labels.DETAILS_FROM) or annotations.get(labels.FIRST_EXPERIMENT) or experiment
            if decider != experiment and applying.decides(decider):
                return Correction(name, tuple(fields), decided_by=decider)
            ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            relaunch = (
                applying.relaunch and status.get("phase") == "Failed" and ready.get("reason") not in _NOT_RELAUNCHED
            )
            wanted_annotations = wanted["metadata"]["annotations"]
            patch["metadata"]["annotations"] = {
                **{key: wanted_annotations.get(key) for key in DETAIL_ANNOTATIONS},
                labels.DETAILS: digest,
                labels.DETAILS_FROM: experiment,
                **({labels.RETRY: f"corrected-{digest}"} if relaunch else {}),
            }
            patch["spec"] = {
                key: merge_patch(artifact["spec"].get(key), wanted["spec"].get(key))
                for key in DETAIL_FIELDS
                if artifact["spec"].get(key) != wanted["spec"].get(key)
            }
        try:
            client.patch_custom("Artifact", namespace, name, patch)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status != 409:
                raise
            artifact = None  # changed since read: decide again on what it is now
            continue
        return Correction(name, tuple(fields), relaunched=relaunch) if fields else None
    raise kopf.TemporaryError(f"Artifact {name} kept changing while its worker details were corrected", delay=5)


def _ensure_artifact(
    namespace: str,
    name: str,
    spec: ExperimentSpec,
    stage: StagePlan,
    plan: Plan,
    generate_paths: dict[str, str],
    known: ArtifactInfo | None,
    queue: str | None,
    regenerate_token: str | None,
    applying: Applying,
) -> tuple[str, bool, Correction | None]:
    """Create the Artifact of one stage (409: reuse it and label it with this experiment as a consumer); one that
    is not Ready takes the worker details planned now (`_correct_details`).

    Returns its path, whether another experiment produced it (a cache hit), and the correction made or refused."""
    batch_object = naming.batch_object_name(plan.batch)
    marks = labels.consumer_marks(name, batch_object)

    def produced_as(artifact: dict[str, Any]) -> dict[str, Any]:
        annotations = artifact["metadata"].get("annotations") or {}
        return _produced_as(
            spec,
            stage,
            artifact["spec"]["storage"]["path"],
            generate_paths,
            queue,
            experiment=annotations.get(labels.FIRST_EXPERIMENT) or name,
            batch=annotations.get(labels.FIRST_BATCH) or plan.batch,
        )

    # Recorded already (its consumer labels are the record): a second run over the plan writes nothing.
    consumed = known is not None and set(marks["labels"]) <= known.marks and not regenerate_token
    if known is not None:
        _check_same_artifact(stage, known.fingerprint, known.stage)
    if known is not None and consumed:
        hit = known.first_experiment not in (None, name)
        if known.phase == "Ready" and not known.imported and replace_if_damaged(namespace, stage.artifact, known.path):
            return known.path, False, None  # damaged: produced again, not a hit
        if known.phase == "Ready" or known.imported:
            return known.path, hit, None  # resumed: nothing to write
        wanted = _produced_as(
            spec,
            stage,
            known.path,
            generate_paths,
            queue,
            experiment=known.first_experiment or name,
            batch=known.first_batch or plan.batch,
        )
        if known.details == details_digest(wanted):
            return known.path, hit, None
        correction = _correct_details(namespace, name, stage.artifact, None, produced_as, applying)
        return known.path, hit, correction
    if known is None:
        body = planned_artifact(spec, stage, _storage_path(stage, generate_paths), plan, generate_paths, name, queue)
        try:
            artifact, created = client.create_custom(namespace, body)
        except ApiException as exc:
            if exc.status not in (400, 413, 422):  # others are transient: Kopf retries
                raise
            # a value the planner let through but the API server refuses: answer, do not retry forever
            raise Refused(
                "ArtifactRejected", f"the API server refused Artifact {stage.artifact}: {_api_message(exc)}"
            ) from exc
        if not created:
            existing = artifact.get("spec") or {}
            _check_same_artifact(stage, str(existing.get("fingerprint")), str(existing.get("stage")))
    else:
        artifact, created = {}, False
    correction = None
    if not created:  # reuse: record this consumer, its labels (one merge patch, idempotent; no status write)
        rejoin = labels.rejoin_marks(name, batch_object)  # also a grid that grew back to an Artifact it had left
        artifact = client.patch_custom("Artifact", namespace, stage.artifact, {"metadata": rejoin})
        correction = _correct_details(namespace, name, stage.artifact, artifact, produced_as, applying)
    path = artifact["spec"]["storage"]["path"]  # an existing Artifact keeps its own path
    annotations = artifact["metadata"].get("annotations", {})
    ready = (artifact.get("status") or {}).get("phase") == "Ready"
    imported = (artifact["metadata"].get("labels") or {}).get(labels.IMPORTED) == "true"
    reusable = not created and ready and not imported and not regenerate_token
    if reusable and replace_if_damaged(namespace, stage.artifact, path):
        return path, False, correction  # damaged: produced again, not a hit
    if regenerate_token and annotations.get(labels.REGENERATE) != regenerate_token:
        client.patch_custom(
            "Artifact", namespace, stage.artifact, {"metadata": {"annotations": {labels.REGENERATE: regenerate_token}}}
        )
    return path, annotations.get(labels.FIRST_EXPERIMENT, name) != name, correction


def reconcile(
    namespace: str,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    index: kopf.Index[Any, Any] | None = None,
    relaunch: bool = True,
) -> None:
    meta, status = body["metadata"], dict(body.get("status") or {})
    generation = int(meta.get("generation", 1))
    try:
        spec = parse_spec(body.get("spec") or {})
    except ValidationError as exc:
        _fail(namespace, name, status, generation, "InvalidSpec", describe_validation_error(exc, "spec"))
        raise kopf.PermanentError(f"invalid spec: {describe_validation_error(exc, 'spec')}") from exc
    if spec.suspend and index is not None:  # first: stopping waits neither on the plan nor on its errors
        suspension.stop_soon(namespace, name, index)
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00")).astimezone(UTC)
    try:
        plan = plan_for(namespace, spec, created)
        _check_templates(spec, plan)
    except PlanError as exc:
        _fail(namespace, name, status, generation, exc.reason, str(exc))
        raise kopf.PermanentError(str(exc)) from exc
    except InputError as exc:
        _fail(namespace, name, status, generation, exc.reason, str(exc))
        kopf.warn(body, reason=exc.reason, message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=30) from exc

    batch_object = naming.batch_object_name(plan.batch)
    client.create_custom(namespace, builders.batch_body(plan.batch, spec.purpose or "", spec.description))
    if meta.get("labels", {}).get(labels.BATCH) != batch_object:
        client.patch_custom("Experiment", namespace, name, {"metadata": {"labels": {labels.BATCH: batch_object}}})

    queue = spec.queue_name or settings().queue_name
    token = f"{meta.get('uid', '')}-{generation}" if spec.force_regenerate else None
    reused: dict[str, tuple[StagePlan, ImportedMatch, ArtifactInfo]] = {}
    if not spec.force_regenerate:
        plan, reused = _reuse_imported(namespace, plan, index)
    generate_paths: dict[str, str] = {}
    hit_points: list[str] = []
    missed_points: list[str] = []
    corrections: list[Correction] = []
    applying = Applying(decides=_exists_checker(namespace), relaunch=relaunch)
    # Generate stages first (training stages need their paths), each wave with a bounded number of creates
    # in flight: a 10,000-point plan neither waits on one round trip at a time nor floods the API server.
    try:
        with concurrent.futures.ThreadPoolExecutor(settings().create_concurrency) as pool:
            for wave in ([p.generate for p in plan.points], [t for p in plan.points for t in p.training]):
                known = {
                    stage.artifact: reused[stage.artifact][2]
                    if stage.artifact in reused
                    else (info_of(index, namespace, stage.artifact) if index is not None else None)
                    for stage in wave
                }
                futures = [
                    pool.submit(
                        _ensure_artifact,
                        namespace,
                        name,
                        spec,
                        stage,
                        plan,
                        generate_paths,
                        known[stage.artifact],
                        queue,
                        token,
                        applying,
                    )
                    for stage in wave
                ]
                results = [future.result() for future in futures]
                for stage, (path, hit, correction) in zip(wave, results, strict=True):
                    if stage.stage not in TRAINING_STAGES:
                        generate_paths[stage.artifact] = path
                        if stage.artifact not in reused:
                            (hit_points if hit else missed_points).append(f"{stage.dataset}/{stage.semantic_name}")
                    if correction is not None:
                        corrections.append(correction)
    except Refused as exc:
        _fail(namespace, name, status, generation, exc.reason, str(exc))
        if exc.reason == "NameClash":
            kopf.warn(body, reason=exc.reason, message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=60) from exc
        raise kopf.PermanentError(str(exc)) from exc
    data_root = settings().volume_root(None)
    if data_root is not None:
        for point in plan.points:
            layout.link_into_batch(data_root, plan.batch, point.dataset, generate_paths[point.generate.artifact])
    if hit_points:
        kopf.info(
            body,
            reason="CacheHit",
            message=f"{len(hit_points)} point(s) reuse data an identical configuration produced: "
            f"{_names(sorted(hit_points))}",
        )
    for planned, match, _ in reused.values():
        kopf.info(
            body,
            reason="CacheHit",
            message=f"point {planned.dataset}/{planned.semantic_name} ({planned.artifact}) reuses imported directory "
            f"{match.path} (Artifact {match.artifact}; matched {', '.join(match.matched)})",
        )
    if missed_points:
        kopf.info(
            body,
            reason="CacheMiss",
            message=f"{len(missed_points)} point(s) need new data: {_names(sorted(missed_points))} "
            f"(`datasweep why {name}` says what differs from the nearest existing data)",
        )
    _announce(body, corrections)
    # What the plan no longer has is no longer consumed (a smaller grid): conditional, idempotent, on every run
    plan_artifacts = frozenset(stage.artifact for stage in plan.stages)
    left = consumption.release_left(namespace, name, plan_artifacts, batch_object, index) if index is not None else []
    if left:
        kopf.info(
            body,
            reason="LeftPlan",
            message=f"{len(left)} Artifact(s) left the plan and are no longer consumed by this Experiment (their "
            f"data is kept; one still running for no other Experiment is stopped): {_names(left)}",
        )
    conditions = [c for c in status.get("conditions", []) if c.get("type") != "Failed"]
    conditions = set_condition(
        conditions, "Planned", True, "Planned", f"{len(plan.points)} points, {len(plan.stages)} stages", generation
    )
    conditions = _suspended_condition(conditions, spec.suspend, name, generation)
    counts = {"points": len(plan.points), "artifacts": len(plan.stages)}
    client.patch_status(
        "Experiment",
        namespace,
        name,
        {
            "observedGeneration": generation,
            "batch": plan.batch,
            "batchName": naming.batch_object_name(plan.batch),
            "counts": counts,
            "conditions": conditions,
            "planned": {
                "artifacts": len(plan_artifacts),
                "digest": labels.plan_digest(plan_artifacts),
                "generation": generation,
            },
        },
    )
    logger.info("planned %d points in %s", len(plan.points), plan.batch)
    if not spec.suspend and index is not None:  # resumed, or a new consumer of a suspended Artifact
        suspension.converge(namespace, name, False, index, also=[stage.artifact for stage in plan.stages])
    state = aggregate.aggregator()
    if state is not None:  # from now on its status is aggregated from the index (aggregate.py)
        state.plan(
            namespace,
            name,
            aggregate.Planned(
                points=len(plan.points),
                stages=1 + (len(plan.points[0].training) if plan.points else 0),
                generate=frozenset(p.generate.artifact for p in plan.points),
                artifacts=frozenset(s.artifact for s in plan.stages),
                batch_object=batch_object,
                generation=generation,
                conditions=conditions,
                objective=(spec.objective.stage, spec.objective.metric, spec.objective.goal)
                if spec.objective
                else None,
                candidates=plan.stage_artifacts(spec.objective.stage) if spec.objective else {},
                point_stages={p.generate.artifact: len(p.stages) for p in plan.points},
            ),
        )


def _exists_checker(namespace: str) -> Callable[[str], bool]:
    """Whether an Experiment exists and is not being deleted: read once per reconcile and name."""

    @functools.cache
    def exists(experiment: str) -> bool:
        found = client.get_custom("Experiment", namespace, experiment)
        return found is not None and not found["metadata"].get("deletionTimestamp")

    return exists


def _names(items: list[str], limit: int = 5) -> str:
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def _announce(body: kopf.Body, corrections: list[Correction]) -> None:
    """One Event per kind of answer, not one per Artifact (a 10,000-point sweep)."""
    updated = [c for c in corrections if c.decided_by is None]
    if updated:
        relaunched = [c.artifact for c in updated if c.relaunched]
        fields = sorted({f for c in updated for f in c.fields})
        kopf.info(
            body,
            reason="DetailsUpdated",
            message=f"{len(updated)} Artifact(s) not Ready take the worker details applied now ({', '.join(fields)}): "
            f"{_names([c.artifact for c in updated])}"
            + (f"; {len(relaunched)} Failed relaunched: {_names(relaunched)}" if relaunched else ""),
        )
    kept: dict[str, list[Correction]] = {}
    for correction in corrections:
        if correction.decided_by is not None:
            kept.setdefault(correction.decided_by, []).append(correction)
    for decider, items in kept.items():
        fields = sorted({f for c in items for f in c.fields})
        kopf.warn(
            body,
            reason="DetailsConflict",
            message=f"{len(items)} shared Artifact(s) keep the worker details of Experiment {decider}, which decides "
            f"them while it exists ({', '.join(fields)} differ from this Experiment's): "
            f"{_names([c.artifact for c in items])}. Correct Experiment {decider} (kubectl apply), or delete it and "
            "apply this one again",
        )


def _suspended_condition(
    conditions: list[dict[str, Any]], suspended: bool, name: str, generation: int
) -> list[dict[str, Any]]:
    """The Suspended condition (as JobSet has it) while spec.suspend is true, and False once resumed."""
    if suspended:
        message = (
            "spec.suspend is true: no Job starts for this Experiment, and the Jobs of its Artifacts that no running "
            f"Experiment consumes are suspended; resume: datasweep resume {name} (or spec.suspend: false)"
        )
        return set_condition(conditions, "Suspended", True, "Suspended", message, generation)
    if any(c.get("type") == "Suspended" for c in conditions):
        return set_condition(conditions, "Suspended", False, "Resumed", "spec.suspend is false", generation)
    return conditions


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


def _check_same_artifact(stage: StagePlan, fingerprint: str, kind: str) -> None:
    """409 means reuse only when the existing Artifact is the planned one: same fingerprint and stage.

    Anyone allowed to create Artifacts could otherwise make one under a planned name pointing at other data
    and have this Experiment report it Succeeded (cache poisoning); docs/deploy.md says who may create them.
    """
    if fingerprint == stage.fingerprint and kind == stage.stage:
        return
    raise Refused(
        "NameClash",
        f"Artifact {stage.artifact} exists with fingerprint {fingerprint} (stage {kind}), "
        f"but this Experiment plans fingerprint {stage.fingerprint} (stage {stage.stage}) under that name; it is "
        f"not reused. Delete that Artifact if it was made by hand (kubectl delete artifact {stage.artifact}); "
        "this Experiment retries",
    )


def retry_failed(namespace: str, experiment: str, token: str, index: kopf.Index[Any, Any]) -> tuple[list[str], int]:
    """Put the retry annotation on every failed Artifact `experiment` consumes (what `datasweep retry` asks for):
    conditional on the resourceVersion the index has, so one that left Failed meanwhile is not marked for later.
    Returns the retried names and how many failed for an input (they start again once it is Ready)."""
    retried, waiting = [], 0
    for artifact in sorted(set(lookup(index, ("exp", namespace, experiment)))):
        info = info_of(index, namespace, artifact)
        version = info.resource_version if info is not None else None
        for _ in range(5):
            if info is None or info.phase != "Failed" or info.imported:
                break
            if (info.failure or ("",))[0] == "InputFailed":
                waiting += 1
                break
            patch = {"metadata": {"resourceVersion": version, "annotations": {labels.RETRY: token}}}
            try:
                client.patch_custom("Artifact", namespace, artifact, patch)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                body = client.get_custom("Artifact", namespace, artifact) if exc.status == 409 else None
                info = artifact_info(artifact, body) if body is not None else None
                version = info.resource_version if info is not None else None
                continue
            retried.append(artifact)
            break
    return retried, waiting


@kopf.on.update(*EXPERIMENTS, field="metadata.annotations")
def experiment_retry(
    namespace: str | None, name: str, old: Any, new: Any, body: kopf.Body, logger: kopf.Logger, **kwargs: Any
) -> None:
    """The annotation datasweep.io/retry on an Experiment retries all its failed points at once (`datasweep retry`):
    researchers may patch Experiments, not Artifacts (docs/deploy.md)."""
    token = (new or {}).get(labels.RETRY)
    if namespace is None or not token or token == (old or {}).get(labels.RETRY):
        return
    retried, waiting = retry_failed(namespace, name, str(token), kwargs["artifact_index"])
    message = f"{len(retried)} failed Artifact(s) retried ({labels.RETRY}={token})" + (
        f": {_names(retried)}" if retried else ""
    )
    if waiting:
        message += f"; {waiting} failed for an input and start again once it is Ready"
    kopf.info(body, reason="Retry", message=message)
    logger.info(message)


@kopf.on.resume(*EXPERIMENTS)
@kopf.on.create(*EXPERIMENTS)
@kopf.on.update(*EXPERIMENTS, field="spec")
def experiment_changed(namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    assert namespace is not None
    reconcile(namespace, name, body, logger, kwargs["artifact_index"], relaunch=kwargs.get("reason") != "resume")
