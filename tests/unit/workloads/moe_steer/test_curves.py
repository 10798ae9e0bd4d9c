"""moe-steer's training curves and TensorBoard events come from the real expert-only training: loss and
learning rate per step, mean loss per epoch, listed in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest

from ..events import assert_curves_and_events_listed, read_scalars
from .test_cli import _spec


def test_moe_steer_writes_curves_and_tensorboard_events(
    tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, tiny_olmoe, paired_artifact, max_per_layer=2, num_epochs=2, tensorboard=True)
    result = CliRunner().invoke(
        cli, ["worker", "moe-steer", "--spec", str(spec)], env={"DATASWEEP_TERMINATION_LOG": str(tmp_path / "term")}
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = read_manifest(out)
    assert manifest is not None
    assert_curves_and_events_listed(manifest, out)
    metadata = json.loads((out / "training_metadata.json").read_text())
    scalars = read_scalars(out)
    assert metadata["steps"] == 4  # 2 batches x 2 epochs
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx(metadata["losses"], abs=1e-5)
    assert [value for _, value in scalars["train/learning_rate"]] == pytest.approx(metadata["learning_rates"])
    assert [step for step, _ in scalars["train/epoch_loss"]] == [2, 4]
    first, second = metadata["losses"][:2], metadata["losses"][2:]
    expected = [sum(first) / 2, sum(second) / 2]
    assert [value for _, value in scalars["train/epoch_loss"]] == pytest.approx(expected, abs=1e-5)
    assert metadata["epoch_losses"] == pytest.approx(expected, abs=1e-5)


def test_moe_steer_curves_without_tensorboard_have_no_event_files(
    tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, tiny_olmoe, paired_artifact, max_per_layer=2)
    result = CliRunner().invoke(
        cli, ["worker", "moe-steer", "--spec", str(spec)], env={"DATASWEEP_TERMINATION_LOG": str(tmp_path / "term")}
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out")
    assert manifest is not None
    assert "training_curves.png" in manifest.outputs.reports
    assert not (tmp_path / "out" / "tensorboard").exists()
    assert not any(path.startswith("tensorboard/") for path in manifest.outputs.metrics)
