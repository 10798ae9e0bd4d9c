"""Tokenize one batch of prompts (and optional responses) the same way for analysis and training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.workloads.moe_steer.data import LABEL_IDS, BatchRecord
from datasweep.workloads.moe_steer.errors import MoeSteerInputError


@dataclass
class EncodedBatch:
    input_ids: Any  # LongTensor [B, T]
    attention_mask: Any  # LongTensor [B, T]
    prompt_mask: Any  # BoolTensor [B, T]: non-padding prompt tokens (the analysis targets)
    labels: Any  # LongTensor [B, T]: LM labels, -100 where no loss
    label_ids: Any  # LongTensor [B]: 0 safe, 1 unsafe


def _prompt_ids(tokenizer: Any, record: BatchRecord, params: MoeSteerParams) -> list[int]:
    """Chat template: the record's messages (multi-turn) or one user turn; else the plain text (for a multi-turn
    record, one `role: content` line per message)."""
    if params.use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise MoeSteerInputError(
                "use_chat_template is true but the base model's tokenizer has no chat template; set it to false"
            )
        messages = record.messages or [{"role": "user", "content": record.prompt}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(record.prompt)["input_ids"])


def encode_batch(
    tokenizer: Any, records: Sequence[BatchRecord], params: MoeSteerParams, include_response: bool = True
) -> EncodedBatch:
    """Right-padded token ids; the prompt tokens are the analysis targets, the response (if any) the loss.

    Analysis leaves responses out: routing is causal, so a prompt token's experts do not depend on them.
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise MoeSteerInputError("the base model's tokenizer has neither a pad nor an eos token")
    rows: list[tuple[list[int], int]] = []  # ids, prompt length
    for record in records:
        ids = _prompt_ids(tokenizer, record, params)[: params.max_length]
        prompt_len = len(ids)
        if include_response and record.response:
            response_ids = list(tokenizer(record.response, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                response_ids.append(tokenizer.eos_token_id)
            ids = (ids + response_ids)[: params.max_length]
        rows.append((ids, prompt_len))
    width = max(len(ids) for ids, _ in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    prompt_mask = torch.zeros((batch, width), dtype=torch.bool)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        prompt_mask[row, :prompt_len] = True
        has_response = len(ids) > prompt_len
        start = prompt_len if has_response else 0
        labels[row, start : len(ids)] = input_ids[row, start : len(ids)]
    label_ids = torch.tensor([LABEL_IDS[r.label] for r in records], dtype=torch.long)
    return EncodedBatch(input_ids, attention_mask, prompt_mask, labels, label_ids)
