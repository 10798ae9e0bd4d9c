"""fomaml's training curves and TensorBoard events come from the real meta-training: one point per meta-step,
the few-shot query loss before/after adaptation at every evaluation, listed in the manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest

from ..events import assert_curves_and_events_listed, read_scalars
from .test_cli import TRAIN_PARAMS, _spec


def test_fomaml_writes_curves_and_tensorboard_events(tiny_model: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(tmp_path / "termination-log"))
    spec = _spec(tmp_path, tiny_model, {**TRAIN_PARAMS, "total_steps": 3, "test_freq": 2, "tensorboard": True})
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    out = Path(yaml.safe_load(spec.read_text())["outputDir"])
    manifest = read_manifest(out)
    assert manifest is not None
    assert_curves_and_events_listed(manifest, out)
    scalars = read_scalars(out)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["meta/query_loss"]] == [1, 2, 3]
    assert [value for _, value in scalars["meta/query_loss"]] == pytest.approx([s["query_loss"] for s in steps])
    assert [step for step, _ in scalars["meta/learning_rate"]] == [1, 2, 3]
    # evaluations at step 2 (test_freq) and the final one at step 3, before and after adaptation
    final = json.loads((out / "eval_results.json").read_text())
    periodic = json.loads((out / "eval_history.jsonl").read_text().splitlines()[0])
    before, after = scalars["fewshot/loss_before"], scalars["fewshot/loss_after"]
    assert [step for step, _ in after] == [2, 3]
    assert [v for _, v in before] == pytest.approx([periodic["mean_before_loss"], final["mean_before_loss"]])
    assert [v for _, v in after] == pytest.approx([periodic["mean_after_loss"], final["mean_after_loss"]])


def test_tensorboard_without_the_package_fails_before_any_work(
    tiny_model: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    spec = _spec(tmp_path, tiny_model, {**TRAIN_PARAMS, "tensorboard": True})
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 2, result.output  # bad input: a retry cannot help
    assert "params.tensorboard is true" in result.output
    assert "pip install 'datasweep[tensorboard]'" in result.output
    out = Path(yaml.safe_load(spec.read_text())["outputDir"])
    assert not (out / "metrics.jsonl").exists()
    assert not (out / "data").exists()


def test_a_resumed_run_continues_the_same_tensorboard_series(tiny_model: Path, tmp_path: Path) -> None:
    """Killed after step 3 with a checkpoint at step 2: step 3 is redone, and TensorBoard shows it once."""
    from .test_training import make_trainer

    class Killed(RuntimeError):
        pass

    def kill_at_three(step: int) -> None:
        if step == 3:
            raise Killed

    settings = {"total_steps": 4, "save_freq": 2, "test_freq": 0, "tensorboard": True}
    out = tmp_path / "run"
    interrupted = make_trainer(tiny_model, **settings)
    with pytest.raises(Killed):
        interrupted.train(out, on_step=kill_at_three)
    interrupted.close_board()
    before = read_scalars(out)["meta/query_loss"]
    assert [step for step, _ in before] == [1, 2, 3]
    resumed = make_trainer(tiny_model, **settings)
    resumed.train(out)
    resumed.close_board()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    after = read_scalars(out)["meta/query_loss"]
    assert [step for step, _ in after] == [1, 2, 3, 4]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [value for _, value in after] == pytest.approx([line["query_loss"] for line in lines])
    assert after[:2] == before[:2]
