"""End to end: WorkerSpec -> `datasweep worker qa --spec` -> manifest; evaluate and predict commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.testing.artifacts import finalize_as_generate
from datasweep.workloads.qa.metrics import squad_v2_evaluate

from .conftest import FAST_PARAMS, make_alias_title_records, write_jsonl

FINGERPRINT = "ab" * 32


def _spec(tmp_path: Path, data: Path, model: Path, params: dict[str, Any]) -> Path:
    spec = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": "WorkerSpec",
        "stage": "qa",
        "artifact": "aliastitle-qa-abababababab",
        "fingerprint": FINGERPRINT,
        "dataset": "aliastitle",
        "semanticName": "temp07_topp10_gpt4o",
        "outputDir": str(tmp_path / "out"),
        "inputs": {"data": str(data)},
        "baseModel": str(model),
        "params": params,
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_stage(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[str, Any]:
    """The whole stage on 600 synthetic alias/title questions (4 epochs, about 30 s on one CPU core)."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("qa-stage")
    data = root / "generate"
    splits = {
        "train": make_alias_title_records(600, seed=1),
        "validation": make_alias_title_records(45, seed=2),
        "test": make_alias_title_records(24, seed=3),
    }
    for split, records in splits.items():
        write_jsonl(data / "AliasTitle" / f"aliastitle_{split}.jsonl", records)
    finalize_as_generate(data, "AliasTitle")
    params = {**FAST_PARAMS, "num_train_epochs": 4, "learning_rate": 2e-3, "plot_update_every": 1000}
    spec = _spec(root, data, tiny_bert, params)
    result = CliRunner().invoke(cli, ["worker", "qa", "--spec", str(spec)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"out": root / "out", "data": data, "splits": splits, "spec": spec, "stdout": result.output}


def test_stage_writes_seed_outputs_and_manifest_last(trained_stage: dict[str, Any]) -> None:
    out: Path = trained_stage["out"]
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.fingerprint == FINGERPRINT
    assert manifest.stage == "qa"
    listed = {entry.path for entry in manifest.files}
    for name in (
        "training_curves.png",
        "metrics_history.json",
        "train.log",
        "eval_results.json",
        "predictions.json",
        "null_odds.json",
        "test_results.json",
        "best/model.safetensors",
        "best/qa_config.json",
        "checkpoint-epoch-4/trainer_state.pt",
    ):
        assert name in listed, name
    assert (out / ".fingerprint").read_text().strip() == FINGERPRINT
    assert manifest.extra["null_threshold"] == json.loads((out / "eval_results.json").read_text())["null_threshold"]


def test_trained_model_beats_the_always_no_answer_baseline(trained_stage: dict[str, Any]) -> None:
    dev = trained_stage["splits"]["validation"]
    gold = {r["id"]: r["answers"]["text"] for r in dev}
    baseline = squad_v2_evaluate(gold, dict.fromkeys(gold, ""))["f1"]  # = share of unanswerable questions
    results = json.loads((trained_stage["out"] / "eval_results.json").read_text())
    assert baseline == pytest.approx(100 * 15 / 45)
    assert results["f1"] >= baseline + 20, results  # F1 at the dev-tuned null threshold
    assert results["HasAns_f1"] > 30
    # predictions.json is what was scored: the official metric on it gives the same F1
    preds = json.loads((trained_stage["out"] / "predictions.json").read_text())
    assert squad_v2_evaluate(gold, preds)["f1"] == pytest.approx(results["f1"])


def test_rerun_of_a_complete_stage_does_nothing(trained_stage: dict[str, Any]) -> None:
    before = (trained_stage["out"] / "manifest.json").read_text()
    result = CliRunner().invoke(cli, ["worker", "qa", "--spec", str(trained_stage["spec"])])
    assert result.exit_code == 0, result.output
    assert (trained_stage["out"] / "manifest.json").read_text() == before


def test_evaluate_and_predict_commands(trained_stage: dict[str, Any], tmp_path: Path) -> None:
    best = trained_stage["out"] / "best"
    data = trained_stage["data"]
    runner = CliRunner()
    result = runner.invoke(
        cli, ["worker", "qa", "evaluate", "--model", str(best), "--data", str(data), "--output", str(tmp_path / "eval")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    stage = json.loads((trained_stage["out"] / "eval_results.json").read_text())
    assert metrics["best_f1"] == pytest.approx(stage["best_f1"])
    assert {"HasAns_f1", "NoAns_f1", "best_exact_thresh"} <= metrics.keys()

    # the official script's mode: score files
    result = runner.invoke(
        cli,
        [
            "worker",
            "qa",
            "evaluate",
            "--data",
            str(data),
            "--predictions",
            str(tmp_path / "eval" / "predictions.json"),
            "--null-odds",
            str(tmp_path / "eval" / "null_odds.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["best_f1"] == pytest.approx(stage["best_f1"])

    questions = write_jsonl(
        tmp_path / "questions.jsonl",
        [{"id": r["id"], "context": r["context"], "question": r["question"]} for r in trained_stage["splits"]["test"]],
    )
    result = runner.invoke(
        cli,
        [
            "worker",
            "qa",
            "predict",
            "--model",
            str(best),
            "--data",
            str(questions),
            "--output",
            str(tmp_path / "pred"),
            "--n-best",
            "3",
            "--max-answer-length",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    odds = json.loads((tmp_path / "pred" / "null_odds.json").read_text())
    nbest = json.loads((tmp_path / "pred" / "nbest_predictions.json").read_text())
    assert preds.keys() == odds.keys() == nbest.keys() == {r["id"] for r in trained_stage["splits"]["test"]}
    assert all(len(entries) <= 3 + 1 for entries in nbest.values())  # n-best spans plus the null entry
    assert all(len(text.split()) <= 2 for text in preds.values())  # max answer length in tokens (names are 1 token+)


def test_bad_inputs_exit_2_with_the_record_id(tmp_path: Path, tiny_bert: Path) -> None:
    data = tmp_path / "data"
    good = make_alias_title_records(6, seed=5)
    bad = {**good[0], "id": "broken-7", "answers": {"text": ["Zed"], "answer_start": [999]}}
    write_jsonl(data / "x_train.jsonl", [*good, bad])
    write_jsonl(data / "x_validation.jsonl", good)
    spec = _spec(tmp_path, data, tiny_bert, {**FAST_PARAMS})
    result = CliRunner().invoke(cli, ["worker", "qa", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "id broken-7" in result.output
    assert "outside the context" in result.output
    assert read_manifest(tmp_path / "out") is None

    spec = _spec(tmp_path, data, tiny_bert, {"learning_rate": -1, "nonsense": 1})
    result = CliRunner().invoke(cli, ["worker", "qa", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "spec.params.learning_rate" in result.output
    assert "spec.params.nonsense" in result.output

    result = CliRunner().invoke(
        cli,
        [
            "worker",
            "qa",
            "train",
            "--data",
            str(data),
            "--model",
            str(tmp_path / "nope"),
            "--output",
            str(tmp_path / "o"),
            "--set",
            "num_workers=0",
            "--set",
            "bad_records=skip",
        ],
    )
    assert result.exit_code == 2
    assert "model directory not found" in result.output


def test_evaluate_threshold_zero_is_a_threshold(tmp_path: Path) -> None:
    # issue 15, defect 3: `--threshold 0` used to score at 1.0 (`threshold or 1.0`)
    data = write_jsonl(
        tmp_path / "gold.jsonl",
        [
            {
                "id": "q1",
                "context": "Paris is big.",
                "question": "city?",
                "answers": {"text": ["Paris"], "answer_start": [0]},
            },
            {"id": "q2", "context": "Rome is old.", "question": "none?", "answers": {"text": [], "answer_start": []}},
        ],
    )
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps({"q1": "Paris", "q2": "Rome"}), encoding="utf-8")
    odds = tmp_path / "null_odds.json"
    odds.write_text(json.dumps({"q1": -0.5, "q2": 0.5}), encoding="utf-8")

    def f1_at(*threshold: str) -> float:
        args = ["worker", "qa", "evaluate", "--data", str(data), "--predictions", str(preds), "--null-odds", str(odds)]
        result = CliRunner().invoke(cli, [*args, *threshold])
        assert result.exit_code == 0, result.output
        return float(json.loads(result.output)["f1"])

    assert f1_at("--threshold", "0") == pytest.approx(100.0)  # q2's odds 0.5 > 0: no answer, right
    assert f1_at("--threshold", "1") == pytest.approx(50.0)  # q2 answered 'Rome': wrong
    assert f1_at() == pytest.approx(50.0)  # the official default threshold 1.0


def test_train_from_one_merged_file(tmp_path: Path, tiny_bert: Path) -> None:
    """Seed 002: `train` on merged.converted.*.jsonl alone holds out a seeded dev split (dev_ratio)."""
    import torch

    torch.set_num_threads(1)
    merged = write_jsonl(tmp_path / "merged.converted.alias_title.jsonl", make_alias_title_records(80, seed=9))
    settings = [f"{key}={value}" for key, value in {**FAST_PARAMS, "num_train_epochs": 1, "dev_ratio": 0.25}.items()]
    args = ["worker", "qa", "train", "--data", str(merged), "--model", str(tiny_bert), "--output", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, *(part for s in settings for part in ("--set", s))])
    assert result.exit_code == 0, result.output
    history = json.loads((tmp_path / "o" / "metrics_history.json").read_text())
    assert history["eval"][0]["total"] == 20  # a quarter of the 80 one-question contexts
