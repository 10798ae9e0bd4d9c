"""Reading an Experiment file for a local run or plan: the object, its datasets, prompts and model paths."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datasweep import API_VERSION
from datasweep.api import kube_yaml
from datasweep.api._base import describe_validation_error
from datasweep.api.common import DNS_SUBDOMAIN, ModelRef, PromptSource
from datasweep.api.experiment import ExperimentSpec, parse_spec
from datasweep.api.worker import TRAINING_STAGES
from datasweep.core.memory import StageMemory, UnknownModel, plan_memory, read_model_config
from datasweep.core.plan import Plan, PlanError, PlanInputs, StagePlan, plan_experiment
from datasweep.core.shape import check_shapes, check_task_files
from datasweep.core.templates import template_problems
from datasweep.store.layout import DatasetFiles, LayoutError, dataset_files, sample_records, split_samples
from datasweep.store.records import RECORD_SUFFIXES

MODEL_CONFIG = "config.json"


class ExperimentFileError(ValueError):
    """A file or setting the local tools cannot use: exit code 2, the message names the file/field and the fix."""


@dataclass(frozen=True)
class LocalExperiment:
    path: Path
    name: str
    spec: ExperimentSpec
    data_dir: Path
    datasets: dict[str, DatasetFiles]
    generation_prompt: str | None
    validation_prompt: str | None
    notes: tuple[str, ...] = ()
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def plan(self, max_points: int | None = None) -> Plan:
        inputs = PlanInputs(
            dataset_sha256={name: files.sha256 for name, files in self.datasets.items()},
            generation_prompt=self.generation_prompt,
            validation_prompt=self.validation_prompt,
            created=self.created,
        )
        try:
            plan = plan_experiment(self.spec, inputs, max_points=max_points)
        except PlanError as exc:
            raise ExperimentFileError(f"{self.path}: {exc}") from exc
        samples = {name: split_samples(files) for name, files in self.datasets.items()}
        missing = check_task_files(plan, {name: files.relative_files() for name, files in self.datasets.items()})
        if missing:
            raise ExperimentFileError(
                f"{self.path}: files the stages name are missing (nothing was run):\n  " + "\n  ".join(missing)
            )
        problems = check_shapes(plan, samples)
        if problems:
            raise ExperimentFileError(
                f"{self.path}: the records lack fields the stages need (nothing was run):\n  " + "\n  ".join(problems)
            )
        # Every prompt template against each dataset's first records, as the operator does before any Job.
        templates: list[str] = []
        for point in {point.dataset: point for point in plan.points}.values():
            if point.generate.stage == "generate":
                records = sample_records(self.datasets[point.dataset].files)
                templates += template_problems(point.generate.params, records)
        if templates:
            raise ExperimentFileError(f"{self.path}: " + "; ".join(dict.fromkeys(templates)))
        _, too_big = self.memory(plan)
        if too_big:  # before anything is generated or paid for
            raise ExperimentFileError(
                f"{self.path}: a training stage cannot fit its GPU (nothing was run):\n  " + "\n  ".join(too_big)
            )
        return plan

    def memory(self, plan: Plan) -> tuple[dict[str, StageMemory], list[str]]:
        """Each training stage's GPU memory estimate (by Artifact name) and the refusals (datasweep.core.memory)."""

        def config_of(stage: StagePlan) -> dict[str, Any] | None:
            ref = stage.base_model
            if ref is None or not ref.path:
                return None
            try:
                return read_model_config((self.data_dir / ref.path).resolve())
            except UnknownModel as exc:
                raise ExperimentFileError(
                    f"{self.path}: spec.training[{stage.training_index}].baseModel: {exc}"
                ) from exc

        return plan_memory(plan, config_of)

    def model_dir(self, ref: ModelRef | None, where: str) -> str | None:
        """A model reference as a local directory (relative to --data-dir), or its hub id."""
        if ref is None:
            return None
        if ref.path:
            # `..` and absolute paths are refused by the schema; a symlinked model directory is fine on one's
            # own machine (tiny or shared models often live elsewhere), unlike on the cluster's volume.
            directory = (self.data_dir / ref.path).resolve()
            if not directory.is_dir():
                raise ExperimentFileError(
                    f"{self.path}: {where}.path: {directory} is not a directory; "
                    f"model paths are resolved relative to --data-dir ({self.data_dir})"
                )
            if not (directory / MODEL_CONFIG).is_file():  # what every worker's from_pretrained reads first
                found = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))[:10]
                raise ExperimentFileError(
                    f"{self.path}: {where}.path: {directory} holds no {MODEL_CONFIG}, so it is not a saved model "
                    f"(found: {', '.join(found) or 'nothing'}); point it at the directory save_pretrained wrote"
                )
            return str(directory)
        return ref.hub_id

    def stage_model_dir(self, stage: StagePlan) -> str | None:
        """The model a stage's worker loads (local directory or hub id), as its worker spec names it."""
        if stage.stage == "generate":
            return self.model_dir(stage.base_model, "spec.generation.modelPath")
        if stage.stage not in TRAINING_STAGES:
            return None  # the dataset stage copies records, it has no model
        return self.model_dir(stage.base_model, f"spec.training[{stage.training_index}].baseModel")


