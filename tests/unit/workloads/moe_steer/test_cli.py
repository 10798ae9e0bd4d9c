"""`datasweep worker moe-steer`: the whole stage from a WorkerSpec, and the analyze / train subcommands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from datasweep.api.worker import WorkerSpec, dump_worker_spec
from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest

FINGERPRINT = "ab" * 32


def _spec(tmp_path: Path, model: Path, data: Path, **params: object) -> Path:
    spec = WorkerSpec(
        stage="moe-steer",
        artifact="safety-moe-steer-abababababab",
        fingerprint=FINGERPRINT,
        dataset="SafetyPrompts",
        semantic_name="moesteer",
        output_dir=str(tmp_path / "out"),
        inputs={"data": str(data)},
        base_model=str(model),
        params={"batch_size": 4, "max_batches": 2, "num_epochs": 1, "top_n": 3, "device": "cpu", **params},
    )
    path = tmp_path / "worker.yaml"
    path.write_text(dump_worker_spec(spec), encoding="utf-8")
    return path


def test_whole_stage_from_a_worker_spec(tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, tiny_olmoe, paired_artifact, max_per_layer=2)
    result = CliRunner().invoke(
        cli, ["worker", "moe-steer", "--spec", str(spec)], env={"DATASWEEP_TERMINATION_LOG": str(tmp_path / "term")}
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.fingerprint == FINGERPRINT
    assert manifest.stage == "moe-steer"
    listed = {entry.path for entry in manifest.files}
    for name in (
        "batches.jsonl",
        "risk_diff.json",
        "risk_diff.csv",
        "risk_diff_per_batch.npy",
        "selected_experts.json",
        "expert_mask.npy",
        "analysis_metadata.json",
        "training_metadata.json",
        "final_model/config.json",
        "final_model/model.safetensors",
    ):
        assert name in listed, name
    assert not any(".partial" in path for path in listed)

    mask = np.load(out / "expert_mask.npy")
    assert mask.shape == (2, 8)
    assert mask.sum() == 3
    assert (mask.sum(axis=1) <= 2).all()
    table = json.loads((out / "risk_diff.json").read_text())
    assert table["num_batches"] == 2
    assert table["moe_layers"] == [0, 1]
    chosen = [(row["layer"], row["expert"]) for row in table["ranking"] if row["selected"]]
    assert sorted(chosen) == sorted(zip(*np.nonzero(mask), strict=True))
    with (out / "risk_diff.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16
    assert rows[0]["rank"] == "1"
    metadata = json.loads((out / "training_metadata.json").read_text())
    assert metadata["steps"] == 2
    assert metadata["num_batches"] == 2
    assert sorted(map(tuple, metadata["selected_experts"])) == sorted(chosen)
    assert manifest.rows == 8  # batches.jsonl rows
    assert json.loads((tmp_path / "term").read_text())["files"] == len(manifest.files)


def test_analyze_then_train_with_plain_flags(tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    analysis = tmp_path / "analysis"
    result = runner.invoke(
        cli,
        [
            "worker",
            "moe-steer",
            "analyze",
            "--model",
            str(tiny_olmoe),
            "--data",
            str(paired_artifact),
            "--out",
            str(analysis),
            "--batch-size",
            "4",
            "--top-n",
            "2",
            "-p",
            "max_batches=2",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.load(analysis / "expert_mask.npy").sum() == 2
    assert not (analysis / "final_model").exists()

    trained = tmp_path / "trained"
    result = runner.invoke(
        cli,
        [
            "worker",
            "moe-steer",
            "train",
            "--model",
            str(tiny_olmoe),
            "--analysis",
            str(analysis),
            "--out",
            str(trained),
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (trained / "final_model" / "config.json").is_file()
    assert np.array_equal(np.load(trained / "expert_mask.npy"), np.load(analysis / "expert_mask.npy"))
    assert json.loads((trained / "training_metadata.json").read_text())["steps"] == 2

    # train with a batch size the analysis did not use: a clear error, exit code 2
    result = runner.invoke(
        cli,
        [
            "worker",
            "moe-steer",
            "train",
            "--model",
            str(tiny_olmoe),
            "--analysis",
            str(analysis),
            "--out",
            str(trained),
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "batches have sizes [4] but batch_size is 8" in result.output


def test_bad_inputs_exit_2_with_a_message(
    tiny_olmoe: Path, tiny_llama: Path, paired_artifact: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    bad_ratio = _spec(tmp_path, tiny_olmoe, paired_artifact, safe_ratio=0.3)
    result = runner.invoke(cli, ["worker", "moe-steer", "--spec", str(bad_ratio)])
    assert result.exit_code == 2
    assert "spec.params: Value error, safe_ratio 0.3 does not divide batch_size 4" in result.output

    dense = _spec(tmp_path, tiny_llama, paired_artifact)
    result = runner.invoke(cli, ["worker", "moe-steer", "--spec", str(dense)])
    assert result.exit_code == 2
    assert "is not a mixture-of-experts model" in result.output

    raw = yaml.safe_load(_spec(tmp_path, tiny_olmoe, paired_artifact).read_text())
    raw["stage"] = "qa"
    wrong_stage = tmp_path / "qa.yaml"
    wrong_stage.write_text(yaml.safe_dump(raw))
    result = runner.invoke(cli, ["worker", "moe-steer", "--spec", str(wrong_stage)])
    assert result.exit_code == 2
    assert "this is the 'moe-steer' worker" in result.output
    assert read_manifest(tmp_path / "out") is None
