"""What a worker would refuse before its first request or step, checked before anything is claimed.

`datasweep plan` and `datasweep run` both call `check_before_claim`, so a plan that passes does not meet a run
that refuses. Each check calls the worker's own code (reading the splits, planning the requests, finding the API
key), so the message is the one the worker would have printed, with the spec field in front. The checks that
need the experiment's records (fields every stage needs, prompt templates, task files) run when the experiment is
planned (`LocalExperiment.plan`); model directories and API keys are local only: on a cluster the operator and the
Jobs find them on its volumes and Secrets.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasweep.api.stages.generate import GenerateParams
from datasweep.core.plan import Plan, StagePlan
from datasweep.local.experiment_file import ExperimentFileError, LocalExperiment
from datasweep.local.registry import Registry
from datasweep.local.runner import imported_match
from datasweep.store.layout import find_generate_dir, is_complete
from datasweep.workloads.generate.inputs import GenerateInputError, read_splits, resolve_api_key
from datasweep.workloads.generate.tasks import plan_task

# Generate parameters that change what is sent but not which records are read or how prompts are rendered.
_SAMPLING = ("model", "temperature", "top_p", "max_tokens", "frequency_penalty", "presence_penalty", "seed")


def _data_stages(plan: Plan) -> list[StagePlan]:
    return list({point.generate.fingerprint: point.generate for point in plan.points}.values())


def _dataset_index(experiment: LocalExperiment, name: str) -> int:
    return next(i for i, dataset in enumerate(experiment.spec.datasets) if dataset.name == name)


def generate_stages_to_produce(
    experiment: LocalExperiment, plan: Plan, root: Path, force: bool = False
) -> list[StagePlan]:
    """The generate stages whose worker would run: not complete under `root` and no imported match."""
    registry = Registry(root)
    any_imported = any(a.imported for a in registry.artifacts())  # read once: the registry may hold many records
    todo = []
    for stage in _data_stages(plan):
        if stage.stage != "generate":
            continue
        own = find_generate_dir(root, stage.dataset, stage.semantic_name, stage.fingerprint)
        if not force and own is not None and is_complete(root / own):
            continue
        sha256 = experiment.datasets[stage.dataset].sha256
        if not force and any_imported and imported_match(registry, root, stage, sha256) is not None:
            continue
        todo.append(stage)
    return todo


def model_directories(experiment: LocalExperiment, plan: Plan) -> list[str]:
    """Every stage's model directory exists and holds a saved model (the workers load it before their first step)."""
    problems = []
    for point in plan.points:
        for stage in point.stages:
            try:
                experiment.stage_model_dir(stage)
            except ExperimentFileError as exc:
                problems.append(str(exc))
    return list(dict.fromkeys(problems))


def api_keys(experiment: LocalExperiment, stages: list[StagePlan]) -> list[str]:
    """The API key of every generate stage that will send requests is in the environment the workers inherit."""
    problems = []
    for stage in stages:
        try:
            resolve_api_key(GenerateParams.model_validate(stage.params))
        except GenerateInputError as exc:
            problems.append(f"{experiment.path}: spec.generation.apiKeySecret: {exc}")
    return list(dict.fromkeys(problems))


def local_generation_models(experiment: LocalExperiment, stages: list[StagePlan]) -> list[str]:
    """backend transformers: the generation and judge models are local directories, as the worker loads them."""
    problems = []
    for stage in stages:
        params = GenerateParams.model_validate(stage.params)
        if params.backend != "transformers":
            continue
        from datasweep.workloads.generate.worker import transformers_model_paths  # imports openai: only here

        try:
            transformers_model_paths(params, experiment.stage_model_dir(stage))
        except GenerateInputError as exc:
            problems.append(f"{experiment.path}: spec.generation: {exc}")
    return list(dict.fromkeys(problems))


def generate_inputs(experiment: LocalExperiment, stages: list[StagePlan]) -> list[str]:
    """What the generate worker reads before its first request: every split, fully parsed (ids, duplicates, bad
    lines), and every request planned from it (fields to rephrase, prompts), as `run_generate` does."""
    problems = []
    seen: set[str] = set()
    for stage in stages:
        params = GenerateParams.model_validate(stage.params)
        key = json.dumps(
            [stage.dataset, {k: v for k, v in stage.params.items() if k not in _SAMPLING}], sort_keys=True, default=str
        )
        if key in seen:
            continue
        seen.add(key)
        source = experiment.datasets[stage.dataset].directory
        try:
            plan_task(read_splits(source, stage.dataset, params.id_field, params.task == "code-scenarios"), params)
        except GenerateInputError as exc:
            index = _dataset_index(experiment, stage.dataset)
            problems.append(f"{experiment.path}: spec.datasets[{index}] ({stage.dataset}): {exc}")
    return problems


def split_names(experiment: LocalExperiment, plan: Plan) -> list[str]:
    """A moe-steer stage's `split` is one the data has (generation keeps the source's splits)."""
    problems = []
    for point in plan.points:
        files = experiment.datasets[point.dataset]
        splits = {
            path.stem.rsplit("_", 1)[-1]
            for path in files.files
            if path.stem.lower().startswith(point.dataset.lower() + "_")
        }
        for stage in point.training:
            split = str(stage.params.get("split", ""))
            if stage.stage != "moe-steer" or not splits or split in splits:
                continue
            listing = ", ".join(path.name for path in files.files)
            problems.append(
                f"{experiment.path}: spec.training[{stage.training_index}].params.split: no {split} split in dataset "
                f"{point.dataset} ({files.directory}); files found: {listing}; "
                f"choose one of {', '.join(sorted(splits))}"
            )
    return list(dict.fromkeys(problems))


def check_before_claim(experiment: LocalExperiment, plan: Plan, root: Path | None, force: bool = False) -> None:
    """Every check above; `root` is the local store (None: planning for a cluster, where models and keys are the
    operator's to find). Raises ExperimentFileError listing every problem; nothing is created."""
    problems = split_names(experiment, plan)
    if root is not None:
        problems += model_directories(experiment, plan)
        stages = generate_stages_to_produce(experiment, plan, root, force or experiment.spec.force_regenerate)
        problems += api_keys(experiment, stages)
        if not problems:  # a model directory that is not there is named once, above
            problems += local_generation_models(experiment, stages)
    else:
        stages = [stage for stage in _data_stages(plan) if stage.stage == "generate"]
    problems += generate_inputs(experiment, stages)
    if problems:
        raise ExperimentFileError("\n".join(problems) + "\nnothing was claimed or run")


__all__ = ["check_before_claim", "generate_stages_to_produce"]
