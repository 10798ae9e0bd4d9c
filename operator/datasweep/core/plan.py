"""Grid planning: an Experiment spec -> points -> one stage plan per (point, stage), fingerprinted. Pure."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel

from datasweep.api._base import format_location
from datasweep.api.common import ModelRef, Resources
from datasweep.api.experiment import GRID_AXES, SINGLE_GPU_KINDS, ExperimentSpec
from datasweep.api.stage_params import (
    StageParamsError,
    axis_refusal,
    list_fields,
    params_model,
    result_params,
    validate_params,
)
from datasweep.core import naming
from datasweep.core.fingerprint import canonicalize, fingerprint, short, text_sha256
from datasweep.recipes import recipe_version

# Experiment fields (dotted paths in spec) that never reach a fingerprint, each with the reason (SPEC 2: "never
# in a fingerprint"). Every other field does; `generation.options` and `training.params` are stage params,
# classified by each stage's OPERATIONAL_FIELDS. tests/unit/core/test_fingerprint_coverage.py checks both.
SPEC_OPERATIONAL_FIELDS: dict[str, str] = {
    "batch": "a view that groups experiments",
    "purpose": "names the default batch",
    "description": "words for humans",
    "parallelism": "how many Jobs run at once",
    "queue_name": "which Kueue queue admits the Jobs",
    "max_points": "a guard on the grid size",
    "retries": "how often a failed Job is retried",
    "force_regenerate": "makes a fresh Artifact for the same fingerprint (SPEC 2)",
    "suspend": "stops and resumes the Jobs; what they produce is the same",
    "search.algorithm": "chooses which combinations are planned; each one's result is the same",
    "search.samples": "chooses which combinations are planned; each one's result is the same",
    "search.seed": "chooses which combinations are planned; each one's result is the same",
    "objective.stage": "ranks what the stages produced (status.best); it changes none of it",
    "objective.metric": "ranks what the stages produced (status.best); it changes none of it",
    "objective.goal": "ranks what the stages produced (status.best); it changes none of it",
    "datasets.source": "where the files are; their content hash is fingerprinted",
    "datasets.sha256": "the content hash given by hand; the hash itself is fingerprinted",
    "generation.api_key_secret": "the credential",
    "generation.prompt.config_map_key_ref": "where the prompt is read from; the text's hash is fingerprinted",
    "validation.prompt.config_map_key_ref": "where the prompt is read from; the text's hash is fingerprinted",
    "training.name": "a label; the kind, base model and params decide the result",
    "training.resources": "GPUs, nodes, CPU and memory run the same global batch",
    "training.launcher": "how the pods are started",
}


class PlanError(ValueError):
    """A spec the planner cannot expand; the message names the field and the fix."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PlanInputs:
    """What the planner needs from the outside world (read by the caller, passed in).

    Prompts given here (read from a ConfigMap) win over the spec's inline `prompt.text`.
    """

    dataset_sha256: dict[str, str]
    generation_prompt: str | None = None
    validation_prompt: str | None = None
    created: datetime | None = None


@dataclass(frozen=True)
class StagePlan:
    stage: str  # generate | dataset | fomaml | moe-steer | qa
    name: str  # "generate" (the point's data stage, generate or dataset) or the training entry's name
    dataset: str
    semantic_name: str
    fingerprint: str
    artifact: str
    params: dict[str, Any]  # effective parameters for the worker (defaults filled in)
    canonical: dict[str, Any]  # what the fingerprint hashes
    inputs: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    base_model: ModelRef | None = None
    launcher: str = "job"
    # A training stage's own grid values (its params given as lists), empty when it sweeps nothing
    values: dict[str, Any] = field(default_factory=dict)
    training_index: int = -1  # the index of its entry in spec.training (-1: the point's data stage)

    @property
    def short_fingerprint(self) -> str:
        return short(self.fingerprint)

    @property
    def label(self) -> str:
        """The stage's name, with its combination when it sweeps: `squad(lr3e-5_ep2)`."""
        return f"{self.name}({naming.axis_tags(self.values)})" if self.values else self.name


