"""Tokenising verl SFT examples and the response-only loss (seed 003: the prompt is masked out).

An example becomes `[bos] prompt response [eos]`; only the positions of the response tokens and the EOS
carry loss weight. The model predicts token t+1 from position t, so the weighted logits are those at
the last prompt token up to the last response token.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float64": "float64"}


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_count(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


class ExampleEncoder:
    """Token ids and labels of (prompt, response) pairs, truncated on the right to max_length."""

    def __init__(self, tokenizer: Any, max_length: int, apply_chat_template: bool = False) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; the response must end with one")
        if apply_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("apply_chat_template is true but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.apply_chat_template = apply_chat_template
        self.truncated = 0
        self.without_response = 0  # examples whose every response token was truncated away: no training signal
        self.longest_prompt = 0

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.apply_chat_template:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        bos = self.tokenizer.bos_token_id
        body = self.tokenizer.encode(prompt, add_special_tokens=False)
        return ([bos] if bos is not None else []) + [int(i) for i in body]

    def encode(self, prompt: str, response: str) -> Encoded:
        prompt_ids = self.prompt_ids(prompt)
        response_ids = [int(i) for i in self.tokenizer.encode(response, add_special_tokens=False)]
        response_ids.append(int(self.tokenizer.eos_token_id))
        input_ids = prompt_ids + response_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
        self.longest_prompt = max(self.longest_prompt, len(prompt_ids))
        if len(input_ids) > self.max_length:
            self.truncated += 1
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            if len(prompt_ids) >= self.max_length:
                self.without_response += 1
        return Encoded(input_ids, labels)

    def encode_all(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        return [self.encode(prompt, response) for prompt, response in pairs]


def collate(examples: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (padding labels are ignored)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": labels.to(device),
    }


def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy of next-token prediction, its weight mask, and the argmax hits."""
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1, :]
    targets = batch["labels"][:, 1:]
    # Compute the loss in at least float32 (bf16 logits lose too much), keep float64 when training in it.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    mask = targets != IGNORE_INDEX
    losses = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(targets)
    hits = (logits.argmax(dim=-1) == targets) & mask
    return losses * mask, mask, hits


def response_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the response and EOS tokens of the batch (prompt and padding excluded)."""
    losses, mask, _ = token_losses(model, batch)
    count = mask.sum()
    if int(count) == 0:
        return losses.sum() * 0.0  # every response was truncated away: no signal, keep the graph valid
    return losses.sum() / count


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, DTYPES[name])
    return dtype


def load_model_and_tokenizer(
    model_dir: str, dtype: str, gradient_checkpointing: bool, device: torch.device
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local directory (no hub access)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype))
    except OSError as exc:
        raise FileNotFoundError(f"{model_dir}: cannot load a causal LM and tokenizer: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if gradient_checkpointing:
        # Non-reentrant checkpointing: inner-loop parameter updates happen between backward passes.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.to(device)
    model.train()
    return model, tokenizer
