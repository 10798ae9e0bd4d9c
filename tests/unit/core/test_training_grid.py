"""Training axes (issue 23): a training param given as a list is the stage's own grid, crossed with the points."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.naming import axis_tags, format_axis_value
from datasweep.core.plan import PlanError, PlanInputs, plan_experiment
from datasweep.core.shape import check_shapes

INPUTS = PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29))


def experiment(training: list[dict[str, Any]], temperature: Any = 0.7, **overrides: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_temperature",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": temperature},
        "training": training,
        **overrides,
    }
    return ExperimentSpec.model_validate(raw)


def qa(**params: Any) -> dict[str, Any]:
    return {"name": "squad", "kind": "qa", "baseModel": {"path": "models/bert"}, "params": params}


def test_single_valued_stages_keep_their_fingerprints_and_names() -> None:
    # Pinned from the planner before training axes existed: reuse of existing results depends on them. Re-pinned
    # once when every fingerprint took its kind's recipe version (issue 25).
    spec = experiment(
        [
            qa(learning_rate=3e-5, num_train_epochs=2),
            {"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/llama"}, "params": {"k_shots": [1, 5]}},
            # mask_router_logits was false by default then (issue 24 made it true): same settings, same fingerprint
            {
                "name": "steer",
                "kind": "moe-steer",
                "baseModel": {"path": "models/olmoe"},
                "params": {"mask_router_logits": False},
            },
        ]
    )
    plan = plan_experiment(spec, INPUTS)
    assert [(s.fingerprint, s.artifact, s.semantic_name) for s in plan.stages] == [
        (
            "1f97967a39973f4062b88147dc425a1f00d844181e735d9fabbe60d20f67bb6b",
            "copa-temp07-topp10-gpt4o-1f97967a3997",
            "temp07_topp10_gpt4o",
        ),
        (
            "7aace1d469692a991219530c3562c797248a57779e78446f764f6a1320cbdd64",
            "copa-temp07-topp10-gpt4o-qa-7aace1d46969",
            "temp07_topp10_gpt4o",
        ),
        (
            "00652b50bb7ffd482c2bae4c4d214e2a80d9a13e2909b92f5f5d645c93e44a7a",
            "copa-temp07-topp10-gpt4o-fomaml-00652b50bb7f",
            "temp07_topp10_gpt4o",
        ),
        (
            "6aa07e61280f7b510e90ce2e8f51b85f9a964dea6866e6a54b567efb0e4ef25f",
            "copa-temp07-topp10-gpt4o-moe-steer-6aa07e61280f",
            "temp07_topp10_gpt4o",
        ),
    ]


def test_a_training_sweep_is_points_times_the_stage_grid_and_never_regenerates() -> None:
    swept = plan_experiment(
        experiment([qa(learning_rate=[1e-5, 3e-5], num_train_epochs=[1, 2])], temperature=[0.5, 0.7]), INPUTS
    )
    plain = plan_experiment(experiment([qa()], temperature=[0.5, 0.7]), INPUTS)
    assert len(swept.points) == 2
    assert [p.generate for p in swept.points] == [p.generate for p in plain.points]
    training = [s for p in swept.points for s in p.training]
    assert len(training) == 8
    assert len({s.artifact for s in swept.stages}) == 10
    assert [s.values for s in swept.points[0].training] == [
        {"learning_rate": 1e-5, "num_train_epochs": 1},
        {"learning_rate": 1e-5, "num_train_epochs": 2},
        {"learning_rate": 3e-5, "num_train_epochs": 1},
        {"learning_rate": 3e-5, "num_train_epochs": 2},
    ]
    assert [s.semantic_name for s in swept.points[0].training] == [
        "temp05_topp10_gpt4o_lr1e-5_ep1",
        "temp05_topp10_gpt4o_lr1e-5_ep2",
        "temp05_topp10_gpt4o_lr3e-5_ep1",
        "temp05_topp10_gpt4o_lr3e-5_ep2",
    ]
    assert all(s.name == "squad" and s.training_index == 0 for s in training)
    assert all(s.params["learning_rate"] in (1e-5, 3e-5) for s in training)
    # a combination is the stage with those values: an Experiment that does not sweep them reuses it by name
    single = plan_experiment(experiment([qa(learning_rate=3e-5, num_train_epochs=2)], temperature=0.5), INPUTS)
    assert single.points[0].training[0].fingerprint == swept.points[0].training[3].fingerprint
    assert single.points[0].training[0].artifact == swept.points[0].training[3].artifact


def test_a_second_sweep_shares_the_combinations_it_has_in_common() -> None:
    first = plan_experiment(
        experiment([qa(learning_rate=[1e-5, 3e-5], num_train_epochs=[1, 2])], temperature=[0.5, 0.7]), INPUTS
    )
    second = plan_experiment(
        experiment([qa(learning_rate=[3e-5, 1e-4], num_train_epochs=[1, 2])], temperature=[0.5, 0.7]), INPUTS
    )
    ours = {s.artifact for p in first.points for s in p.training}
    theirs = {s.artifact for p in second.points for s in p.training}
    assert len(ours & theirs) == 4
    assert len(theirs - ours) == 4


def test_duplicate_values_and_values_that_fingerprint_alike_are_one_artifact() -> None:
    plan = plan_experiment(experiment([qa(learning_rate=[3e-5, 3.0e-5, 0.00003], seed=[1, 1])]), INPUTS)
    assert len(plan.points[0].training) == 1


def test_max_points_counts_every_artifact_and_says_so() -> None:
    spec = experiment([qa(learning_rate=[1e-5, 3e-5], num_train_epochs=[1, 2])], temperature=[0.5, 0.7], maxPoints=9)
    with pytest.raises(PlanError, match=r"spec.maxPoints: the grid makes 10 Artifacts") as info:
        plan_experiment(spec, INPUTS)
    assert "counts every Artifact" in str(info.value)
    assert "1 data stage + 4 training combinations" in str(info.value)
    assert info.value.reason == "TooManyPoints"
    assert len(plan_experiment(spec, INPUTS, max_points=10).stages) == 10


@pytest.mark.parametrize(
    ("stage", "field", "why"),
    [
        (qa(answers_field=["answers", "spans"]), "answers_field", "names a field of the records"),
        (qa(input_format=["squad", "reports"]), "input_format", "how the records are laid out"),
        (qa(num_workers=[1, 2]), "num_workers", "never changes the result"),
        (
            {"name": "steer", "kind": "moe-steer", "baseModel": {"path": "m"}, "params": {"split": ["train", "test"]}},
            "split",
            "names the split file",
        ),
        (
            {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": {"task_key": ["a", "b"]}},
            "task_key",
            "names a field of the records",
        ),
    ],
)
def test_params_that_cannot_be_lists_are_refused_with_the_reason(stage: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(PlanError, match=rf"spec.training\[0\].params.{field}: cannot be a list of values") as info:
        plan_experiment(experiment([stage]), INPUTS)
    assert why in str(info.value)
    assert info.value.reason == "InvalidAxis"


def test_an_empty_list_and_a_bad_value_name_the_field() -> None:
    with pytest.raises(PlanError, match=r"spec.training\[0\].params.learning_rate: the list is empty"):
        plan_experiment(experiment([qa(learning_rate=[])]), INPUTS)
    with pytest.raises(PlanError, match=r"spec.training\[0\].params.learning_rate\[1\]: Input should be a valid"):
        plan_experiment(experiment([qa(learning_rate=[1e-5, "fast"])]), INPUTS)
    # a single value keeps the plain field name
    with pytest.raises(PlanError, match=r"spec.training\[0\].params.learning_rate: Input should be a valid"):
        plan_experiment(experiment([qa(learning_rate="fast")]), INPUTS)


def test_a_param_that_is_itself_a_list_is_one_value() -> None:
    stage = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": {"k_shots": [1, 5, 10]}}
    plan = plan_experiment(experiment([stage]), INPUTS)
    assert len(plan.points[0].training) == 1
    assert plan.points[0].training[0].params["k_shots"] == [1, 5, 10]
    assert plan.points[0].training[0].values == {}


def test_each_stage_has_its_own_grid() -> None:
    steer = {"name": "steer", "kind": "moe-steer", "baseModel": {"path": "m"}, "params": {"top_n": [5, 10, 20]}}
    plan = plan_experiment(experiment([qa(learning_rate=[1e-5, 3e-5]), steer], temperature=[0.5, 0.7]), INPUTS)
    assert [(s.name, s.training_index) for s in plan.points[0].training] == [
        ("squad", 0),
        ("squad", 0),
        ("steer", 1),
        ("steer", 1),
        ("steer", 1),
    ]
    assert len(plan.stages) == 2 * (1 + 2 + 3)


def test_swept_values_in_names() -> None:
    assert format_axis_value(1e-5) == "1e-5"
    assert format_axis_value(2.5e-5) == "2p5e-5"
    assert format_axis_value(1e-4) == "1e-4"
    assert format_axis_value(0.15) == "015"
    assert format_axis_value(2) == "2"
    assert format_axis_value(True) == "on"
    assert format_axis_value("eval_loss") == "evalloss"
    assert axis_tags({"learning_rate": 3e-5, "null_margin": 0.3, "num_train_epochs": 2}) == "lr3e-5_nm03_ep2"


def test_shape_checks_name_the_stage_entry_behind_a_sweep() -> None:
    stages = [
        qa(learning_rate=[1e-5, 3e-5]),
        {"name": "steer", "kind": "moe-steer", "baseModel": {"path": "m"}, "params": {"top_n": [5, 10]}},
    ]
    plan = plan_experiment(experiment(stages), INPUTS)
    records = {"train": [{"id": "1", "text": "t", "question": "q", "answers": {}}]}
    found = check_shapes(plan, {"Copa": records})
    assert [p.split(":")[0] for p in found] == [
        "spec.training[0].params.context_field",
        "spec.training[1].params.safe_field/unsafe_field",
    ]
