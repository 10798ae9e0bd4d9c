"""spec.search (issue 23): random search plans N combinations of the full grid, the same ones for the same spec."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.plan import PlanError, PlanInputs, plan_experiment

INPUTS = PlanInputs({"Copa": "c" * 64, "Boolq": "b" * 64}, created=datetime(2024, 12, 29))


def raw_spec(search: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_search",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}, {"name": "Boolq", "source": {"path": "boolq"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": [0.1, 0.3, 0.5, 0.7], "topP": [0.9, 1.0]},
        "training": [
            {
                "name": "squad",
                "kind": "qa",
                "baseModel": {"path": "models/bert"},
                "params": {"learning_rate": [1e-5, 3e-5, 1e-4], "num_train_epochs": [1, 2]},
            }
        ],
        "maxPoints": 1000,
        **overrides,
    }
    if search is not None:
        raw["search"] = search
    return raw


def artifacts(raw: dict[str, Any]) -> list[str]:
    return [stage.artifact for stage in plan_experiment(ExperimentSpec.model_validate(raw), INPUTS).stages]


def reordered(raw: dict[str, Any]) -> dict[str, Any]:
    """The same Experiment written another way: keys, datasets and every list of values in reverse order."""
    copy = dict(reversed(list(raw.items())))
    copy["datasets"] = list(reversed(raw["datasets"]))
    copy["generation"] = {k: v[::-1] if isinstance(v, list) else v for k, v in reversed(raw["generation"].items())}
    stage = dict(raw["training"][0])
    stage["params"] = {k: v[::-1] for k, v in reversed(stage["params"].items())}
    copy["training"] = [stage]
    return copy


def test_a_sample_is_n_of_the_full_grid_and_the_same_every_time() -> None:
    # the full grid: 2 datasets x 8 generation points x 6 qa combinations = 96 combinations
    raw = raw_spec({"algorithm": "random", "samples": 5, "seed": 7})
    plan = plan_experiment(ExperimentSpec.model_validate(raw), INPUTS)
    assert plan.search is not None
    assert (plan.search.taken, plan.search.total) == (5, 96)
    assert plan.search_note == "random search: 5 of 96 combinations (seed 7)"
    trained = [stage for point in plan.points for stage in point.training]
    assert len(trained) == 5  # one qa Artifact per sampled combination (they all differ)
    assert 1 <= len(plan.points) <= 5
    whole = set(artifacts(raw_spec()))
    assert {stage.artifact for stage in plan.stages} <= whole
    assert artifacts(raw) == artifacts(raw)
    assert sorted(artifacts(reordered(raw))) == sorted(artifacts(raw))
    assert artifacts(raw_spec({"algorithm": "random", "samples": 5, "seed": 8})) != artifacts(raw)


def test_the_sample_does_not_depend_on_python_hash_randomisation() -> None:
    code = (
        "import json, sys; sys.path.insert(0, 'tests/unit/core'); import test_search as t; "
        "print(json.dumps(t.artifacts(t.raw_spec({'algorithm': 'random', 'samples': 4, 'seed': 3}))))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_samples_over_the_grid_plan_the_whole_grid_and_say_so() -> None:
    raw = raw_spec({"algorithm": "random", "samples": 500})
    plan = plan_experiment(ExperimentSpec.model_validate(raw), INPUTS)
    assert sorted(stage.artifact for stage in plan.stages) == sorted(artifacts(raw_spec()))
    assert plan.search_note == (
        "random search: 96 of 96 combinations (seed 0); samples=500 is more than the grid, so the whole grid is planned"
    )


def test_max_points_counts_what_is_planned_after_sampling() -> None:
    # the whole grid makes 16 + 96 = 112 Artifacts, over maxPoints; 3 samples make at most 6
    raw = raw_spec({"algorithm": "random", "samples": 3, "seed": 1}, maxPoints=10)
    assert len(artifacts(raw)) <= 6
    with pytest.raises(PlanError, match=r"spec\.maxPoints"):
        artifacts(raw_spec(maxPoints=10))
    with pytest.raises(PlanError, match=r"random search: 20 of 96 combinations \(seed 1\) plan"):
        artifacts(raw_spec({"algorithm": "random", "samples": 20, "seed": 1}, maxPoints=10))


def test_only_random_search_with_at_least_one_sample_is_accepted() -> None:
    with pytest.raises(ValidationError, match=r"spec\.search\.algorithm: 'grid' is not supported; use 'random'"):
        ExperimentSpec.model_validate(raw_spec({"algorithm": "grid", "samples": 3}))
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ExperimentSpec.model_validate(raw_spec({"algorithm": "random", "samples": 0}))
