"""The operator's planning without a cluster: shape checks answer before any object, and a prepared
dataset gets a dataset stage whose Job reads the source and whose training nests under it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.controller import experiment as controller
from datasweep.core.plan import PlanError

CREATED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source = tmp_path / "raw" / "mine"
    source.mkdir(parents=True)
    rows = [{"id": i, "question": f"q{i}", "answer": f"a{i}", "task": f"t{i % 2}"} for i in range(4)]
    (source / "mine_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(controller, "settings", lambda: OperatorSettings(data_root=str(tmp_path)))
    monkeypatch.setattr(controller.client, "secret_has_key", lambda *_: True)
    return tmp_path


def spec(params: dict[str, Any]) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "batch": "batch_20250101_mine",
            "datasets": [{"name": "Mine", "source": {"path": "raw/mine"}, "prepared": True}],
            "training": [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/m"}, "params": params}],
        }
    )


def test_a_field_mismatch_is_a_plan_error_naming_the_param(data_root: Path) -> None:
    with pytest.raises(PlanError) as caught:
        controller.plan_for("ns", spec({"task_key": "category"}), CREATED)
    assert caught.value.reason == "FieldMismatch"
    assert "spec.training[0].params.task_key: field 'category' is not in the Mine records" in str(caught.value)
    assert "fields found: answer, id, question, task" in str(caught.value)


def test_a_prepared_dataset_plans_a_dataset_job_and_nested_training(data_root: Path) -> None:
    params = {"task_key": "task", "prompt_template": "{question}", "response_template": " {answer}"}
    plan = controller.plan_for("ns", spec(params), CREATED)
    (point,) = plan.points
    paths: dict[str, str] = {}
    data_path = controller._storage_path(point.generate, paths)
    assert data_path == "_shared/Mine/prepared"
    paths[point.generate.artifact] = data_path
    details = controller._worker_details(spec(params), point.generate, data_path, paths, batch="b", experiment="e")
    worker = yaml.safe_load(details["workerSpec"])
    assert (worker["stage"], worker["sourceDir"]) == ("dataset", "/data/raw/mine")
    training = point.training[0]
    train_path = controller._storage_path(training, paths)
    assert train_path.startswith("_shared/Mine/prepared/train/fomaml-")
    worker = yaml.safe_load(
        controller._worker_details(spec(params), training, train_path, paths, batch="b", experiment="e")["workerSpec"]
    )
    assert worker["inputs"] == {"data": "/data/_shared/Mine/prepared"}
    assert worker["baseModel"] == "/data/models/m"
