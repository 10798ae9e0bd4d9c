"""Parameters of the `qa` stage: extractive title/alias QA with unanswerable questions (seed 002).

Names follow the seed's training config; defaults are the seed's tuned ("after") values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from datasweep.api._base import ParamsModel

# Fields that do not change the trained model or its metrics, each with the reason: left out of the fingerprint.
OPERATIONAL_FIELDS: dict[str, str] = {
    "num_workers": "DataLoader processes feeding the same batches",
    "plot_update_every": "how often the loss is logged and the curves redrawn",
    "per_device_eval_batch_size": "features per evaluation forward pass; each feature is scored on its own",
    "keep_last_checkpoints": "how many checkpoint-epoch-* directories stay on disk; best/ is kept",
    "tensorboard": "writes event files of the same training beside the curves",
}

# Fields that cannot be a list of values (a grid axis), each with the reason: one run reads one record layout.
NOT_AXES: dict[str, str] = {
    "id_field": "it names a field of the records, and the records have one layout",
    "context_field": "it names a field of the records, and the records have one layout",
    "question_field": "it names a field of the records, and the records have one layout",
    "answers_field": "it names a field of the records, and the records have one layout",
    "input_format": "it says how the records are laid out, and they have one layout",
}


# What a qa stage records in its Artifact's status (and `datasweep results` shows): the names an objective takes.
METRICS: dict[str, str] = {
    "em": "dev exact match (0-100) at the tuned no-answer threshold",
    "f1": "dev F1 (0-100) at the tuned no-answer threshold",
    "bestF1": "the best dev F1 over the no-answer thresholds tried",
    "threshold": "the tuned no-answer threshold",
    "bestEpoch": "the epoch whose model is kept (best/)",
    "testEm": "test exact match, when the data has a test split",
    "testF1": "test F1, when the data has a test split",
}


class QaParams(ParamsModel):
    # training strength
    num_train_epochs: int = Field(default=8, ge=1, le=1000, description="Number of passes over the training set")
    per_device_batch_size: int = Field(default=8, ge=1, description="Training features per forward pass")
    per_device_eval_batch_size: int = Field(default=32, ge=1, description="Features per forward pass at evaluation")
    grad_accum_steps: int = Field(
        default=4,
        ge=1,
        description="Forward passes accumulated per optimizer step (effective batch = batch x accum)",
    )
    learning_rate: float = Field(default=2e-5, gt=0, le=1, description="Peak AdamW learning rate")
    warmup_ratio: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Fraction of optimizer steps with linear warmup (then linear decay)",
    )
    max_grad_norm: float = Field(default=1.0, ge=0, description="Gradient clipping norm; 0 disables clipping")
    # sample balance
    negative_downsample: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Fraction of no-answer training features kept each epoch (1.0 keeps every negative)",
    )
    short_field_max_tokens: int = Field(
        default=3, ge=1, description="An answer of at most this many tokens is a short field"
    )
    short_field_weight: float = Field(
        default=2.5,
        ge=0,
        description="Loss weight of features whose answer is a short field (others weigh 1)",
    )
    short_field_boost: float = Field(
        default=0.4,
        ge=0,
        description="Extra loss: this times the mean span loss over short-field features of the batch",
    )
    # regularisation
    label_smoothing: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Label smoothing of start/end targets over the window's valid positions",
    )
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm)")
    null_margin: float = Field(
        default=0.15,
        ge=0,
        description="Hinge margin: on no-answer features the null score must beat the best span by this",
    )
    null_margin_weight: float = Field(default=0.05, ge=0, description="Weight of the null-margin hinge loss")
    # training control
    early_stopping_patience: int = Field(
        default=3, ge=0, description="Epochs without improvement before stopping; 0 disables early stopping"
    )
    early_stopping_min_delta: float = Field(
        default=0.005,
        ge=0,
        description="Smallest improvement that counts (best_f1 as a fraction 0..1, or eval loss)",
    )
    early_stopping_metric: Literal["best_f1", "eval_loss"] = Field(
        default="best_f1", description="Dev metric that selects best/ and drives early stopping"
    )
    num_workers: int = Field(default=2, ge=0, description="DataLoader worker processes")
    plot_update_every: int = Field(
        default=100, ge=1, description="Optimizer steps between train-loss log lines and curve redraws"
    )
    tensorboard: bool = Field(
        default=False,
        description="Also write TensorBoard event files (train loss and learning rate per step, dev metrics per "
        "epoch) under tensorboard/; needs the tensorboard or tensorboardX package",
    )
    keep_last_checkpoints: int = Field(
        default=1,
        ge=0,
        description="Keep only the newest N checkpoint-epoch-* directories (with optimizer state, for resuming); "
        "best/ is kept apart. Default 1: the best plus the last; 0 keeps every epoch",
    )
    f1_tokenization: Literal["auto", "whitespace", "char"] = Field(
        default="auto",
        description="F1 tokens: whitespace (SQuAD), char (CMRC 2018: each Chinese character a token, longest "
        "common substring), auto: char for questions whose gold answer has Chinese characters. On Chinese, "
        "whitespace F1 equals exact match",
    )
    # features and decoding
    max_length: int = Field(default=384, ge=16, le=8192, description="Tokens per window (question + context)")
    doc_stride: int = Field(default=128, ge=1, description="Tokens of overlap between consecutive context windows")
    n_best_size: int = Field(default=20, ge=1, description="Start/end candidates considered per window")
    max_answer_length: int = Field(default=30, ge=1, description="Longest answer span in tokens")
    seed: int = Field(default=42, ge=0, description="Seed for weights init of the head, shuffling, dropout, sampling")
    # data
    id_field: str = Field(default="id", min_length=1, description="Record field holding the question id")
    context_field: str = Field(default="context", min_length=1, description="Record field holding the context")
    question_field: str = Field(default="question", min_length=1, description="Record field holding the question")
    answers_field: str = Field(
        default="answers",
        min_length=1,
        description="Record field holding SQuAD-style answers {text: [...], answer_start: [...]}; empty = no answer",
    )
    input_format: Literal["squad", "reports"] = Field(
        default="squad",
        description="squad: records are QA samples (context, question, answers); reports: records are reports "
        "{id, report, fields: {name: value or [values]}} converted to samples first, one question per field "
        "(the field name), answers at every occurrence, negatives for fields a report lacks "
        "(`datasweep worker qa convert` writes the same samples)",
    )
    report_negative_ratio: float | None = Field(
        default=None,
        ge=0,
        description="With input_format reports: at most this many generated negatives per positive sample, drawn "
        "with `seed` (seed 002 has about 0.13); unset keeps every negative",
    )
    dev_ratio: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="With one merged file instead of train and validation splits: share of its contexts "
        "(reports) held out as the dev set, by a split seeded with `seed`; 0 requires a validation split",
    )
    bad_records: Literal["error", "skip"] = Field(
        default="error",
        description="error: stop on invalid records listing them; skip: drop them and list them in bad_records.jsonl",
    )

    @model_validator(mode="after")
    def _stride_fits_window(self) -> QaParams:
        if self.doc_stride >= self.max_length:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_length ({self.max_length}); "
                "the recommended setting is max_length 384 with doc_stride 128"
            )
        return self
