"""Parameters of the `fomaml` stage: first-order MAML SFT (seed 003), data preparation included.

Key names follow seed 003's config (`meta.inner_lr`, `meta.num_inner_steps`, ..., `trainer.total_steps`),
flattened into one mapping. Batch sizes are global (all GPUs together), never per GPU.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from datasweep.api._base import ParamsModel

SplitStrategy = Literal["random", "stratified", "temporal"]
DType = Literal["float32", "bfloat16", "float16", "float64"]

# Never change the trained model, each with the reason: left out of fingerprints.
OPERATIONAL_FIELDS: dict[str, str] = {
    "save_freq": "how often a resumable checkpoint is written",
    "keep_checkpoints": "how many checkpoints stay on disk",
    "log_freq": "how often a metrics line is written",
    "enable_gradient_checkpointing": "recomputes the same activations in backward: the same gradient",
    "use_fsdp": "parallelism (sharded instead of replicated parameters) over the same global batch",
    "project_name": "a tracking label (trainer.project_name in the original recipe) written into the metadata",
    "experiment_name": "a tracking label (trainer.experiment_name in the original recipe) written into the metadata",
    "tensorboard": "writes event files of the same training beside the curves",
}

# Fields that cannot be a list of values (a grid axis), each with the reason: one run reads one record layout.
NOT_AXES: dict[str, str] = {
    "task_key": "it names a field of the records, and the records have one layout",
    "level_key": "it names a field of the records, and the records have one layout",
    "time_key": "it names a field of the records, and the records have one layout",
    "prompt_key": "it names a column of the prepared files, and they have one layout",
    "response_key": "it names a column of the prepared files, and they have one layout",
}

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TaskFile = Annotated[str, Field(min_length=1, max_length=1024)]


def _check_relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        raise ValueError(
            f"{path!r}: give a path relative to the stage's input data (a prepared dataset's directory or the "
            "generate artifact), e.g. 'meta_train/biology_support.parquet'; absolute paths and '..' are "
            "refused because only the input's content is fingerprinted and mounted in the Job"
        )
    return path


class FomamlTask(ParamsModel):
    """One task of seed 003's `meta.tasks`: its own support/query files and caps (no preparation or split)."""

    name: str = Field(
        min_length=1,
        max_length=100,
        description="Task name (letters, digits, '_', '.', '-'); names the prepared files <name>_support.parquet",
    )
    support_files: list[TaskFile] = Field(
        min_length=1,
        max_length=100,
        description="Support-set record files (parquet, jsonl, json or csv with prompt_key/response_key "
        "columns), relative to the input data directory; concatenated in order",
    )
    query_files: list[TaskFile] = Field(
        min_length=1, max_length=100, description="Query-set record files, as support_files"
    )
    test_files: list[TaskFile] = Field(
        default_factory=list,
        max_length=100,
        description="Few-shot test files, as support_files (empty: few_shot_eval/<name>_test.* of the input, "
        "the meta_train/few_shot_eval layout, when it exists)",
    )
    support_max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many support rows of this task (overrides the global cap)"
    )
    query_max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many query rows of this task (overrides the global cap)"
    )

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if not re.match(TASK_NAME, name):
            raise ValueError(
                f"{name!r}: a task name names its files (<name>_support.parquet); use letters, digits, '_', '.' "
                "and '-', starting with a letter or digit"
            )
        return name

    @field_validator("support_files", "query_files", "test_files")
    @classmethod
    def _relative_paths(cls, paths: list[str]) -> list[str]:
        return [_check_relative(path) for path in paths]


# What a fomaml stage records in its Artifact's status (and `datasweep results` shows): the names an objective takes.
METRICS: dict[str, str] = {
    "queryLossBefore": "mean query loss before adaptation (few-shot evaluation)",
    "queryLossAfter": "mean query loss after the inner-loop adaptation",
    "lossDrop": "queryLossBefore - queryLossAfter",
    "tokenAccuracy": "mean token accuracy after adaptation",
    "steps": "meta-steps trained",
}


