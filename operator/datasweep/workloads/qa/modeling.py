"""Model loading, batching and inference for the QA worker (torch and transformers live here)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasweep.workloads.qa.data import QaRecord, gold_answers
from datasweep.workloads.qa.features import Features
from datasweep.workloads.qa.loss import LossWeights, qa_loss
from datasweep.workloads.qa.metrics import apply_threshold, squad_v2_evaluate
from datasweep.workloads.qa.postprocess import Predictions, postprocess

PAD_LOGIT = -1e4


class QaModelError(ValueError):
    """A model directory that cannot be used for extractive QA."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model_and_tokenizer(model_dir: str | Path) -> tuple[Any, Any]:
    """A local encoder (with or without a QA head) and its fast tokenizer; never touches the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # progress bars would flood train.log / the pod log

    path = Path(model_dir)
    if not path.is_dir():
        raise QaModelError(f"{path}: model directory not found (baseModel must be a local directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForQuestionAnswering.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise QaModelError(f"{path}: cannot load an extractive QA model and tokenizer: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise QaModelError(f"{path}: needs a fast tokenizer (offset mappings); save it with tokenizers")
    return model, tokenizer


class FeatureDataset(torch.utils.data.Dataset[dict[str, Any]]):
    def __init__(self, features: Features) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        f = self.features
        return {
            "input_ids": f.input_ids[index],
            "token_type_ids": f.token_type_ids[index],
            "context_mask": f.context_mask[index],
            "cls_index": f.cls_index[index],
            "start_positions": f.start_positions[index],
            "end_positions": f.end_positions[index],
            "is_short": f.is_short[index],
        }


@dataclass(frozen=True)
class Collator:
    """Pads a batch to its longest feature (dynamic padding); picklable for DataLoader workers."""

    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([item[key] + [value] * (length - len(item[key])) for item in items], dtype=torch.long)

        input_ids = pad("input_ids", self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": (
                torch.arange(length).unsqueeze(0) < torch.tensor([len(i["input_ids"]) for i in items]).unsqueeze(1)
            ).long(),
            "token_type_ids": pad("token_type_ids", 0),
            "context_mask": pad("context_mask", 0),
            "cls_index": torch.tensor([item["cls_index"] for item in items], dtype=torch.long),
            "start_positions": torch.tensor([item["start_positions"] for item in items], dtype=torch.long),
            "end_positions": torch.tensor([item["end_positions"] for item in items], dtype=torch.long),
            "is_short": torch.tensor([item["is_short"] for item in items], dtype=torch.bool),
        }


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's inputs; token_type_ids only for models that take them (DistilBERT does not)."""
    accepted = inspect.signature(model.forward).parameters
    return {k: batch[k] for k in MODEL_INPUTS if k in accepted}


def compute_loss(
    model: Any, batch: dict[str, torch.Tensor], weights: LossWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return loss_of_outputs(model(**model_inputs(model, batch)), batch, weights)


def loss_of_outputs(
    outputs: Any, batch: dict[str, torch.Tensor], weights: LossWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The seed 002 loss of a forward pass's start/end logits against the batch's labels."""
    return qa_loss(
        outputs.start_logits,
        outputs.end_logits,
        context_mask=batch["context_mask"],
        cls_index=batch["cls_index"],
        start_positions=batch["start_positions"],
        end_positions=batch["end_positions"],
        is_short=batch["is_short"],
        weights=weights,
    )


def autocast_for(device: torch.device) -> Any:
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


@torch.inference_mode()
def run_inference(
    model: Any,
    features: Features,
    *,
    batch_size: int,
    device: torch.device,
    pad_token_id: int,
    weights: LossWeights | None = None,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(start_logits, end_logits) as (features, longest) arrays, and the mean loss when weights are given."""
    model.eval()
    longest = max(len(ids) for ids in features.input_ids)
    starts = np.full((len(features), longest), PAD_LOGIT, dtype=np.float32)
    ends = np.full((len(features), longest), PAD_LOGIT, dtype=np.float32)
    collate = Collator(pad_token_id)
    dataset = FeatureDataset(features)
    total_loss, batches = 0.0, 0
    for begin in range(0, len(features), batch_size):
        batch = collate([dataset[i] for i in range(begin, min(begin + batch_size, len(features)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_for(device):
            outputs = model(**model_inputs(model, batch))
        width = batch["input_ids"].shape[1]
        starts[begin : begin + len(batch["input_ids"]), :width] = outputs.start_logits.float().cpu()
        ends[begin : begin + len(batch["input_ids"]), :width] = outputs.end_logits.float().cpu()
        if weights is not None:
            loss, _ = loss_of_outputs(outputs, batch, weights)
            total_loss += float(loss)
            batches += 1
    return starts, ends, (total_loss / batches if batches else None)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: Predictions
    final_predictions: dict[str, str]
    threshold: float


def score_predictions(
    records: Sequence[QaRecord], predictions: Predictions, threshold: float | None, f1_tokenization: str = "auto"
) -> tuple[dict[str, float], dict[str, str], float]:
    """Official SQuAD-v2 metrics. threshold None: tune it (tuned_f1_thresh, which reproduces its score) and
    report the scores at it."""
    gold = gold_answers(records)
    given = 0.0 if threshold is None else threshold
    spans, odds = predictions.span_texts, predictions.null_odds
    metrics = squad_v2_evaluate(gold, spans, odds, na_prob_thresh=given, f1_tokenization=f1_tokenization)
    if threshold is None:
        threshold = metrics["tuned_f1_thresh"]
        metrics = squad_v2_evaluate(gold, spans, odds, na_prob_thresh=threshold, f1_tokenization=f1_tokenization)
    metrics["null_threshold"] = threshold
    return metrics, apply_threshold(predictions.span_texts, predictions.null_odds, threshold), threshold


def evaluate_features(
    model: Any,
    records: Sequence[QaRecord],
    features: Features,
    *,
    batch_size: int,
    device: torch.device,
    pad_token_id: int,
    n_best_size: int,
    max_answer_length: int,
    threshold: float | None,
    weights: LossWeights | None = None,
    f1_tokenization: str = "auto",
) -> EvalResult:
    starts, ends, loss = run_inference(
        model, features, batch_size=batch_size, device=device, pad_token_id=pad_token_id, weights=weights
    )
    predictions = postprocess(
        records, features, starts, ends, n_best_size=n_best_size, max_answer_length=max_answer_length
    )
    metrics, final, used = score_predictions(records, predictions, threshold, f1_tokenization)
    if loss is not None:
        metrics["eval_loss"] = loss
    return EvalResult(metrics, predictions, final, used)
