"""Grid planning, including the seed 000 scenario: A then B share exactly one point."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.plan import PlanError, PlanInputs, plan_experiment

INPUTS = PlanInputs({"Copa": "c" * 64, "CB": "d" * 64}, created=datetime(2024, 12, 29))


def experiment(**overrides: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_temperature",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": [0.5, 0.7, 0.9], "topP": 1.0},
    }
    raw.update(overrides)
    return ExperimentSpec.model_validate(raw)


def test_seed_scenario_a_then_b_shares_one_point() -> None:
    a = plan_experiment(experiment(), INPUTS)
    b = plan_experiment(
        experiment(
            batch="batch_20241230_topp",
            generation={"apiKeySecret": {"name": "openai"}, "temperature": 0.7, "topP": [0.8, 0.9, 1.0]},
        ),
        INPUTS,
    )
    assert [p.generate.semantic_name for p in a.points] == [
        "temp05_topp10_gpt4o",
        "temp07_topp10_gpt4o",
        "temp09_topp10_gpt4o",
    ]
    assert [p.generate.semantic_name for p in b.points] == [
        "temp07_topp08_gpt4o",
        "temp07_topp09_gpt4o",
        "temp07_topp10_gpt4o",
    ]
    fingerprints = [s.fingerprint for s in (*a.stages, *b.stages)]
    assert len(fingerprints) == 6
    assert len(set(fingerprints)) == 5
    assert a.points[1].generate.artifact == b.points[2].generate.artifact


def test_grid_is_the_cross_product_over_datasets() -> None:
    plan = plan_experiment(
        experiment(
            datasets=[{"name": "Copa", "source": {"path": "copa"}}, {"name": "CB", "source": {"path": "cb"}}],
            generation={
                "apiKeySecret": {"name": "o"},
                "temperature": [0.5, 0.7],
                "topP": [0.9, 1.0],
                "model": ["gpt-4o", "gpt-4o-mini"],
            },
        ),
        INPUTS,
    )
    assert len(plan.points) == 16
    assert len({p.generate.artifact for p in plan.points}) == 16


def test_max_points_guard_names_the_field() -> None:
    with pytest.raises(PlanError, match=r"spec.maxPoints: the grid makes 3 Artifacts: 3 points") as info:
        plan_experiment(experiment(maxPoints=2), INPUTS)
    assert info.value.reason == "TooManyPoints"


def test_bad_training_params_name_the_field() -> None:
    with pytest.raises(PlanError, match=r"spec.training\[0\].params.inner_lr"):
        plan_experiment(
            experiment(
                training=[
                    {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "params": {"inner_lr": "fast"}}
                ]
            ),
            INPUTS,
        )


def test_default_batch_uses_purpose_and_creation_date() -> None:
    raw = experiment().model_dump(by_alias=True, exclude={"batch"})
    raw["purpose"] = "topp"
    assert plan_experiment(ExperimentSpec.model_validate(raw), INPUTS).batch == "batch_20241229_topp"


def test_duplicate_values_in_a_list_are_one_point() -> None:
    plan = plan_experiment(
        experiment(generation={"apiKeySecret": {"name": "o"}, "temperature": [0.7, 0.70, 7e-1]}), INPUTS
    )
    assert len(plan.points) == 1


def test_the_trainjob_launcher_is_refused_clearly() -> None:
    stage = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "m"}, "launcher": "trainjob"}
    with pytest.raises(PlanError, match=r"spec.training\[0\].launcher: 'trainjob' is not supported") as info:
        plan_experiment(experiment(training=[stage]), INPUTS)
    assert info.value.reason == "UnsupportedLauncher"
