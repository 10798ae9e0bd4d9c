"""Parameters of the `moe-steer` stage: SteerMoE expert analysis and expert-only training (seed 004).

The stage builds mixed safe/unsafe batches (e.g. 8 + 8), measures how often each expert of each MoE layer
is routed to for unsafe versus safe prompts (the risk difference), selects the experts that lean most
towards one side, and fine-tunes only those experts' weights with the same batches.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from datasweep.api._base import ParamsModel

InputFormat = Literal["paired", "labeled"]
TargetTokens = Literal["all", "last"]
Direction = Literal["unsafe", "safe"]
Aggregation = Literal["per-batch-mean", "pooled"]
DType = Literal["float32", "bfloat16", "float16"]

# Fields that never change the batches, the analysis or the trained model, each with the reason (left out of
# fingerprints).
OPERATIONAL_FIELDS: dict[str, str] = {
    "device": "where the model runs (auto picks cuda when present)",
    "log_every": "how often the loss is logged",
    "tensorboard": "writes event files of the same training beside the curves",
}

# Fields that cannot be a list of values (a grid axis), each with the reason: one run reads one record layout.
NOT_AXES: dict[str, str] = {
    "input_format": "it says how the records are laid out, and they have one layout",
    "safe_field": "it names a field of the records, and the records have one layout",
    "unsafe_field": "it names a field of the records, and the records have one layout",
    "prompt_field": "it names a field of the records, and the records have one layout",
    "label_field": "it names a field of the records, and the records have one layout",
    "response_field": "it names a field of the records, and the records have one layout",
    "split": "it names the split file the records are read from",
}


# What a moe-steer stage records in its Artifact's status (and `datasweep results` shows): the names an objective
# takes (the risk-difference figures are read from risk_diff.json by `datasweep results` only).
METRICS: dict[str, str] = {
    "experts": "experts selected and trained",
    "finalLoss": "the last training loss",
    "steps": "optimizer steps trained",
}


class MoeSteerParams(ParamsModel):
    # --- input records ---
    input_format: InputFormat = Field(
        default="paired",
        description="paired: one record holds a safe prompt (safe_field) and an unsafe prompt "
        "(unsafe_field); labeled: one prompt per record (prompt_field) with a label (label_field). "
        "Separate safe/unsafe files "
        "(input roles 'safe' and 'unsafe') read prompt_field and ignore this setting",
    )
    safe_field: str = Field(default="goal", description="paired: record field holding the safe prompt")
    unsafe_field: str = Field(default="all_prompt", description="paired: record field holding the unsafe prompt")
    prompt_field: str = Field(default="prompt", description="labeled / separate files: record field of the prompt")
    label_field: str = Field(default="label", description="labeled: record field holding the label")
    safe_labels: list[str] = Field(
        default_factory=lambda: ["safe", "benign", "0", "false"],
        description="labeled: label values (compared as lower-case strings) that mark a safe prompt",
    )
    unsafe_labels: list[str] = Field(
        default_factory=lambda: ["unsafe", "harmful", "1", "true"],
        description="labeled: label values (compared as lower-case strings) that mark an unsafe prompt",
    )
    response_field: str | None = Field(
        default=None,
        description="Optional record field with a response to train on (loss on response tokens only); "
        "paired records use '<response_field>' for both prompts. None: language-model loss on the prompt",
    )
    split: str = Field(default="train", description="Which split file of a generate artifact to read")
    deduplicate: bool = Field(
        default=True,
        description="Drop repeated prompts within each label before batching (with pair_batches: repeated "
        "goal/jailbreak pairs)",
    )
    pair_batches: bool = Field(
        default=True,
        description="paired input: a record's safe prompt (goal) and unsafe prompt (its jailbreak) land in the "
        "same mixed batch (records missing one side are unused). It needs as many safe "
        "as unsafe prompts per batch: with another safe_ratio, or false, the two labels are shuffled separately",
    )

    # --- batches ---
    batch_size: int = Field(default=16, ge=2, description="Prompts per mixed batch (analysis and training)")
    safe_ratio: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Share of safe prompts in every batch; batch_size*safe_ratio whole",
    )
    max_batches: int | None = Field(default=None, ge=1, description="Use at most this many batches (None: all)")
    seed: int = Field(default=42, ge=0, description="Seed for shuffling prompts into batches and for training")

    # --- tokenization ---
    max_length: int = Field(default=512, ge=4, description="Token limit per prompt (+ response); cut on the right")
    use_chat_template: bool = Field(
        default=False, description="Wrap each prompt as a user turn with the tokenizer's chat template"
    )

    # --- analysis and selection ---
    target_tokens: TargetTokens = Field(
        default="all",
        description="Tokens whose routing is counted: all non-padding prompt tokens, or only the last one",
    )
    direction: Direction = Field(
        default="unsafe",
        description="unsafe: select experts with the highest risk difference (p_unsafe - p_safe); safe: the lowest",
    )
    aggregation: Aggregation = Field(
        default="per-batch-mean",
        description="How batches are combined into one risk difference per expert: per-batch-mean (the default, "
        "seed 004's recipe: each batch's p_unsafe - p_safe, then their mean) or pooled (the SteerMoE paper: "
        "activation counts pooled over all tokens of every batch, then p_unsafe - p_safe); both are reported",
    )
    top_n: int | None = Field(default=10, ge=1, description="Select at most this many experts in total")
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Select only experts whose risk difference (signed by direction) is strictly above this",
    )
    positive_only: bool = Field(
        default=True,
        description="Select only experts whose risk difference (signed by direction) is > 0, i.e. that lean "
        "towards the direction; false lets top_n fill up with experts that do not",
    )
    max_per_layer: int | None = Field(default=None, ge=1, description="Select at most this many experts per layer")

    # --- training ---
    learning_rate: float = Field(default=1e-5, gt=0.0, description="AdamW learning rate of the chosen experts")
    num_epochs: int = Field(default=3, ge=1, description="Passes over the analysis batches")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps")
    weight_decay: float = Field(
        default=0.01, ge=0.0, description="Decoupled weight decay, applied to the chosen experts' slices only"
    )
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of steps with linear warm-up")
    lr_scheduler: Literal["constant", "linear"] = Field(
        default="linear", description="Learning rate after warm-up: constant, or linear decay to zero"
    )
    max_grad_norm: float | None = Field(default=1.0, gt=0.0, description="Gradient clipping norm (None: off)")
    mask_router_logits: bool = Field(
        default=True,
        description="Mask the router during training, as seed 004's ExpertMaskingTrainer does (the default): in "
        "layers with a chosen expert, tokens are routed among the chosen experts only (the other experts' router "
        "logits are masked), so the chosen experts see those layers' tokens. false: routing is the model's own "
        "and only the chosen experts are trained",
    )
    shuffle_batches: bool = Field(
        default=False, description="Shuffle the order of batches each epoch (their members never change)"
    )
    torch_dtype: DType = Field(default="float32", description="Dtype the base model is loaded and trained in")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda when available")
    log_every: int = Field(default=10, ge=1, description="Log the loss every this many steps")
    tensorboard: bool = Field(
        default=False,
        description="Also write TensorBoard event files (loss and learning rate per step, mean loss per epoch) "
        "under tensorboard/; needs the tensorboard or tensorboardX package",
    )

    @property
    def safe_per_batch(self) -> int:
        return round(self.batch_size * self.safe_ratio)

    @property
    def unsafe_per_batch(self) -> int:
        return self.batch_size - self.safe_per_batch

    @model_validator(mode="after")
    def _check_consistency(self) -> MoeSteerParams:
        safe = self.batch_size * self.safe_ratio
        if abs(safe - round(safe)) > 1e-9:
            raise ValueError(
                f"safe_ratio {self.safe_ratio} does not divide batch_size {self.batch_size} "
                f"({safe:g} safe prompts per batch); pick a ratio that gives a whole number, e.g. 0.5"
            )
        if round(safe) < 1 or self.batch_size - round(safe) < 1:
            raise ValueError(
                f"safe_ratio {self.safe_ratio} with batch_size {self.batch_size} leaves a batch without "
                "safe or unsafe prompts; every batch needs both"
            )
        if self.top_n is None and self.threshold is None:
            raise ValueError("set top_n and/or threshold: without either no expert can be selected")
        if self.input_format == "labeled":
            safe_set = {v.strip().lower() for v in self.safe_labels}
            unsafe_set = {v.strip().lower() for v in self.unsafe_labels}
            if not safe_set or not unsafe_set:
                raise ValueError("safe_labels and unsafe_labels must each list at least one label value")
            if safe_set & unsafe_set:
                raise ValueError(
                    f"label values {sorted(safe_set & unsafe_set)} are in both safe_labels and unsafe_labels"
                )
        return self
