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


def _seed_layout(root: Path) -> None:
    """Seed 003's prepared layout, written by its own code path (pandas DataFrame.to_parquet)."""
    import pandas as pd

    for task in ("biology", "math"):
        parts = (("meta_train", "support", 3), ("meta_train", "query", 4), ("few_shot_eval", "test", 2))
        for folder, split, count in parts:
            rows = [{"prompt": f"{task} {split} q{i}", "response": f" a{i}", "metadata": "{}"} for i in range(count)]
            (root / folder).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_parquet(root / folder / f"{task}_{split}.parquet", index=False)


def _seed_tasks(query_file: str = "meta_train/math_query.parquet") -> dict[str, Any]:
    return {
        "tasks": [
            {"name": "biology", "support_files": ["meta_train/biology_support.parquet"],
             "query_files": ["meta_train/biology_query.parquet"], "support_max_samples": 2},
            {"name": "math", "support_files": ["meta_train/math_support.parquet"], "query_files": [query_file]},
        ],
        "k_shots": [],
    }  # fmt: skip


def test_seed_003_task_files_are_hashed_checked_and_snapshotted_for_the_job(data_root: Path) -> None:
    from datasweep.api.stages.fomaml import FomamlParams
    from datasweep.api.worker import WorkerSpec
    from datasweep.workloads.dataset.worker import run_dataset
    from datasweep.workloads.fomaml.data import load_tasks, prepare

    source = data_root / "raw" / "mine"
    (source / "mine_train.jsonl").unlink()  # only the seed's folders
    _seed_layout(source)
    with pytest.raises(PlanError) as caught:
        controller.plan_for("ns", spec(_seed_tasks("meta_train/maths_query.parquet")), CREATED)
    assert caught.value.reason == "FileNotFound"
    assert (
        "spec.training[0].params.tasks[1].query_files[0]: meta_train/maths_query.parquet is not in the Mine dataset"
        in str(caught.value)
    )

    plan = controller.plan_for("ns", spec(_seed_tasks()), CREATED)
    (point,) = plan.points
    paths = {point.generate.artifact: controller._storage_path(point.generate, {})}
    details = controller._worker_details(
        spec(_seed_tasks()), point.generate, paths[point.generate.artifact], paths, batch="b", experiment="e"
    )
    # the dataset Job's worker on that spec (the pod's /data is data_root here)
    raw = yaml.safe_load(details["workerSpec"].replace("/data/", f"{data_root}/"))
    run_dataset(WorkerSpec.model_validate(raw))
    snapshot = Path(raw["outputDir"])
    assert (snapshot / "meta_train" / "math_query.parquet").read_bytes() == (
        source / "meta_train" / "math_query.parquet"
    ).read_bytes()
    params = FomamlParams.model_validate(point.training[0].params)
    prepare(snapshot, data_root / "prepared", params)
    tasks = {task.name: task for task in load_tasks(data_root / "prepared", params)}
    assert (len(tasks["biology"].support), len(tasks["math"].query)) == (2, 4)

    # an edited task file is other content: other fingerprints
    edited = source / "meta_train" / "math_query.parquet"
    edited.write_bytes((source / "meta_train" / "math_support.parquet").read_bytes())
    again = controller.plan_for("ns", spec(_seed_tasks()), CREATED)
    assert {s.fingerprint for s in again.stages}.isdisjoint({s.fingerprint for s in plan.stages})


def test_a_training_stage_that_cannot_fit_its_gpu_is_refused_before_any_artifact(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasweep.api.settings import JobDefaults
    from datasweep.testing.real_configs import LLAMA_3_1_8B, LLAMA_3_2_1B

    model = data_root / "models" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(LLAMA_3_1_8B), encoding="utf-8")
    params = {"task_key": "task", "prompt_template": "{question}", "response_template": "{answer}"}
    with pytest.raises(PlanError) as caught:
        controller.plan_for("ns", spec(params), CREATED)
    assert caught.value.reason == "InsufficientGPUMemory"
    message = str(caught.value)
    assert message.startswith("a training stage cannot fit its GPU: spec.training[0] meta (fomaml) needs about")
    assert "NVIDIA-H100-80GB-HBM3 has 79.6 GiB (assumed" in message
    assert "resources.gpus 4, nodes 1 with params.use_fsdp: true ->" in message
    # the GPU of the operator's node selector, and a model that fits it
    selector = JobDefaults(gpu_node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})
    monkeypatch.setattr(
        controller, "settings", lambda: OperatorSettings(data_root=str(data_root), job_defaults=selector)
    )
    (model / "config.json").write_text(json.dumps(LLAMA_3_2_1B), encoding="utf-8")
    with pytest.raises(PlanError, match=r"NVIDIA-L4 has 22.5 GiB \(node selector nvidia.com/gpu.product"):
        controller.plan_for("ns", spec(params), CREATED)
    small = {**params, "dtype": "bfloat16", "enable_gradient_checkpointing": True, "max_length": 256}
    assert controller.plan_for("ns", spec(small), CREATED).points
    (model / "config.json").unlink()  # no config.json where the operator looks: the worker finds out
    assert controller.plan_for("ns", spec(params), CREATED).points
