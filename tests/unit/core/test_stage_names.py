"""The STAGE of a training row: which of an Experiment's training entries could have planned the Artifact."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from datasweep.api.experiment import ExperimentSpec, TrainingStage
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment
from datasweep.core.stage_names import training_entry_names

INPUTS = PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29))
BERT = {"pvc": None, "path": "models/bert", "hub_id": None}


def entry(name: str, model: str = "models/bert", kind: str = "qa", **params: Any) -> TrainingStage:
    return TrainingStage.model_validate({"name": name, "kind": kind, "baseModel": {"path": model}, "params": params})


def planned(*entries: TrainingStage) -> list[StagePlan]:
    spec = ExperimentSpec.model_validate(
        {
            "batch": "batch_20241229_names",
            "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
            "generation": {"apiKeySecret": {"name": "openai"}, "temperature": 0.7},
            "training": [e.model_dump(mode="json", by_alias=True) for e in entries],
        }
    )
    return list(plan_experiment(spec, INPUTS).points[0].training)


def names(entries: list[TrainingStage], stage: StagePlan) -> list[str]:
    return training_entry_names(entries, stage.stage, stage.canonical["base_model"], stage.params)


def test_every_combination_of_a_list_axis_names_its_entry() -> None:
    squad = entry("squad", learning_rate=[1e-5, 3e-5], num_train_epochs=[1, 2])
    stages = planned(squad)
    assert len(stages) == 4
    assert [names([squad], s) for s in stages] == [["squad"]] * 4
    narrower = entry("narrow", learning_rate=[1e-5], num_train_epochs=[1, 2])
    assert [names([narrower], s) for s in stages] == [["narrow"], ["narrow"], [], []]


def test_values_compare_as_the_fingerprint_canonicalises_them() -> None:
    (stage,) = planned(entry("squad", learning_rate=3e-5, num_train_epochs=2))
    assert names([entry("again", learning_rate=3.0e-5, num_train_epochs=2)], stage) == ["again"]
    assert names([entry("listed", learning_rate=[0.00003, 1e-4], num_train_epochs=[2])], stage) == ["listed"]
    assert names([entry("typed", learning_rate=3e-5, num_train_epochs="2")], stage) == []  # the planner refuses it


def test_entries_of_one_kind_on_different_base_models_are_told_apart() -> None:
    bert = entry("bert", learning_rate=3e-5)
    roberta = entry("roberta", "models/roberta", learning_rate=3e-5)
    stages = planned(bert, roberta)
    assert [names([bert, roberta], s) for s in stages] == [["bert"], ["roberta"]]
    twin = entry("twin", learning_rate=[3e-5, 1e-4])
    assert names([bert, roberta, twin], stages[0]) == ["bert", "twin"]


def test_no_entry_matches_a_different_kind_value_or_model() -> None:
    (stage,) = planned(entry("squad", learning_rate=3e-5))
    assert names([entry("squad", learning_rate=1e-4)], stage) == []
    assert names([entry("meta", kind="fomaml")], stage) == []
    assert training_entry_names([entry("squad", learning_rate=3e-5)], "qa", None, stage.params) == []
    assert training_entry_names([entry("squad", learning_rate=3e-5)], "qa", BERT, stage.params) == ["squad"]
