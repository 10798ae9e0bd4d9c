"""Seed 000 (issue 15): the worker spec the operator puts into a Job carries the batch and the experiment, so the
artifact's experiment_metadata.json records its first batch and experiment (it had `batch: null`)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.worker import WorkerSpec
from datasweep.controller.experiment import _worker_details
from datasweep.core.plan import PlanInputs, plan_experiment
from datasweep.testing.openai_server import serve_openai
from datasweep.workloads.generate.worker import run_generate


def test_cluster_worker_spec_carries_batch_and_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    source = tmp_path / "copa"
    source.mkdir()
    (source / "copa_train.jsonl").write_text('{"idx": 0, "text": "The man broke his toe."}\n', encoding="utf-8")
    with serve_openai() as server:
        spec = ExperimentSpec.model_validate(
            {
                "batch": "batch_20241229_temperature",
                "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
                "generation": {"backend": "openai-compatible", "baseURL": server.url},
            }
        )
        plan = plan_experiment(spec, PlanInputs({"Copa": "a" * 64}, created=datetime(2024, 12, 29)))
        stage = plan.points[0].generate
        details = _worker_details(spec, stage, "_shared/Copa/x", {}, batch=plan.batch, experiment="copa-temperature")
        raw = yaml.safe_load(details["workerSpec"])
        assert raw["batch"] == "batch_20241229_temperature"
        assert raw["experiment"] == "copa-temperature"
        # the real generate worker on that spec (paths moved from the pod's /data to here)
        worker = WorkerSpec.model_validate(raw).model_copy(
            update={"output_dir": str(tmp_path / "out"), "source_dir": str(source)}
        )
        run_generate(worker)
    metadata = json.loads((tmp_path / "out" / "experiment_metadata.json").read_text())
    assert metadata["batch"] == "batch_20241229_temperature"
    assert metadata["experiment"] == "copa-temperature"