@dataclass(frozen=True)
class Point:
    dataset: str
    values: dict[str, Any]  # the grid values of this point
    generate: StagePlan
    training: tuple[StagePlan, ...]  # one per (training entry, combination of its own grid), in spec order

    @property
    def stages(self) -> tuple[StagePlan, ...]:
        return (self.generate, *self.training)


@dataclass(frozen=True)
class SearchSample:
    """spec.search's draw: `taken` of the `total` combinations of the full grid (generation point x one
    combination of every training stage's own grid), as the points and stage combinations they plan."""

    total: int
    taken: int
    seed: int
    samples: int  # as asked: more than `total` plans the whole grid
    points: frozenset[str]  # _point_key of each sampled generation point
    combinations: frozenset[str]  # _combination_key of each sampled (point, stage, combination)


@dataclass(frozen=True)
class Plan:
    batch: str
    points: tuple[Point, ...]
    search: SearchSample | None = None

    @property
    def stages(self) -> tuple[StagePlan, ...]:
        return tuple(stage for point in self.points for stage in point.stages)

    @property
    def search_note(self) -> str:
        """What spec.search planned, in words (empty without it)."""
        if self.search is None:
            return ""
        note = f"random search: {self.search.taken} of {self.search.total} combinations (seed {self.search.seed})"
        if self.search.samples > self.search.total:
            note += f"; samples={self.search.samples} is more than the grid, so the whole grid is planned"
        return note

    def stage_artifacts(self, stage_name: str) -> dict[str, dict[str, Any]]:
        """The Artifacts of one training stage, each with the values that tell it apart from the others: the
        dataset when there are several, the generation axes that vary, and the stage's own swept values."""
        rows = [(point, stage) for point in self.points for stage in point.training if stage.name == stage_name]
        datasets = {point.dataset for point, _ in rows}
        keys = dict.fromkeys(key for point, _ in rows for key in point.values)
        varying = [key for key in keys if len({json.dumps(p.values.get(key), default=str) for p, _ in rows}) > 1]
        found: dict[str, dict[str, Any]] = {}
        for point, stage in rows:
            values: dict[str, Any] = {"dataset": point.dataset} if len(datasets) > 1 else {}
            values.update({key: point.values.get(key) for key in varying})
            found.setdefault(stage.artifact, {**values, **stage.values})
        return found


def _axis_values(spec: ExperimentSpec, axis: str) -> list[Any]:
    value = getattr(spec.generation, axis)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise PlanError(
            f"spec.generation.{naming_alias(axis)}: the list is empty; give at least one value", "EmptyGrid"
        )
    return list(dict.fromkeys(values))  # duplicates in a list are one point


def naming_alias(axis: str) -> str:
    head, *rest = axis.split("_")
    return head + "".join(word.capitalize() for word in rest)


