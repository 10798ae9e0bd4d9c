"""qa's TensorBoard events come from the real training: train loss and learning rate at every optimizer step
(the same series as metrics_history.json and training_curves.png), dev metrics per epoch, in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.testing.artifacts import finalize_as_generate

from ..events import assert_curves_and_events_listed, read_scalars
from .conftest import FAST_PARAMS, make_alias_title_records, write_jsonl
from .test_cli import _spec


def test_qa_writes_tensorboard_events_of_every_step(tmp_path: Path, tiny_bert: Path) -> None:
    import torch

    torch.set_num_threads(1)
    data = tmp_path / "generate"
    for split, (count, seed) in {"train": (60, 21), "validation": (15, 22)}.items():
        write_jsonl(data / "AliasTitle" / f"aliastitle_{split}.jsonl", make_alias_title_records(count, seed=seed))
    finalize_as_generate(data, "AliasTitle")
    spec = _spec(tmp_path, data, tiny_bert, {**FAST_PARAMS, "tensorboard": True})
    result = CliRunner().invoke(
        cli, ["worker", "qa", "--spec", str(spec)], env={"DATASWEEP_TERMINATION_LOG": str(tmp_path / "term")}
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = read_manifest(out)
    assert manifest is not None
    assert_curves_and_events_listed(manifest, out)
    history = json.loads((out / "metrics_history.json").read_text())
    scalars = read_scalars(out)
    steps = history["steps"]  # [step, loss, lr] per optimizer step
    assert [step for step, _ in scalars["train/loss"]] == [row[0] for row in steps]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx([row[1] for row in steps], abs=1e-4)
    assert [value for _, value in scalars["train/learning_rate"]] == pytest.approx([row[2] for row in steps])
    evals = history["eval"]
    assert len(evals) == FAST_PARAMS["num_train_epochs"]
    assert [step for step, _ in scalars["dev/f1"]] == [row["step"] for row in evals]
    assert [value for _, value in scalars["dev/f1"]] == pytest.approx([row["tuned_f1"] for row in evals], abs=1e-3)
    assert [value for _, value in scalars["dev/loss"]] == pytest.approx([row["eval_loss"] for row in evals], abs=1e-4)
