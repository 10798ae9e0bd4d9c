"""The training loop of seed 002: AdamW + linear warmup/decay, gradient accumulation, per-epoch dev
evaluation with a tuned null threshold, best/ selection, early stopping, epoch checkpoints that resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasweep.api.stages.qa import QaParams
from datasweep.store.atomic import append_line_durably, atomic_write_json
from datasweep.workloads.curves import CURVES_FILE
from datasweep.workloads.progress import Progress
from datasweep.workloads.qa.data import QaRecord
from datasweep.workloads.qa.features import Features, build_features, epoch_feature_indices
from datasweep.workloads.qa.loss import LossWeights
from datasweep.workloads.qa.modeling import (
    Collator,
    EvalResult,
    FeatureDataset,
    autocast_for,
    compute_loss,
    evaluate_features,
    load_model_and_tokenizer,
    pick_device,
)
from datasweep.workloads.qa.plots import plot_training_curves
from datasweep.workloads.tensorboard import ScalarWriter, check_available, open_writer

CHECKPOINT_PREFIX = "checkpoint-epoch-"
STATE_JSON = "trainer_state.json"
STATE_TORCH = "trainer_state.pt"
QA_CONFIG = "qa_config.json"
INFERENCE_FIELDS = (
    "max_length",
    "doc_stride",
    "n_best_size",
    "max_answer_length",
    "per_device_eval_batch_size",
    "f1_tokenization",
)


class TrainingInterrupted(RuntimeError):
    """Raised by the `stop_after_epoch` hook (tests simulate a killed pod with it)."""


class QaResumeError(ValueError):
    """The output directory holds checkpoints of a different configuration."""


def loss_weights(params: QaParams) -> LossWeights:
    return LossWeights(
        label_smoothing=params.label_smoothing,
        short_field_weight=params.short_field_weight,
        short_field_boost=params.short_field_boost,
        null_margin=params.null_margin,
        null_margin_weight=params.null_margin_weight,
        max_answer_length=params.max_answer_length,
    )


def params_digest(params: QaParams, base_model: str) -> str:
    """What a checkpoint must match to be resumed: the result-affecting params and the base model."""
    from datasweep.api.stages.qa import OPERATIONAL_FIELDS

    effective = {k: v for k, v in params.model_dump(mode="json").items() if k not in OPERATIONAL_FIELDS}
    payload = json.dumps({"params": effective, "base_model": str(base_model)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainLog:
    """train.log: every line is appended durably and echoed to stderr (the pod log)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}"
        append_line_durably(self.path, line)
        print(line, file=sys.stderr, flush=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def save_model_dir(target: Path, model: Any, tokenizer: Any, extra_files: dict[str, Any]) -> None:
    """Write a model directory under a temp name and rename it into place (never half-written)."""
    tmp = target.parent / f".{target.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for name, payload in extra_files.items():
        if name.endswith(".pt"):
            torch.save(payload, tmp / name)
        else:
            atomic_write_json(tmp / name, payload)
    _fsync_tree(tmp)
    old = target.parent / f".{target.name}.old"
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def checkpoint_epochs(output_dir: Path) -> list[int]:
    """Epochs with a complete checkpoint, oldest first."""
    epochs = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if suffix.isdigit() and (path / STATE_JSON).is_file() and (path / STATE_TORCH).is_file():
            epochs.append(int(suffix))
    return sorted(epochs)


@dataclass
class TrainState:
    epoch: int = 0  # last completed epoch
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    best_threshold: float = 0.0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    history: dict[str, Any] = field(default_factory=lambda: {"steps": [], "train": [], "eval": []})


@dataclass
class TrainResult:
    best_dir: Path
    best_epoch: int
    best_metric: float
    null_threshold: float
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None
    history: dict[str, Any]
    train_features: dict[str, int]
    wall_seconds: float


def _improved(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value - best > min_delta if metric == "best_f1" else best - value > min_delta


def _monitor_value(metric: str, metrics: dict[str, float]) -> float:
    # "best_f1" monitors the dev F1 at the tuned threshold we store (tuned_f1), which scoring reproduces
    return metrics["tuned_f1"] / 100.0 if metric == "best_f1" else metrics["eval_loss"]


def build_optimizer(model: Any, params: QaParams) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        lowered = name.lower()
        (no_decay if name.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered else decay).append(
            parameter
        )
    groups = [
        {"params": decay, "weight_decay": params.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=params.learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> Any:
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class QaTrainer:
    def __init__(
        self,
        params: QaParams,
        base_model: str | Path,
        output_dir: str | Path,
        train_records: Sequence[QaRecord],
        dev_records: Sequence[QaRecord],
        *,
        device: torch.device | None = None,
    ) -> None:
        self.params = params
        self.base_model = str(base_model)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.train_records = list(train_records)
        self.dev_records = list(dev_records)
        self.device = device or pick_device()
        check_available(params.tensorboard)  # before any work: a missing package fails the stage at once
        self.board: ScalarWriter | None = None
        self.log = TrainLog(self.output_dir / "train.log")
        self.weights = loss_weights(params)
        self.digest = params_digest(params, self.base_model)
        seed_everything(params.seed)
        self.model, self.tokenizer = load_model_and_tokenizer(base_model)
        self.model.to(self.device)
        self.pad_token_id = int(self.tokenizer.pad_token_id or 0)
        self.train_features = self._features(self.train_records)
        self.dev_features = self._features(self.dev_records)
        self.optimizer = build_optimizer(self.model, params)
        batches = math.ceil(len(self._epoch_indices(1)) / params.per_device_batch_size)
        self.steps_per_epoch = math.ceil(batches / params.grad_accum_steps)
        self.total_steps = self.steps_per_epoch * params.num_train_epochs
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, params.warmup_ratio)
        self.state = TrainState()

    def _features(self, records: Sequence[QaRecord]) -> Features:
        return build_features(
            self.tokenizer,
            records,
            max_length=self.params.max_length,
            doc_stride=self.params.doc_stride,
            short_field_max_tokens=self.params.short_field_max_tokens,
        )

    def _epoch_indices(self, epoch: int) -> list[int]:
        return epoch_feature_indices(self.train_features, self.params.negative_downsample, self.params.seed, epoch)

    # --- one optimizer step's worth of work, shared with the benchmark ---
    def training_step(self, batch: dict[str, torch.Tensor], *, apply: bool) -> dict[str, torch.Tensor]:
        """Forward, loss, backward (scaled for accumulation); with apply: clip, optimizer and scheduler step."""
        with autocast_for(self.device):
            loss, parts = compute_loss(self.model, batch, self.weights)
        (loss / self.params.grad_accum_steps).backward()  # type: ignore[no-untyped-call]
        if apply:
            if self.params.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.params.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        parts["loss"] = loss.detach()
        return parts

    def evaluate(self, threshold: float | None = None) -> EvalResult:
        return evaluate_features(
            self.model,
            self.dev_records,
            self.dev_features,
            batch_size=self.params.per_device_eval_batch_size,
            device=self.device,
            pad_token_id=self.pad_token_id,
            n_best_size=self.params.n_best_size,
            max_answer_length=self.params.max_answer_length,
            threshold=threshold,
            weights=self.weights,
            f1_tokenization=self.params.f1_tokenization,
        )

    # --- checkpoints ---
    def _state_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "epoch": s.epoch,
            "global_step": s.global_step,
            "best_metric": s.best_metric,
            "best_epoch": s.best_epoch,
            "best_threshold": s.best_threshold,
            "epochs_without_improvement": s.epochs_without_improvement,
            "stopped_early": s.stopped_early,
            "history": s.history,
            "params_digest": self.digest,
            "params": self.params.model_dump(mode="json"),
            "base_model": self.base_model,
        }

    def save_checkpoint(self) -> Path:
        target = self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.epoch}"
        save_model_dir(
            target,
            self.model,
            self.tokenizer,
            {
                STATE_TORCH: {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": rng_state(),
                },
                STATE_JSON: self._state_json(),  # written last inside the temp dir: marks it complete
            },
        )
        keep = self.params.keep_last_checkpoints
        if keep:
            for epoch in checkpoint_epochs(self.output_dir)[:-keep]:
                shutil.rmtree(self.output_dir / f"{CHECKPOINT_PREFIX}{epoch}", ignore_errors=True)
        return target

    def try_resume(self) -> int | None:
        epochs = checkpoint_epochs(self.output_dir)
        if not epochs:
            return None
        path = self.output_dir / f"{CHECKPOINT_PREFIX}{epochs[-1]}"
        saved = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        if saved.get("params_digest") != self.digest:
            raise QaResumeError(
                f"{path}: checkpoint was trained with different params or base model; "
                "use a fresh output directory (or delete the checkpoint-epoch-* directories to start over)"
            )
        from transformers import AutoModelForQuestionAnswering

        restored = AutoModelForQuestionAnswering.from_pretrained(str(path), local_files_only=True)
        self.model.load_state_dict(restored.state_dict())
        blob = torch.load(path / STATE_TORCH, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        restore_rng_state(blob["rng"])
        self.state = TrainState(
            epoch=saved["epoch"],
            global_step=saved["global_step"],
            best_metric=saved["best_metric"],
            best_epoch=saved["best_epoch"],
            best_threshold=saved["best_threshold"],
            epochs_without_improvement=saved["epochs_without_improvement"],
            stopped_early=saved["stopped_early"],
            history=saved["history"],
        )
        best_dir, old_best = self.output_dir / "best", self.output_dir / ".best.old"
        if not best_dir.exists() and old_best.exists():
            os.replace(old_best, best_dir)  # killed between the two renames of a best/ update
        return int(saved["epoch"])

    def _write_history(self) -> None:
        atomic_write_json(self.output_dir / "metrics_history.json", self.state.history)

    def _plot(self) -> None:
        plot_training_curves(self.state.history, self.output_dir / CURVES_FILE)

    # --- the loop ---
    def train(self, *, resume: bool = True, stop_after_epoch: int | None = None) -> TrainResult:
        started = time.monotonic()
        p = self.params
        resumed_from = self.try_resume() if resume else None
        summary = self.train_features.summary()
        if resumed_from is not None:
            self.log(f"resumed from {CHECKPOINT_PREFIX}{resumed_from} (step {self.state.global_step})")
        else:
            self.log(
                f"start: {len(self.train_records)} train / {len(self.dev_records)} dev questions, "
                f"train features {summary}, {self.steps_per_epoch} optimizer steps/epoch x {p.num_train_epochs} "
                f"epochs, effective batch {p.per_device_batch_size * p.grad_accum_steps}, device {self.device}"
            )
        resumed_at = self.state.global_step if resumed_from is not None else None
        self.board = open_writer(self.output_dir, p.tensorboard, resumed_at)
        try:
            self._train_epochs(stop_after_epoch)
        finally:
            if self.board is not None:
                self.board.close()
        if self.state.best_epoch is None or self.state.best_metric is None:
            raise RuntimeError("training finished without a dev evaluation")
        return TrainResult(
            best_dir=self.output_dir / "best",
            best_epoch=self.state.best_epoch,
            best_metric=self.state.best_metric,
            null_threshold=self.state.best_threshold,
            epochs_run=self.state.epoch,
            stopped_early=self.state.stopped_early,
            resumed_from=resumed_from,
            history=self.state.history,
            train_features=summary,
            wall_seconds=time.monotonic() - started,
        )

    def _train_epochs(self, stop_after_epoch: int | None) -> None:
        p = self.params
        dataset = FeatureDataset(self.train_features)
        collate = Collator(self.pad_token_id)
        # steps, loss, rate and ETA for people (a bar) and for `kubectl logs` (a line every few seconds)
        progress = Progress("qa", self.total_steps, "steps", initial=self.state.global_step)
        while self.state.epoch < p.num_train_epochs and not self.state.stopped_early:
            epoch = self.state.epoch + 1
            indices = self._epoch_indices(epoch)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, indices),
                batch_size=p.per_device_batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(p.seed * 7919 + epoch),
                num_workers=p.num_workers,
                collate_fn=collate,
            )
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            running: list[float] = []
            n_batches = len(loader)
            for batch_index, batch in enumerate(loader):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                apply = (batch_index + 1) % p.grad_accum_steps == 0 or batch_index + 1 == n_batches
                parts = self.training_step(batch, apply=apply)
                running.append(float(parts["loss"]))
                if apply:
                    self.state.global_step += 1
                    progress.update(self.state.global_step, loss=running[-1])
                    # every optimizer step: [step, loss, lr] (the curves' raw series)
                    self.state.history["steps"].append(
                        [self.state.global_step, round(running[-1], 5), self.scheduler.get_last_lr()[0]]
                    )
                    if self.board is not None:
                        self.board.scalars(
                            {"train/loss": running[-1], "train/learning_rate": self.scheduler.get_last_lr()[0]},
                            self.state.global_step,
                        )
                    if self.state.global_step % p.plot_update_every == 0:
                        self._log_train(epoch, running, parts, plot=True)
                        running = []
            if running:  # the epoch's tail; the end-of-epoch plot below draws it
                self._log_train(epoch, running, None, plot=False)
            self.state.epoch = epoch
            self._end_of_epoch(epoch)
            if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < p.num_train_epochs:
                raise TrainingInterrupted(f"stopped after epoch {epoch} on request")
        progress.close()

    def _log_train(self, epoch: int, losses: list[float], parts: dict[str, torch.Tensor] | None, *, plot: bool) -> None:
        record: dict[str, Any] = {
            "step": self.state.global_step,
            "epoch": epoch,
            "loss": sum(losses) / len(losses),
            "lr": self.scheduler.get_last_lr()[0],
        }
        if parts is not None:
            record.update({f"loss_{k}": float(v) for k, v in parts.items() if k != "loss"})
        self.state.history["train"].append(record)
        self.log(
            f"epoch {epoch} step {record['step']}/{self.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e}"
        )
        self._write_history()
        if plot:
            self._plot()

    def _end_of_epoch(self, epoch: int) -> None:
        p = self.params
        result = self.evaluate(threshold=None)
        metrics = result.metrics
        row = {"epoch": epoch, "step": self.state.global_step, **metrics}
        # the threshold-0 scores too, for the plot (the tuned ones are tuned_f1/tuned_exact)
        zero = evaluate_zero(result, self.dev_records, self.params.f1_tokenization)
        row.update(zero)
        self.state.history["eval"].append(row)
        if self.board is not None:
            self.board.scalars(
                {
                    "dev/loss": metrics["eval_loss"],
                    "dev/f1": metrics["tuned_f1"],
                    "dev/exact": metrics.get("tuned_exact", metrics["exact"]),
                    "dev/f1_threshold0": zero["f1"],
                    "dev/exact_threshold0": zero["exact"],
                    "dev/HasAns_f1": zero.get("HasAns_f1"),
                    "dev/NoAns_f1": zero.get("NoAns_f1"),
                },
                self.state.global_step,
            )
            self.board.flush()
        value = _monitor_value(p.early_stopping_metric, metrics)
        improved = _improved(p.early_stopping_metric, value, self.state.best_metric, p.early_stopping_min_delta)
        self.log(
            f"epoch {epoch} dev: eval_loss {metrics['eval_loss']:.4f} f1 {metrics['tuned_f1']:.2f} "
            f"exact {metrics['exact']:.2f} (tuned null threshold {metrics['tuned_f1_thresh']:.3f}; official "
            f"best_f1 {metrics['best_f1']:.2f}) "
            f"f1@0 {zero['f1']:.2f} {'improved' if improved else 'no improvement'}"
        )
        if improved:
            self.state.best_metric = value
            self.state.best_epoch = epoch
            self.state.best_threshold = metrics["tuned_f1_thresh"]
            self.state.epochs_without_improvement = 0
            save_model_dir(
                self.output_dir / "best",
                self.model,
                self.tokenizer,
                {QA_CONFIG: self.qa_config(epoch, metrics)},
            )
        else:
            self.state.epochs_without_improvement += 1
            if p.early_stopping_patience and self.state.epochs_without_improvement >= p.early_stopping_patience:
                self.state.stopped_early = True
                self.log(
                    f"early stopping after epoch {epoch}: no {p.early_stopping_metric} gain > "
                    f"{p.early_stopping_min_delta} for {p.early_stopping_patience} epoch(s); best epoch "
                    f"{self.state.best_epoch}"
                )
        self._write_history()
        self._plot()
        self.save_checkpoint()

    def qa_config(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """Saved with best/: what evaluate/predict need (window, decoding, the tuned null threshold)."""
        return {
            "null_threshold": metrics["tuned_f1_thresh"],
            "epoch": epoch,
            "dev_metrics": metrics,
            **{name: getattr(self.params, name) for name in INFERENCE_FIELDS},
            "field_names": {
                "id": self.params.id_field,
                "context": self.params.context_field,
                "question": self.params.question_field,
                "answers": self.params.answers_field,
            },
        }


def evaluate_zero(result: EvalResult, records: Sequence[QaRecord], f1_tokenization: str = "auto") -> dict[str, float]:
    """Scores at null threshold 0 (the default decision rule) from an evaluation's raw predictions."""
    from datasweep.workloads.qa.modeling import score_predictions

    metrics, _, _ = score_predictions(records, result.predictions, 0.0, f1_tokenization)
    keep = ("exact", "f1", "HasAns_f1", "NoAns_f1", "HasAns_exact", "NoAns_exact")
    return {k: metrics[k] for k in keep if k in metrics}