def cross_product(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values (the one grid expansion: generation and training)."""
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def grid(spec: ExperimentSpec) -> list[dict[str, Any]]:
    return cross_product({axis: _axis_values(spec, axis) for axis in GRID_AXES})


def grid_size(spec: ExperimentSpec) -> int:
    """The number of combinations, from the axis lengths alone: a huge grid is refused before it is expanded."""
    return math.prod(len(_axis_values(spec, axis)) for axis in GRID_AXES)


def _distinct(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for value in values:  # values may be unhashable (the params model then refuses them with its message)
        seen.setdefault(json.dumps(value, sort_keys=True, default=str), value)
    return list(seen.values())


def training_axes(spec: ExperimentSpec, index: int) -> dict[str, list[Any]]:
    """The params of spec.training[index] given as lists of values: the stage's own grid axes, in params order.

    A param whose value is itself a list (fomaml `tasks`) is one value. A field that cannot be an axis is refused
    with the reason (it names a part of the records, or it never changes the result).
    """
    entry = spec.training[index]
    listed = list_fields(entry.kind)
    axes: dict[str, list[Any]] = {}
    for key, value in entry.params.items():
        if not isinstance(value, list) or key in listed:
            continue
        where = f"spec.training[{index}].params.{key}"
        reason = axis_refusal(entry.kind, key) if key in params_fields(entry.kind) else None
        if reason is not None:
            raise PlanError(f"{where}: cannot be a list of values ({reason}); give one value", "InvalidAxis")
        if not value:
            raise PlanError(f"{where}: the list is empty; give at least one value", "EmptyGrid")
        axes[key] = _distinct(value)
    return axes


def training_grid_size(spec: ExperimentSpec, index: int) -> int:
    """Combinations of spec.training[index]'s own grid (1 when it sweeps nothing), from the axis lengths alone."""
    return math.prod(len(values) for values in training_axes(spec, index).values())


def _point_key(dataset: str, values: Mapping[str, Any]) -> str:
    return json.dumps([dataset, values], sort_keys=True, default=str)


def _combination_key(dataset: str, values: Mapping[str, Any], stage: str, combination: Mapping[str, Any]) -> str:
    return json.dumps([dataset, values, stage, combination], sort_keys=True, default=str)


def _canonical_axes(axes: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Axes and their values in one order whatever the spec's order: a re-ordered YAML samples the same."""
    return {name: sorted(axes[name], key=lambda v: json.dumps(v, sort_keys=True, default=str)) for name in sorted(axes)}


def _decode(index: int, axes: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The index-th combination of the axes' cross product (mixed radix), without expanding the product."""
    values: dict[str, Any] = {}
    for name, choices in axes.items():
        index, position = divmod(index, len(choices))
        values[name] = choices[position]
    return values


def _draw(total: int, samples: int, seed: int) -> list[int]:
    """`samples` distinct indices below `total`, from the seed alone (sha256, not Python's random or hash(): the
    same on every Python version and process)."""
    if samples >= total:
        return list(range(total))
    chosen: dict[int, None] = {}
    counter = 0
    while len(chosen) < samples:
        digest = hashlib.sha256(f"datasweep-search:{seed}:{counter}".encode()).digest()
        chosen.setdefault(int.from_bytes(digest, "big") % total)
        counter += 1
    return list(chosen)


def search_sample(spec: ExperimentSpec) -> SearchSample | None:
    """The one place spec.search samples: over the full cross product of every axis (Katib's trials): the
    datasets' generation points x one combination of each training stage's own grid. A sampled combination
    plans its point's data stage and one Artifact per stage; combinations that share them plan them once."""
    if spec.search is None:
        return None
    prepared = sorted(d.name for d in spec.datasets if d.prepared)
    generated = sorted(d.name for d in spec.datasets if not d.prepared)
    generation_axes = _canonical_axes({axis: _axis_values(spec, axis) for axis in GRID_AXES}) if generated else {}
    per_dataset = math.prod(len(values) for values in generation_axes.values())
    points = len(prepared) + len(generated) * per_dataset
    stages = sorted(spec.training, key=lambda entry: entry.name)
    stage_axes = [_canonical_axes(training_axes(spec, spec.training.index(entry))) for entry in stages]
    total = points * math.prod(math.prod(len(v) for v in axes.values()) for axes in stage_axes)
    picked_points: set[str] = set()
    picked: set[str] = set()
    for index in _draw(total, spec.search.samples, spec.search.seed):
        index, point = divmod(index, points)
        if point < len(prepared):
            dataset, values = prepared[point], {}
        else:
            which, combination = divmod(point - len(prepared), per_dataset)
            dataset, values = generated[which], _decode(combination, generation_axes)
        picked_points.add(_point_key(dataset, values))
        for entry, axes in zip(stages, stage_axes, strict=True):
            size = math.prod(len(v) for v in axes.values())
            index, combination = divmod(index, size)
            picked.add(_combination_key(dataset, values, entry.name, _decode(combination, axes)))
    return SearchSample(
        total=total,
        taken=min(spec.search.samples, total),
        seed=spec.search.seed,
        samples=spec.search.samples,
        points=frozenset(picked_points),
        combinations=frozenset(picked),
    )


def params_fields(kind: str) -> frozenset[str]:
    return frozenset(params_model(kind).model_fields)


# Longest file name on common filesystems (ext4, xfs, NFS), in bytes.
MAX_NAME_BYTES = 255
# A generate directory may be `<semantic>_<64-hex fingerprint>` on a name clash (store.layout).
_CLASH_SUFFIX = 65


def _check_directory_name(semantic: str, model: str) -> None:
    size = len(semantic.encode()) + _CLASH_SUFFIX
    if size > MAX_NAME_BYTES:
        raise PlanError(
            f"spec.generation.model: {model[:60]!r}... makes the directory name {semantic[:40]}... "
            f"{size} bytes long (with its fingerprint suffix), over the {MAX_NAME_BYTES}-byte file name limit; "
            "use a shorter model name (a local model's directory goes in spec.generation.modelPath)",
            "NameTooLong",
        )


def _generate_params(spec: ExperimentSpec, values: dict[str, Any], inputs: PlanInputs) -> dict[str, Any]:
    generation = spec.generation
    params: dict[str, Any] = {
        **generation.options,
        "task": generation.task,
        "backend": generation.backend,
        "base_url": generation.base_url,
        "cache_version": spec.cache_version,
        **values,
    }
    prompt = inputs.generation_prompt if inputs.generation_prompt is not None else generation.prompt.text
    if prompt is not None:
        params["prompt"] = prompt
    if spec.validation is None:
        params["validation"] = None
    else:
        options_validation = generation.options.get("validation")
        validation: dict[str, Any] = {
            # further judge settings (top_p, max_tokens) may come through options
            **(options_validation if isinstance(options_validation, dict) else {}),
            "model": spec.validation.model,
            "temperature": spec.validation.temperature,
        }
        judge_prompt = inputs.validation_prompt if inputs.validation_prompt is not None else spec.validation.prompt.text
        if judge_prompt is not None:
            validation["prompt"] = judge_prompt
        params["validation"] = validation
    return params


_SPEC_SPELLING = {"base_url": "baseURL"}


def generation_location(spec: ExperimentSpec, loc: Sequence[int | str]) -> str:
    """Where a generate-params error sits in the Experiment as written: `spec.generation.options.concurrency`
    for a key from `options`, `spec.validation.temperature`, `spec.generation.topP` for a grid axis."""
    if not loc:
        return "spec.generation"
    first, rest = str(loc[0]), loc[1:]
    if first == "validation":
        return format_location(rest, "spec.validation")
    if first in spec.generation.options:
        return format_location(rest, f"spec.generation.options.{first}")
    return format_location(rest, f"spec.generation.{_SPEC_SPELLING.get(first, to_camel(first))}")


def _model_identity(ref: ModelRef) -> dict[str, Any]:
    return {"pvc": ref.pvc, "path": ref.path, "hub_id": ref.hub_id}


def plan_experiment(spec: ExperimentSpec, inputs: PlanInputs, max_points: int | None = None) -> Plan:
    """Expand the grid over every dataset and fingerprint every stage of every point."""
    if spec.batch:
        batch = spec.batch
    else:
        if inputs.created is None or spec.purpose is None:
            raise PlanError("spec.batch: no batch given and no purpose/creation time to derive it from")
        batch = naming.default_batch(spec.purpose, inputs.created)
    generated = [d for d in spec.datasets if not d.prepared]
    limit = max_points if max_points is not None else spec.max_points
    combinations = grid_size(spec) if generated else 0  # from the axis lengths: nothing expanded yet
    points_count = combinations * len(generated) + len(spec.datasets) - len(generated)
    trainings = [training_grid_size(spec, index) for index in range(len(spec.training))]
    per_point = 1 + sum(trainings)
    total = points_count * per_point
    sample = search_sample(spec)
    if sample is not None:
        total = len(sample.points) + len(sample.combinations)
    if total > limit:
        made = f"{points_count} points ({len(generated)} datasets x {combinations} combinations"
        made += f" + {len(spec.datasets) - len(generated)} prepared)" if len(generated) < len(spec.datasets) else ")"
        if trainings:
            stages = " + ".join(str(n) for n in trainings)
            made += f" x (1 data stage + {stages} training combinations)"
        if sample is not None:
            made = (
                f"random search: {sample.taken} of {sample.total} combinations (seed {sample.seed}) plan "
                f"{len(sample.points)} points and {len(sample.combinations)} training Artifacts"
            )
        raise PlanError(
            f"spec.maxPoints: the grid makes {total} Artifacts: {made}, more than maxPoints={limit} (maxPoints "
            "counts every Artifact the grid makes, training ones included); shrink the grid or raise spec.maxPoints",
            "TooManyPoints",
        )
    combos = grid(spec) if generated else []
    stage_grids = [cross_product(training_axes(spec, index)) for index in range(len(spec.training))]
    points = []
    for dataset in spec.datasets:
        dataset_hash = inputs.dataset_sha256.get(dataset.name)
        if dataset_hash is None:
            raise PlanError(f"spec.datasets[{dataset.name}]: its content hash is unknown", "DatasetUnavailable")
        for values in [{}] if dataset.prepared else combos:
            if sample is not None and _point_key(dataset.name, values) not in sample.points:
                continue
            if dataset.prepared:
                data = _plan_dataset(spec, dataset.name, dataset_hash)
            else:
                data = _plan_generate(spec, dataset.name, dataset_hash, values, inputs)
            grids = stage_grids
            if sample is not None:
                grids = [
                    [c for c in grid if _combination_key(dataset.name, values, entry.name, c) in sample.combinations]
                    for entry, grid in zip(spec.training, stage_grids, strict=True)
                ]
            training = _plan_trainings(spec, grids, data)
            points.append(Point(dataset=dataset.name, values=values, generate=data, training=training))
    return Plan(batch=batch, points=tuple(points), search=sample)


def _plan_generate(
    spec: ExperimentSpec, dataset: str, dataset_hash: str, values: dict[str, Any], inputs: PlanInputs
) -> StagePlan:
    params = _generate_params(spec, values, inputs)
    try:
        model = validate_params(
            "generate",
            params,
            "spec.generation",
            locate=lambda loc: generation_location(spec, loc),
        )
    except StageParamsError as exc:
        raise PlanError(str(exc)) from exc
    # the worker gets the strings the fingerprint hashed (NFC): an NFD prompt is sent as its NFC form
    effective = canonicalize(model.model_dump(mode="json"))
    canonical = result_params("generate", model)
    if effective["task"] != "code-scenarios" or (
        effective["max_scenario1"] is None and effective["max_scenario2"] is None
    ):
        # it cannot change the data here; left out so that fingerprints from before it existed stay valid
        del canonical["caps_per_split"]
    canonical["prompt"] = text_sha256(canonical.get("prompt"))
    for key in ("scenario2_prompt", "system_prompt"):
        if key in canonical:
            canonical[key] = text_sha256(canonical[key])
    if isinstance(canonical.get("validation"), dict):
        canonical["validation"]["prompt"] = text_sha256(canonical["validation"].get("prompt"))
    canonical = {
        "stage": "generate",
        "recipe": recipe_version("generate"),
        "dataset": {"name": dataset, "sha256": dataset_hash},
        "params": canonical,
        "cache_version": spec.cache_version,
    }
    if spec.generation.model_path is not None:
        # the local model (transformers backend) is what generates; left out when unset so that the
        # fingerprints of API-generated data stay what they were
        canonical["base_model"] = _model_identity(spec.generation.model_path)
    full = fingerprint(canonical)
    semantic = naming.semantic_name(
        effective["model"],
        effective["temperature"],
        effective["top_p"],
        max_tokens=effective["max_tokens"],
        frequency_penalty=effective["frequency_penalty"],
        presence_penalty=effective["presence_penalty"],
    )
    _check_directory_name(semantic, effective["model"])
    return StagePlan(
        stage="generate",
        name="generate",
        dataset=dataset,
        semantic_name=semantic,
        fingerprint=full,
        artifact=naming.artifact_name(dataset, semantic, short(full)),
        params=effective,
        canonical=canonical,
        base_model=spec.generation.model_path,
    )


PREPARED_SEMANTIC = "prepared"


def _plan_dataset(spec: ExperimentSpec, dataset: str, dataset_hash: str) -> StagePlan:
    """A prepared dataset's point: a `dataset` stage snapshots the records into the shared layout (no
    generation), so training, reuse and batch views work exactly as after a generate stage."""
    canonical = {
        "stage": "dataset",
        "recipe": recipe_version("dataset"),
        "dataset": {"name": dataset, "sha256": dataset_hash},
        "cache_version": spec.cache_version,
    }
    full = fingerprint(canonical)
    return StagePlan(
        stage="dataset",
        name="generate",  # the point's data stage, whichever kind: status and batch views key it so
        dataset=dataset,
        semantic_name=PREPARED_SEMANTIC,
        fingerprint=full,
        artifact=naming.artifact_name(dataset, PREPARED_SEMANTIC, short(full)),
        params={},
        canonical=canonical,
    )


def _plan_trainings(
    spec: ExperimentSpec, stage_grids: list[list[dict[str, Any]]], generate: StagePlan
) -> tuple[StagePlan, ...]:
    """One training plan per (entry, combination of its own grid); values that fingerprint alike are one."""
    planned: dict[str, StagePlan] = {}
    for index, combinations in enumerate(stage_grids):
        for values in combinations:
            stage = _plan_training(spec, index, generate, values)
            planned.setdefault(stage.fingerprint, stage)
    return tuple(planned.values())


def _plan_training(spec: ExperimentSpec, index: int, generate: StagePlan, values: dict[str, Any]) -> StagePlan:
    entry = spec.training[index]
    resources = entry.resources
    if entry.kind in SINGLE_GPU_KINDS and (resources.gpus > 1 or resources.nodes > 1):
        field = "gpus" if resources.gpus > 1 else "nodes"
        raise PlanError(
            f"spec.training[{index}].resources.{field}: {entry.kind} runs as one process on one GPU (it is not "
            f"rank-aware, several ranks would write the same files); set gpus: 1 and nodes: 1. Only fomaml "
            "trains on several GPUs or nodes",
            "UnsupportedResources",
        )
    if entry.launcher != "job":
        raise PlanError(
            f"spec.training[{index}].launcher: {entry.launcher!r} is not supported by this version; use 'job' "
            "(an Indexed Job with torchrun when nodes > 1)",
            "UnsupportedLauncher",
        )
    where = f"spec.training[{index}].params"

    def locate(loc: Sequence[int | str]) -> str:
        # a bad value of a swept param is named by its place in the user's list: `learning_rate[1]`
        if loc and loc[0] in values and isinstance(entry.params.get(str(loc[0])), list):
            position = entry.params[str(loc[0])].index(values[str(loc[0])])
            return format_location([loc[0], position, *loc[1:]], where)
        return format_location(loc, where)

    try:
        model = validate_params(entry.kind, {**entry.params, **values}, where, locate)
    except StageParamsError as exc:
        raise PlanError(str(exc)) from exc
    canonical = {
        "stage": entry.kind,
        "recipe": recipe_version(entry.kind),
        "params": result_params(entry.kind, model),
        "base_model": _model_identity(entry.base_model),
        "inputs": [generate.fingerprint],
        "cache_version": spec.cache_version,
    }
    full = fingerprint(canonical)
    # the swept values, for people; the Artifact name stays a function of the params alone (dataset, data,
    # stage, fingerprint) so that Experiments sweeping different params share an Artifact by its name
    semantic = f"{generate.semantic_name}_{naming.axis_tags(values)}" if values else generate.semantic_name
    return StagePlan(
        stage=entry.kind,
        name=entry.name,
        dataset=generate.dataset,
        semantic_name=semantic,
        fingerprint=full,
        artifact=naming.artifact_name(generate.dataset, generate.semantic_name, short(full), stage=entry.kind),
        params=canonicalize(model.model_dump(mode="json")),
        canonical=canonical,
        inputs=(generate.artifact,),
        resources=entry.resources,
        base_model=entry.base_model,
        launcher=entry.launcher,
        values=values,
        training_index=index,
    )
