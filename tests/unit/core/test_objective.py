"""The objective (issue 23, items 2 and 4): metrics recorded per kind, validated objectives, status.best."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.stage_params import metric_names, training_kinds
from datasweep.controller.aggregate import Planned, summarize_batch, summarize_experiment
from datasweep.controller.indices import ExperimentSummary, artifact_info, experiment_index
from datasweep.core.metrics import MAX_RECORDED_METRICS, Candidate, best_of, recorded_metrics
from datasweep.core.plan import PlanInputs, plan_experiment
from datasweep.store.manifest import Manifest

QA_EXTRA = {
    "best_epoch": 2,
    "null_threshold": 0.25,
    "dev": {"exact": 70.0, "f1": 81.5, "best_f1": 82.0, "total": 100},
    "test": {"exact": 60.0, "f1": 75.0},
    "train_features": 1000,
}
FOMAML_EXTRA = {"mean_before_loss": 2.5, "mean_after_loss": 1.5, "mean_after_token_accuracy": 0.6, "total_steps": 50}
MOE_EXTRA = {"selectedExperts": [[0, 1], [1, 3]], "finalLoss": 0.4, "steps": 12, "numBatches": 3}


def spec(objective: dict[str, Any] | None = None, **params: Any) -> ExperimentSpec:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_objective",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": [0.5, 0.7], "topP": 1.0},
        "training": [{"name": "squad", "kind": "qa", "baseModel": {"path": "m"}, "params": params}],
    }
    if objective is not None:
        raw["objective"] = objective
    return ExperimentSpec.model_validate(raw)


@pytest.mark.parametrize(("kind", "extra"), [("qa", QA_EXTRA), ("fomaml", FOMAML_EXTRA), ("moe-steer", MOE_EXTRA)])
def test_every_kind_records_its_documented_metrics_and_no_more(kind: str, extra: dict[str, Any]) -> None:
    recorded = recorded_metrics(kind, extra)
    assert list(recorded) == list(metric_names(kind))  # every documented name, from a complete manifest
    assert len(recorded) <= MAX_RECORDED_METRICS
    assert all(isinstance(value, int | float) for value in recorded.values())


def test_recorded_metrics_are_numbers_only_and_the_manifest_summary_carries_them() -> None:
    assert recorded_metrics("qa", {"dev": {"f1": float("nan"), "exact": "70"}, "best_epoch": True}) == {}
    assert recorded_metrics("generate", {"counts": {}}) == {}
    assert recorded_metrics("fomaml", FOMAML_EXTRA)["lossDrop"] == 1.0
    manifest = Manifest(fingerprint="f" * 64, stage="qa", files=[], completed_at="now", extra=QA_EXTRA)
    assert manifest.summary().metrics["f1"] == 81.5
    assert set(training_kinds()) == {"fomaml", "moe-steer", "qa"}


def test_best_of_maximizes_or_minimizes_and_ignores_artifacts_without_the_metric() -> None:
    candidates = [
        Candidate("b", {"learning_rate": 1e-5}, {"f1": 70.0}),
        Candidate("a", {"learning_rate": 3e-5}, {"f1": 80.0}),
        Candidate("c", {"learning_rate": 1e-4}, {"em": 90.0}),
        Candidate("d", {"learning_rate": 2e-5}, {"f1": 80.0}),
    ]
    best = best_of("squad", "f1", "maximize", candidates)
    assert best is not None
    assert (best["artifact"], best["value"], best["candidates"]) == ("a", 80.0, 3)  # a tie goes to the first name
    assert best["params"] == {"learning_rate": 3e-5}
    assert (best["tied"], best["summary"]) == (2, "f1=80 (learning_rate=3e-05; 2 tied)")
    worst = best_of("squad", "f1", "minimize", candidates)
    assert worst is not None
    assert (worst["artifact"], worst["tied"], worst["summary"]) == ("b", 1, "f1=70 (learning_rate=1e-05)")
    assert best_of("squad", "f1", "maximize", [candidates[2]]) is None


def test_an_objective_must_name_a_stage_and_a_metric_its_kind_records() -> None:
    assert spec({"stage": "squad", "metric": "f1"}).objective is not None
    with pytest.raises(ValidationError, match=r"spec.objective.stage: 'meta' is not a stage in spec.training"):
        spec({"stage": "meta", "metric": "f1"})
    with pytest.raises(ValidationError, match=r"spec.objective.metric: a qa stage records em, f1, bestF1"):
        spec({"stage": "squad", "metric": "accuracy"})
    with pytest.raises(ValidationError, match="goal"):
        spec({"stage": "squad", "metric": "f1", "goal": "best"})


def test_status_best_is_the_best_ready_artifact_of_the_objective_stage_with_its_parameters() -> None:
    plan = plan_experiment(
        spec({"stage": "squad", "metric": "f1"}, learning_rate=[1e-5, 3e-5]),
        PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29)),
    )
    candidates = plan.stage_artifacts("squad")
    assert list(candidates.values()) == [  # what varies: temperature and the learning rate, not the constant axes
        {"temperature": 0.5, "learning_rate": 1e-5},
        {"temperature": 0.5, "learning_rate": 3e-5},
        {"temperature": 0.7, "learning_rate": 1e-5},
        {"temperature": 0.7, "learning_rate": 3e-5},
    ]
    names = list(candidates)
    generate = [p.generate.artifact for p in plan.points]
    planned = Planned(
        points=2,
        stages=3,
        generate=frozenset(generate),
        artifacts=frozenset(generate + names),
        batch_object="batch-x",
        generation=1,
        objective=("squad", "f1", "maximize"),
        candidates=candidates,
    )

    def info(name: str, phase: str, f1: float | None) -> Any:
        manifest = {"files": 1, "rows": 1, "bytes": 1, "sha256": "x", "metrics": {} if f1 is None else {"f1": f1}}
        status = {"phase": phase, "manifest": manifest}
        body = {"metadata": {"name": name}, "spec": {"stage": "qa", "inputs": [generate[0]]}, "status": status}
        return artifact_info(name, body)

    infos = [info(names[0], "Ready", 70.0), info(names[1], "Ready", 75.0), info(names[3], "Running", 99.0)]
    best = summarize_experiment("me", planned, infos, 20)["best"]
    assert best["artifact"] == names[1]
    assert best["value"] == 75.0
    assert best["params"] == {"temperature": 0.5, "learning_rate": 3e-5}
    assert best["summary"] == "f1=75 (temperature=0.5, learning_rate=3e-05)"
    assert summarize_experiment("me", dataclasses.replace(planned, objective=None), infos, 20)["best"] is None


def test_a_batch_lists_the_best_of_each_experiment_with_an_objective() -> None:
    def summary(name: str, best: tuple[str, str] | None) -> ExperimentSummary:
        return ExperimentSummary(name=name, counts=(), usage=(), saved=(), failures=(), failures_total=0, best=best)

    status = summarize_batch(
        [summary("b", ("art-2", "f1=80")), summary("c", None), summary("a", ("art-1", "f1=70"))], 20
    )
    assert status["best"] == [
        {"experiment": "a", "artifact": "art-1", "summary": "f1=70"},
        {"experiment": "b", "artifact": "art-2", "summary": "f1=80"},
    ]
    indexed = experiment_index(
        namespace="ns",
        name="b",
        meta={"labels": {"datasweep.io/batch": "batch-x"}},
        spec={},
        status={"best": {"artifact": "art-2", "summary": "f1=80", "value": 80.0}},
    )
    assert indexed[("batch", "ns", "batch-x")].best == ("art-2", "f1=80")
