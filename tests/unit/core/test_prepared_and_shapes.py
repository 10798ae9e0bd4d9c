"""Planning a prepared dataset (no generation), refusals at plan time, and the shape checks. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.plan import PlanError, PlanInputs, plan_experiment
from datasweep.core.shape import check_shapes

INPUTS = PlanInputs({"Copa": "c" * 64, "Mine": "d" * 64}, created=datetime(2024, 12, 29))
FOMAML = {"task_key": "task", "prompt_template": "{question}", "response_template": " {answer}"}


def spec(**overrides: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_prepared",
        "datasets": [
            {"name": "Copa", "source": {"path": "copa"}},
            {"name": "Mine", "source": {"path": "mine"}, "prepared": True},
        ],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": [0.5, 0.7]},
        "training": [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": FOMAML}],
    }
    raw.update(overrides)
    return ExperimentSpec.model_validate(raw)


def test_a_prepared_dataset_is_one_point_with_a_dataset_stage_and_no_grid() -> None:
    plan = plan_experiment(spec(), INPUTS)
    assert [(p.dataset, p.generate.stage, p.generate.semantic_name) for p in plan.points] == [
        ("Copa", "generate", "temp05_topp10_gpt4o"),
        ("Copa", "generate", "temp07_topp10_gpt4o"),
        ("Mine", "dataset", "prepared"),
    ]
    mine = plan.points[2]
    assert mine.generate.canonical["dataset"] == {"name": "Mine", "sha256": "d" * 64}
    assert mine.training[0].inputs == (mine.generate.artifact,)
    # the training fingerprint follows the dataset's content and the stage's params, nothing else
    same = plan_experiment(spec(generation={"apiKeySecret": {"name": "openai"}, "temperature": 0.9}), INPUTS)
    assert same.points[-1].training[0].fingerprint == mine.training[0].fingerprint
    edited = plan_experiment(spec(), PlanInputs({"Copa": "c" * 64, "Mine": "e" * 64}))
    assert edited.points[-1].training[0].fingerprint != mine.training[0].fingerprint
    params = {**FOMAML, "inner_lr": 0.5}
    other = spec(training=[{"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": params}])
    assert plan_experiment(other, INPUTS).points[-1].training[0].fingerprint != mine.training[0].fingerprint


def test_a_prepared_dataset_needs_a_training_stage() -> None:
    with pytest.raises(ValidationError, match=r"spec.datasets\[1\].prepared: a prepared dataset is only trained on"):
        spec(training=[])


@pytest.mark.parametrize(
    ("kind", "resources", "field"), [("qa", {"gpus": 2}, "gpus"), ("moe-steer", {"nodes": 2}, "nodes")]
)
def test_single_gpu_kinds_refuse_several_ranks(kind: str, resources: dict[str, int], field: str) -> None:
    entry = {"name": "t", "kind": kind, "baseModel": {"path": "m"}, "resources": resources}
    with pytest.raises(PlanError, match=rf"spec.training\[0\].resources.{field}: {kind} runs as one process"):
        plan_experiment(spec(training=[entry]), INPUTS)
    fomaml = {"name": "t", "kind": "fomaml", "baseModel": {"path": "m"}, "params": FOMAML, "resources": resources}
    assert plan_experiment(spec(training=[fomaml]), INPUTS).points[0].training[0].resources.model_dump()[field] == 2


def test_hub_ids_are_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match="hubId is not supported: every Job runs offline"):
        spec(training=[{"name": "t", "kind": "qa", "baseModel": {"hubId": "bert-base-uncased"}}])
    with pytest.raises(ValidationError, match="path is required"):
        spec(training=[{"name": "t", "kind": "qa", "baseModel": {"pvc": "models"}}])


def test_shape_checks_name_the_param_and_the_fields_found() -> None:
    plan = plan_experiment(spec(), INPUTS)
    copa = {"train": [{"id": 1, "text": "a", "question": "q", "answer": "x"}]}
    mine = {"train": [{"id": 1, "question": "q", "answer": "a", "task": "t"}]}
    problems = check_shapes(plan, {"Copa": copa, "Mine": mine})
    assert problems == [
        "spec.training[0].params.task_key: field 'task' is not in the Copa records (missing in record 1 of the "
        "first 1; fields found: answer, id, question, text; generation adds original_text, validation)"
    ]
    # a field generation produces counts as present; an unreadable dataset is left to the worker
    produced = {**FOMAML, "task_key": "id", "prompt_template": "{original_text}"}
    entry = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": produced}
    plan = plan_experiment(spec(datasets=[{"name": "Copa", "source": {"path": "copa"}}], training=[entry]), INPUTS)
    assert check_shapes(plan, {"Copa": copa}) == []
    assert check_shapes(plan, {}) == []
    # generation's own fields, and each training kind's
    no_text = {"train": [{"id": 1, "sentence": "s"}]}
    assert check_shapes(plan, {"Copa": no_text})[0].startswith(
        "spec.generation.options.rephrase_fields: field 'text' is not in the Copa records"
    )
    stages = [
        {"name": "s", "kind": "moe-steer", "baseModel": {"path": "m"}},
        {"name": "q", "kind": "qa", "baseModel": {"path": "m"}, "params": {"context_field": "passage"}},
    ]
    mine_only = [{"name": "Mine", "source": {"path": "mine"}, "prepared": True}]
    plan = plan_experiment(spec(datasets=mine_only, training=stages), INPUTS)
    found = check_shapes(plan, {"Mine": {"train": [{"id": "1", "question": "q", "answers": {}}]}})
    assert [p.split(":")[0] for p in found] == [
        "spec.training[0].params.safe_field/unsafe_field",
        "spec.training[1].params.context_field",
    ]
