"""`datasweep run` end to end with the real workers: generate -> fomaml, moe-steer and qa on its output,
reuse on a rerun, and a field mismatch answered before anything is paid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.testing import datasets
from datasweep.testing.openai_server import OpenAITestServer

BATCH = "batch_20250101_chain"


TRAINING = datasets.CHAIN_TRAINING


def _workspace(tmp_path: Path, tiny_llama: Path, tiny_olmoe: Path, tiny_bert: Path) -> Path:
    datasets.write_splits(tmp_path / "raw" / "mixed", datasets.MIXED, datasets.mixed_splits())
    models = tmp_path / "models"
    models.mkdir()
    paths = {"fomaml": tiny_llama, "moe-steer": tiny_olmoe, "qa": tiny_bert}
    for kind, name in datasets.TINY_MODELS.items():
        (models / name).symlink_to(paths[kind])
    return tmp_path


def _experiment(tmp_path: Path, server: OpenAITestServer, training: list[dict[str, Any]]) -> Path:
    spec = {
        "batch": BATCH,
        "datasets": [{"name": "Mixed", "source": {"path": "raw/mixed"}}],
        "generation": {
            "backend": "openai-compatible",
            "baseURL": server.url,
            "model": "gpt-4o",
            "options": {"concurrency": 4, "rephrase_fields": datasets.MIXED_REPHRASE_FIELDS},
        },
        "validation": {"model": "gpt-4o"},
        "training": training,
    }
    path = tmp_path / "chain.yaml"
    obj = {"apiVersion": "datasweep.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "chain"}, "spec": spec}
    path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    return path


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["run", *map(str, args)], catch_exceptions=False)


def test_generate_then_every_training_kind_with_datasweep_run(
    tmp_path: Path, openai_server: OpenAITestServer, tiny_llama: Path, tiny_olmoe: Path, tiny_bert: Path
) -> None:
    workspace = _workspace(tmp_path, tiny_llama, tiny_olmoe, tiny_bert)
    experiment = _experiment(workspace, openai_server, TRAINING)
    root = workspace / "root"
    first = _run(experiment, "--root", root, "--data-dir", workspace)
    assert first.exit_code == 0, first.output
    assert "1 points: 0 reused, 1 created (4 stages: 0 reused, 4 created)" in first.output

    generate = root / "_shared" / "Mixed" / "temp07_topp10_gpt4o"
    assert (generate / "rejected" / "mixed_train.jsonl").is_file()
    kept_train = read_manifest(generate).outputs.data["train"][0].rows  # type: ignore[union-attr]
    assert kept_train == 18  # 24 records, every fourth rejected
    stages = {p.name.split("-")[0]: p for p in (generate / "train").iterdir()}
    assert set(stages) == {"fomaml", "moe", "qa"}
    for directory in stages.values():
        assert read_manifest(directory) is not None
    prepare = json.loads((stages["fomaml"] / "data" / "prepare_report.json").read_text())
    assert prepare["records"] == 18 + 6 + 6
    analysis = json.loads((stages["moe"] / "analysis_metadata.json").read_text())
    assert analysis["records"] == kept_train
    qa = read_manifest(stages["qa"])
    assert qa is not None
    assert qa.extra["skipped_records"] == 0
    assert (root / BATCH / "Mixed" / "temp07_topp10_gpt4o").is_symlink()

    requests = openai_server.counts["POST /v1/chat/completions"]
    second = _run(experiment, "--root", root, "--data-dir", workspace)
    assert second.exit_code == 0, second.output
    assert "1 points: 1 reused, 0 created (4 stages: 4 reused, 0 created)" in second.output
    assert openai_server.counts["POST /v1/chat/completions"] == requests


def test_a_field_the_stage_needs_is_missing_before_any_request(
    tmp_path: Path, openai_server: OpenAITestServer, tiny_llama: Path, tiny_olmoe: Path, tiny_bert: Path
) -> None:
    workspace = _workspace(tmp_path, tiny_llama, tiny_olmoe, tiny_bert)
    wrong = json.loads(json.dumps(TRAINING))
    wrong[0]["params"]["task_key"] = "category"
    wrong[2]["params"]["context_field"] = "passage"
    experiment = _experiment(workspace, openai_server, wrong)
    requests = openai_server.counts["POST /v1/chat/completions"]
    result = _run(experiment, "--root", workspace / "root", "--data-dir", workspace)
    assert result.exit_code == 2, result.output
    assert "spec.training[0].params.task_key: field 'category' is not in the Mixed records" in result.output
    assert "spec.training[2].params.context_field: field 'passage'" in result.output
    assert "fields found: answer, answers, context, id, label, question, task" in result.output
    assert "generation adds original_question, validation" in result.output
    assert openai_server.counts["POST /v1/chat/completions"] == requests
    assert not (workspace / "root" / "_shared").exists()

    # a field that generation produces counts as present
    produced = json.loads(json.dumps(TRAINING))
    produced[0]["params"]["prompt_template"] = "Q: {original_question}\nA:"
    experiment = _experiment(workspace, openai_server, produced[:1])
    plan = CliRunner().invoke(
        cli, ["plan", str(experiment), "--root", str(workspace / "root2"), "--data-dir", str(workspace)]
    )
    assert plan.exit_code == 0, plan.output