def read_experiment_object(path: Path) -> tuple[str, dict[str, Any]]:
    """The (name, raw spec) of an Experiment file; anything else is refused with what was found."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ExperimentFileError(f"{path}: no such file") from exc
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ExperimentFileError(f"{path}: not a readable YAML file ({exc})") from exc
    try:
        documents = [doc for doc in kube_yaml.load_all(text) if doc is not None]  # YAML as kubectl reads it
    except kube_yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ExperimentFileError(f"{where}: not valid YAML: {problem}") from exc
    experiments = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "Experiment"]
    if not experiments:
        kinds = ", ".join(str(doc.get("kind")) if isinstance(doc, dict) else type(doc).__name__ for doc in documents)
        raise ExperimentFileError(
            f"{path}: not an Experiment (found: {kinds or 'an empty file'}); an experiment file is "
            f"`apiVersion: {API_VERSION}`, `kind: Experiment`, `metadata: {{name: ...}}`, `spec: {{...}}`"
        )
    if len(experiments) > 1:
        raise ExperimentFileError(f"{path}: {len(experiments)} Experiments in one file; run them one at a time")
    obj = experiments[0]
    if obj.get("apiVersion") != API_VERSION:
        raise ExperimentFileError(f"{path}: apiVersion is {obj.get('apiVersion')!r}; use {API_VERSION}")
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise ExperimentFileError(f"{path}: metadata.name is missing; give the Experiment a name")
    if len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN, name):
        # the API server's rule for every object name: the same file must not pass here and fail on the cluster
        fixed = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:253] or "my-experiment"
        raise ExperimentFileError(
            f"{path}: metadata.name: {name!r} is not a valid Kubernetes object name (the cluster refuses it): use "
            f"lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 "
            f"characters, e.g. {fixed}"
        )
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ExperimentFileError(f"{path}: spec is missing or not a mapping")
    return name, spec


def parse_prompt_files(values: tuple[str, ...]) -> dict[str, Path]:
    """`--prompt-file FILE` (generation) or `--prompt-file generation=FILE` / `validation=FILE`."""
    result: dict[str, Path] = {}
    for value in values:
        role, sep, file_name = value.partition("=")
        if not sep:
            role, file_name = "generation", value
        if role not in ("generation", "validation"):
            raise ExperimentFileError(
                f"--prompt-file {value}: the role must be generation or validation, e.g. validation=judge.txt"
            )
        path = Path(file_name)
        if not path.is_file():
            raise ExperimentFileError(f"--prompt-file {value}: {path} is not a file")
        result[role] = path
    return result


def _prompt_text(prompt: PromptSource, where: str, path: Path, prompt_file: Path | None) -> str | None:
    if prompt_file is not None:
        return prompt_file.read_text(encoding="utf-8")
    if prompt.config_map_key_ref is not None:
        ref = prompt.config_map_key_ref
        role = where.split(".")[1]
        raise ExperimentFileError(
            f"{path}: {where}.configMapKeyRef ({ref.name}/{ref.key}) cannot be read without a cluster; "
            f"pass the text with --prompt-file {role}=FILE or set {where}.text"
        )
    return prompt.text


def load_experiment(
    path: Path,
    data_dir: Path | None = None,
    prompt_files: dict[str, Path] | None = None,
    created: datetime | None = None,
) -> LocalExperiment:
    """Validate the Experiment and read everything the planner needs from the local disk."""
    name, raw_spec = read_experiment_object(path)
    try:
        spec = parse_spec(raw_spec)
    except ValidationError as exc:
        raise ExperimentFileError(f"{path}: {describe_validation_error(exc, 'spec')}") from exc
    base = (data_dir if data_dir is not None else path.parent).resolve()
    prompt_files = prompt_files or {}
    notes: list[str] = []
    datasets: dict[str, DatasetFiles] = {}
    for index, dataset in enumerate(spec.datasets):
        if dataset.source.pvc:
            notes.append(
                f"spec.datasets[{index}].source.pvc ({dataset.source.pvc}) is ignored locally: "
                f"reading {dataset.source.path} under {base}"
            )
        # `..` and absolute paths are refused by the schema; locally a symlinked dataset directory is the
        # user's own choice (the operator refuses one that leads out of its volume).
        directory = base / dataset.source.path
        try:
            suffixes = RECORD_SUFFIXES if dataset.prepared else (".jsonl",)
            datasets[dataset.name] = dataset_files(directory, dataset.name, suffixes)
        except LayoutError as exc:
            raise ExperimentFileError(
                f"{path}: spec.datasets[{index}].source.path: {exc} (paths are relative to --data-dir {base})"
            ) from exc
    generation_prompt = _prompt_text(
        spec.generation.prompt, "spec.generation.prompt", path, prompt_files.get("generation")
    )
    validation_prompt = None
    if spec.validation is not None:
        validation_prompt = _prompt_text(
            spec.validation.prompt, "spec.validation.prompt", path, prompt_files.get("validation")
        )
    return LocalExperiment(
        path=path,
        name=name,
        spec=spec,
        data_dir=base,
        datasets=datasets,
        generation_prompt=generation_prompt,
        validation_prompt=validation_prompt,
        notes=tuple(notes),
        created=created or datetime.now(UTC),
    )