class FomamlParams(ParamsModel):
    # --- data preparation (seed 003, steps 2-4) ---
    task_key: str = Field(
        default="task",
        description="Record field that names the task; records are grouped into tasks by it "
        "(dotted path for nested fields, e.g. 'metadata.subject')",
    )
    prompt_template: str = Field(
        default="{prompt}",
        description="Python format string building the prompt from a raw record's fields, e.g. "
        "'Question: {question}\\nAnswer:'",
    )
    response_template: str = Field(
        default="{response}",
        description="Python format string building the response from a raw record's fields",
    )
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="Raw record fields copied into the metadata JSON (task_id and source are always set)",
    )
    split_strategy: SplitStrategy = Field(
        default="random",
        description="random: shuffle then cut; stratified: same level mix in every split; temporal: keep input order",
    )
    level_key: str = Field(default="level", description="Record field holding the difficulty level (stratified)")
    time_key: str | None = Field(
        default=None, description="Record field to sort by for the temporal split (None: input file order)"
    )
    support_ratio: float = Field(default=0.30, gt=0.0, lt=1.0, description="Share of each task for the support set")
    query_ratio: float = Field(default=0.40, gt=0.0, lt=1.0, description="Share of each task for the query set")
    seed: int = Field(default=42, ge=0, description="Seed for splits, task sampling and batch sampling")
    k_shots: list[int] = Field(
        default_factory=lambda: [5, 10],
        description="Write few_shot_eval/<task>_<k>shot.parquet (k examples drawn from the task's support set)",
    )
    mixed_baseline: bool = Field(
        default=True,
        description="Write baseline_sft/mixed_train.parquet (every task's support + query, shuffled)",
    )
    deduplicate: bool = Field(
        default=True, description="Drop records whose prompt+response repeat within a task before splitting"
    )
    min_support_samples: int = Field(default=1, ge=1, description="Validation fails below this many support rows")
    min_query_samples: int = Field(default=1, ge=1, description="Validation fails below this many query rows")
    min_test_samples: int = Field(default=1, ge=0, description="Validation fails below this many test rows")

    # --- data (seed 003 `data:`) ---
    prompt_key: str = Field(default="prompt", description="Parquet column holding the prompt")
    response_key: str = Field(default="response", description="Parquet column holding the response")
    max_length: int = Field(default=2048, ge=8, description="Token limit per example; longer ones are cut on the right")
    apply_chat_template: bool = Field(
        default=False, description="Wrap the prompt as a user turn with the tokenizer's chat template"
    )

    # --- meta-learning (seed 003 `meta:`) ---
    inner_lr: float = Field(default=1e-4, gt=0.0, description="SGD learning rate of the inner (adaptation) loop")
    num_inner_steps: int = Field(default=5, ge=0, description="K: inner SGD steps on support batches per task")
    inner_batch_size: int = Field(default=4, ge=1, description="Support examples per inner step")
    outer_lr: float = Field(default=3e-5, gt=0.0, description="AdamW learning rate of the outer (meta) update")
    meta_batch_size: int = Field(default=4, ge=1, description="Tasks per meta-step (global, across all GPUs)")
    query_batch_size: int = Field(default=4, ge=1, description="Query examples per task per meta-step")
    support_max_samples: int | None = Field(
        default=None,
        ge=1,
        description="Use at most this many support rows per task (seed: support_max_samples)",
    )
    query_max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many query rows per task (seed: query_max_samples)"
    )
    tasks: list[FomamlTask] = Field(
        default_factory=list,
        max_length=200,
        description="meta.tasks of the original recipe: each task's own support/query(/test) files and caps; "
        "when given, the input is not prepared or split (task_key, templates and ratios do not apply)",
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay of the outer optimizer")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up of outer_lr over this many meta-steps")
    max_grad_norm: float | None = Field(
        default=1.0, gt=0.0, description="Clip the meta-gradient to this global norm (None: no clipping)"
    )

    # --- trainer (seed 003 `trainer:`) ---
    total_steps: int = Field(default=5000, ge=1, description="Meta-steps to train")
    save_freq: int = Field(default=500, ge=1, description="Save a resumable checkpoint every this many meta-steps")
    test_freq: int = Field(
        default=100, ge=0, description="Few-shot evaluation every this many meta-steps (0: only at the end)"
    )
    log_freq: int = Field(default=1, ge=1, description="Write a metrics line every this many meta-steps")
    project_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Tracking label (trainer.project_name) in training_metadata.json, eval_results.json "
        "and the manifest (default: the batch)",
    )
    experiment_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Tracking label (trainer.experiment_name), as project_name (default: the Experiment's name)",
    )
    keep_checkpoints: int = Field(default=1, ge=1, description="Checkpoints kept on disk (oldest removed first)")
    tensorboard: bool = Field(
        default=False,
        description="Also write TensorBoard event files (meta-train losses per step, few-shot loss before/after "
        "adaptation per evaluation) under tensorboard/; needs the tensorboard or tensorboardX package",
    )

    # --- evaluation ---
    eval_inner_steps: int | None = Field(
        default=None, ge=0, description="Adaptation steps for few-shot evaluation (None: num_inner_steps)"
    )
    eval_k_shot: int | None = Field(
        default=None,
        ge=1,
        description="Adapt on <task>_<k>shot.parquet during evaluation (None: the support set)",
    )
    eval_max_samples: int | None = Field(
        default=256, ge=1, description="Evaluate on at most this many test rows per task (None: all)"
    )
    eval_batch_size: int = Field(default=8, ge=1, description="Examples per forward pass during evaluation")

    # --- model (seed 003 `model:`) ---
    enable_gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward")
    use_fsdp: bool = Field(
        default=False,
        description="Under torchrun with several GPUs: shard parameters with FSDP instead of replicas",
    )
    dtype: DType = Field(default="float32", description="Parameter dtype for training")

    @model_validator(mode="after")
    def _check_consistency(self) -> FomamlParams:
        if self.support_ratio + self.query_ratio > 1.0:
            raise ValueError(
                f"support_ratio + query_ratio must be <= 1 (the rest is the test set), "
                f"got {self.support_ratio} + {self.query_ratio}"
            )
        if any(k < 1 for k in self.k_shots):
            raise ValueError(f"k_shots must be positive integers, got {self.k_shots}")
        if self.eval_k_shot is not None and self.eval_k_shot not in self.k_shots:
            raise ValueError(f"eval_k_shot={self.eval_k_shot} must be one of k_shots={self.k_shots}")
        if self.split_strategy == "temporal" and self.time_key == "":
            raise ValueError("time_key must be a field name or null")
        names = [task.name for task in self.tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"tasks: task name(s) {repeated} appear twice; give every task its own name")
        return self

    def task_caps(self, name: str) -> tuple[int | None, int | None]:
        """(support, query) row caps of a task: its own from `tasks`, else the global ones."""
        task = next((t for t in self.tasks if t.name == name), None)
        support = task.support_max_samples if task and task.support_max_samples else self.support_max_samples
        query = task.query_max_samples if task and task.query_max_samples else self.query_max_samples
        return support, query

    @property
    def effective_eval_inner_steps(self) -> int:
        return self.num_inner_steps if self.eval_inner_steps is None else self.eval_inner_steps
