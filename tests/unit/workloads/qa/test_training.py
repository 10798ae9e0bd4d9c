"""Training outputs and resume after an interruption (a killed pod restarts from its last epoch checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from datasweep.api.stages.qa import QaParams  # noqa: E402
from datasweep.workloads.qa.data import FieldNames, QaRecord, validate_record  # noqa: E402

from .conftest import FAST_PARAMS, make_alias_title_records  # noqa: E402


def _records(count: int, seed: int) -> list[QaRecord]:
    out = []
    for raw in make_alias_title_records(count, seed):
        record, problem, _ = validate_record(raw, FieldNames(), "synthetic")
        assert record is not None, problem
        out.append(record)
    return out


def _weights(directory: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_interrupted_training_resumes_to_the_same_model(tmp_path: Path, tiny_bert: Path) -> None:
    from datasweep.workloads.qa.training import QaResumeError, QaTrainer, TrainingInterrupted

    torch.set_num_threads(1)
    train, dev = _records(60, 11), _records(15, 12)
    params = QaParams(**{**FAST_PARAMS, "num_train_epochs": 2, "negative_downsample": 0.5, "plot_update_every": 100})

    straight = QaTrainer(params, tiny_bert, tmp_path / "straight", train, dev).train()
    assert straight.resumed_from is None

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        QaTrainer(params, tiny_bert, resumed_dir, train, dev).train(stop_after_epoch=1)
    assert (resumed_dir / "checkpoint-epoch-1" / "trainer_state.pt").is_file()
    assert not (resumed_dir / "checkpoint-epoch-2").exists()
    result = QaTrainer(params, tiny_bert, resumed_dir, train, dev).train()
    assert result.resumed_from == 1
    assert "resumed from checkpoint-epoch-1" in (resumed_dir / "train.log").read_text()

    a, b = _weights(tmp_path / "straight" / "checkpoint-epoch-2"), _weights(resumed_dir / "checkpoint-epoch-2")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history_a = json.loads((tmp_path / "straight" / "metrics_history.json").read_text())
    history_b = json.loads((resumed_dir / "metrics_history.json").read_text())
    assert [e["eval_loss"] for e in history_a["eval"]] == pytest.approx([e["eval_loss"] for e in history_b["eval"]])
    assert len(history_b["steps"]) == len(history_a["steps"])

    # outputs of seed 002; by default the best plus the last checkpoint stay (issue 15), not every epoch
    for name in ("best", "checkpoint-epoch-2"):
        assert (resumed_dir / name / "model.safetensors").is_file()
    assert not (resumed_dir / "checkpoint-epoch-1").exists()
    assert json.loads((resumed_dir / "best" / "qa_config.json").read_text())["max_length"] == FAST_PARAMS["max_length"]
    assert (resumed_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    # a checkpoint of other params is never mixed in
    other = QaParams(**{**FAST_PARAMS, "num_train_epochs": 2, "learning_rate": 1e-3})
    with pytest.raises(QaResumeError, match="different params"):
        QaTrainer(other, tiny_bert, resumed_dir, train, dev).train()


def test_early_stopping_stops_when_the_dev_metric_stalls(tmp_path: Path, tiny_bert: Path) -> None:
    from datasweep.workloads.qa.training import QaTrainer

    torch.set_num_threads(1)
    train, dev = _records(30, 21), _records(9, 22)
    # a learning rate this small cannot move the dev loss by 1.0: epoch 2 is "no improvement"
    params = QaParams(
        **{
            **FAST_PARAMS,
            "num_train_epochs": 5,
            "learning_rate": 1e-7,
            "early_stopping_patience": 1,
            "early_stopping_min_delta": 1.0,
            "early_stopping_metric": "eval_loss",
            "keep_last_checkpoints": 1,
        }
    )
    result = QaTrainer(params, tiny_bert, tmp_path, train, dev).train()
    assert result.stopped_early
    assert result.epochs_run == 2
    assert result.best_epoch == 1
    assert sorted(p.name for p in tmp_path.glob("checkpoint-epoch-*")) == ["checkpoint-epoch-2"]
    assert "early stopping after epoch 2" in (tmp_path / "train.log").read_text()
