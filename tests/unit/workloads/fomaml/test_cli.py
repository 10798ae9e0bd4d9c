"""`datasweep worker fomaml`: the whole stage from a WorkerSpec, and the manual subcommands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest

from .conftest import PREP_PARAMS, synthetic_records, write_generate_artifact

TRAIN_PARAMS: dict[str, Any] = {
    **PREP_PARAMS,
    "inner_lr": 0.05,
    "num_inner_steps": 1,
    "inner_batch_size": 2,
    "query_batch_size": 2,
    "meta_batch_size": 2,
    "outer_lr": 1e-3,
    "total_steps": 2,
    "save_freq": 1,
    "test_freq": 1,
    "eval_max_samples": 3,
    "max_length": 64,
}


def _spec(tmp_path: Path, model: Path, params: dict[str, Any]) -> Path:
    generate = write_generate_artifact(tmp_path / "_shared" / "Copa" / "temp07", synthetic_records(n_tasks=2))
    spec = {
        "stage": "fomaml",
        "artifact": "copa-fomaml-abc",
        "fingerprint": "ab" * 32,
        "dataset": "Copa",
        "semanticName": "temp07",
        "outputDir": str(generate / "train" / "fomaml-abababababab"),
        "inputs": {"data": str(generate)},
        "baseModel": str(model),
        "params": params,
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_worker_spec_runs_the_whole_stage(tiny_model: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(tmp_path / "termination-log"))
    spec = _spec(tmp_path, tiny_model, TRAIN_PARAMS)
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    out = Path(yaml.safe_load(spec.read_text())["outputDir"])
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.stage == "fomaml"
    assert manifest.fingerprint == "ab" * 32
    paths = {entry.path for entry in manifest.files}
    assert {"data/meta_train/task0_support.parquet", "data/few_shot_eval/task1_test.parquet"} <= paths
    assert {"validation_report.json", "eval_results.json", "metrics.jsonl", "training_metadata.json"} <= paths
    assert "final_model/config.json" in paths
    assert "checkpoints/latest" in paths
    assert manifest.usage.wall_seconds > 0
    assert manifest.usage.gpu_seconds == 0.0
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["tasks"]) == {"task0", "task1"}
    assert {"before", "after"} <= set(results["tasks"]["task0"])
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((out / "eval_history.jsonl").read_text().splitlines()) == 1


def test_worker_spec_with_bad_params_or_data_exits_2(tiny_model: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, tiny_model, {**TRAIN_PARAMS, "inner_lr": -1})
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "params.inner_lr: Input should be greater than 0" in result.output

    spec = _spec(tmp_path / "b", tiny_model, {**TRAIN_PARAMS, "min_query_samples": 500})
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "fewer than min_query_samples=500" in result.output
    out = Path(yaml.safe_load(spec.read_text())["outputDir"])
    assert not (out / "manifest.json").exists()


def test_manual_prepare_validate_train_eval(tiny_model: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    source = write_generate_artifact(tmp_path / "gen", synthetic_records(n_tasks=2))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TRAIN_PARAMS))
    data = tmp_path / "data"
    base = ["worker", "fomaml"]
    result = runner.invoke(
        cli, [*base, "prepare", "--input", str(source), "--output", str(data), "--params", str(params)]
    )
    assert result.exit_code == 0, result.output
    assert "task0: support=6, query=8, test=6" in result.output

    result = runner.invoke(cli, [*base, "validate", str(data), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "All checks passed." in result.output

    out = tmp_path / "run"
    result = runner.invoke(
        cli,
        [
            *base,
            "train",
            "--data",
            str(data),
            "--model",
            str(tiny_model),
            "--output",
            str(out),
            "--params",
            str(params),
            "--set",
            "total_steps=1",
            "--set",
            "test_freq=0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "final_model" / "config.json").exists()

    result = runner.invoke(
        cli,
        [
            *base,
            "eval",
            "--data",
            str(data),
            "--model",
            str(out / "final_model"),
            "--params",
            str(params),
            "--output",
            str(tmp_path / "eval.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["mean_after_loss"] > 0

    (data / "meta_train" / "task1_query.parquet").unlink()
    result = runner.invoke(cli, [*base, "validate", str(data)])
    assert result.exit_code == 2
    assert "task1_query.parquet: missing" in result.output
