"""Each training kind on what the real generate worker wrote (rejected records and reports present).

The inputs are never hand-written: the generate worker runs against the test OpenAI server, whose judge
rejects every record carrying the reject marker, then the training worker runs from a WorkerSpec exactly
as a Job would (`datasweep worker <stage> --spec FILE`).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import torch
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.recipes import recipe_version
from datasweep.store.inputs import read_input
from datasweep.store.manifest import Manifest, read_manifest
from datasweep.testing.datasets import REJECT_MARKER

from .conftest import spec_for, write_spec


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _train(stage: str, dataset: str, generate_dir: Path, model: Path, params: dict[str, object]) -> Manifest:
    """The stage's Job: its output nests under the generate directory, as in the shared layout."""
    output = generate_dir / "train" / f"{stage}-abcdefabcdef"
    spec = spec_for(stage, dataset, output, params, inputs={"data": str(generate_dir)}, baseModel=str(model))
    path = write_spec(spec, generate_dir.parent / f"{stage}.yaml")
    result = CliRunner().invoke(cli, ["worker", stage, "--spec", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(output)
    assert manifest is not None
    # provenance (issue 25): the versions it ran with and the device it trained on
    assert manifest.provenance.recipe == recipe_version(stage)
    assert manifest.provenance.libraries["torch"] == importlib.metadata.version("torch")
    on_gpu = torch.cuda.is_available() and params.get("device") != "cpu"
    assert manifest.provenance.gpu == (torch.cuda.get_device_name(0) if on_gpu else "cpu")
    return manifest


def _kept(generate_dir: Path, split: str) -> list[dict[str, object]]:
    manifest = read_manifest(generate_dir)
    assert manifest is not None
    return [row for entry in manifest.outputs.data[split] for row in _read_jsonl(generate_dir / entry.path)]


def test_generate_manifest_lists_outputs_by_role(generated: Callable[[str], Path]) -> None:
    out = generated("Meta")
    manifest = read_manifest(out)
    assert manifest is not None
    data = manifest.outputs.data
    assert {split: [e.path for e in entries] for split, entries in data.items()} == {
        split: [f"Meta/meta_{split}.jsonl"] for split in ("train", "validation", "test")
    }
    assert data["train"][0].rows == 20  # 30 records, every third rejected
    assert len(data["train"][0].sha256) == 64
    assert manifest.outputs.rejected["train"][0].path == "rejected/meta_train.jsonl"
    assert manifest.outputs.rejected["train"][0].rows == 10
    assert "report.json" in manifest.outputs.reports
    # the shared reader: only the accepted files, never reports or rejected records
    found = read_input(out)
    assert [p.relative_to(out).as_posix() for p in found.files()] == [
        "Meta/meta_train.jsonl",
        "Meta/meta_validation.jsonl",
        "Meta/meta_test.jsonl",
    ]


def test_fomaml_trains_on_the_accepted_records_only(generated: Callable[[str], Path], tiny_llama: Path) -> None:
    out = generated("Meta")
    params = {
        "task_key": "task",
        "prompt_template": "Q: {question}\nA:",
        "response_template": " {answer}",
        "k_shots": [1],
        "inner_lr": 0.05,
        "num_inner_steps": 1,
        "inner_batch_size": 2,
        "query_batch_size": 2,
        "meta_batch_size": 2,
        "total_steps": 2,
        "save_freq": 2,
        "test_freq": 0,
        "eval_max_samples": 2,
        "max_length": 48,
    }
    manifest = _train("fomaml", "Meta", out, tiny_llama, params)
    fomaml_dir = out / "train" / "fomaml-abcdefabcdef"
    report = json.loads((fomaml_dir / "data" / "prepare_report.json").read_text())
    assert [Path(p).relative_to(out).as_posix() for p in report["input_files"]] == [
        "Meta/meta_train.jsonl",
        "Meta/meta_validation.jsonl",
        "Meta/meta_test.jsonl",
    ]
    kept = sum(len(_kept(out, split)) for split in ("train", "validation", "test"))
    assert report["records"] == kept == 32
    assert manifest.outputs.model == "final_model"
    assert "eval_results.json" in manifest.outputs.metrics
    assert not manifest.outputs.data  # a model artifact holds no training data for a next stage


def test_moe_steer_never_sees_rejected_records(generated: Callable[[str], Path], tiny_olmoe: Path) -> None:
    out = generated("Safety")
    params = {"batch_size": 4, "max_batches": 2, "num_epochs": 1, "top_n": 2, "device": "cpu"}
    manifest = _train("moe-steer", "Safety", out, tiny_olmoe, params)
    moe_dir = out / "train" / "moe-steer-abcdefabcdef"
    analysis = json.loads((moe_dir / "analysis_metadata.json").read_text())
    assert analysis["input_files"] == [str(out / "Safety" / "safety_train.jsonl")]
    assert analysis["records"] == len(_kept(out, "train")) == 12
    prompts = [str(row["prompt"]) for row in _read_jsonl(moe_dir / "batches.jsonl")]
    assert prompts
    assert not any(REJECT_MARKER in prompt for prompt in prompts)
    assert any(prompt.startswith("rephrased: ") for prompt in prompts)  # the generated text, not the source
    assert manifest.outputs.model == "final_model"


def test_qa_reads_the_splits_through_the_manifest(generated: Callable[[str], Path], tiny_bert: Path) -> None:
    out = generated("AliasTitle")
    assert (out / "rejected" / "aliastitle_test.jsonl").is_file()  # what made qa refuse two test files
    # another stage's outputs beside the data must not be taken for data either
    stray = out / "train" / "fomaml-000000000000" / "data"
    stray.mkdir(parents=True)
    (stray / "x_test.jsonl").write_text('{"id": "x"}\n', encoding="utf-8")
    params = {
        "num_train_epochs": 1,
        "per_device_batch_size": 16,
        "learning_rate": 3e-3,
        "num_workers": 0,
        "max_length": 64,
        "doc_stride": 16,
        "max_answer_length": 12,
        "plot_update_every": 100,
        "early_stopping_patience": 0,
    }
    manifest = _train("qa", "AliasTitle", out, tiny_bert, params)
    assert manifest.extra["data_files"] == {
        split: str(out / "AliasTitle" / f"aliastitle_{split}.jsonl") for split in ("train", "validation", "test")
    }
    assert manifest.extra["skipped_records"] == 0
    assert manifest.extra["test"]["total"] == len(_kept(out, "test")) == 6
    assert manifest.outputs.model == "best"
    assert "eval_results.json" in manifest.outputs.metrics
