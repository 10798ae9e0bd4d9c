"""Records -> model features: a sliding window over long contexts with offset mappings.

Every window of an example is one feature. A window that holds the (first) gold answer is labelled with
its token span; unanswerable questions and windows that miss the answer point at the CLS token.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasweep.workloads.qa.data import QaDataError, QaRecord

TOKENIZE_CHUNK = 256


@dataclass
class Features:
    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] = field(default_factory=list)
    context_mask: list[list[int]] = field(default_factory=list)  # 1 on context tokens of the window
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)  # char span, context tokens only
    cls_index: list[int] = field(default_factory=list)
    start_positions: list[int] = field(default_factory=list)
    end_positions: list[int] = field(default_factory=list)
    is_short: list[bool] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def is_negative(self, index: int) -> bool:
        return self.start_positions[index] == self.cls_index[index]

    def summary(self) -> dict[str, int]:
        negatives = sum(1 for i in range(len(self)) if self.is_negative(i))
        return {
            "features": len(self),
            "positive": len(self) - negatives,
            "negative": negatives,
            "short": sum(self.is_short),
        }


def check_question_lengths(tokenizer: Any, records: Sequence[QaRecord], max_length: int, doc_stride: int) -> None:
    """A question must leave room for a context window of more than doc_stride tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    encoded = tokenizer([r.question.lstrip() for r in records], add_special_tokens=False)["input_ids"]
    too_long = [
        f"{r.source} (id {r.id}): question has {len(ids)} tokens; with doc_stride {doc_stride} it needs "
        f"max_length > {len(ids) + specials + doc_stride}"
        for r, ids in zip(records, encoded, strict=True)
        if len(ids) + specials + doc_stride >= max_length
    ]
    if too_long:
        more = f"\n... and {len(too_long) - 20} more" if len(too_long) > 20 else ""
        raise QaDataError(
            "questions too long for the window (raise max_length or lower doc_stride):\n"
            + "\n".join(too_long[:20])
            + more
        )


def build_features(
    tokenizer: Any,
    records: Sequence[QaRecord],
    *,
    max_length: int,
    doc_stride: int,
    short_field_max_tokens: int,
) -> Features:
    check_question_lengths(tokenizer, records, max_length, doc_stride)
    pad_right = tokenizer.padding_side == "right"
    if not pad_right:
        raise QaDataError("the tokenizer pads on the left; extractive QA expects question first, padding right")
    features = Features()
    for chunk_start in range(0, len(records), TOKENIZE_CHUNK):
        chunk = records[chunk_start : chunk_start + TOKENIZE_CHUNK]
        encoded = tokenizer(
            [r.question.lstrip() for r in chunk],
            [r.context for r in chunk],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        for i, input_ids in enumerate(encoded["input_ids"]):
            record_pos = encoded["overflow_to_sample_mapping"][i]
            record = chunk[record_pos]
            sequence_ids = encoded.sequence_ids(i)
            offsets = encoded["offset_mapping"][i]
            cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
            context_positions = [k for k, s in enumerate(sequence_ids) if s == 1]
            context_start, context_end = context_positions[0], context_positions[-1]
            start, end = cls_index, cls_index
            if not record.is_impossible:
                start_char = record.answer_starts[0]
                end_char = start_char + len(record.answer_texts[0])
                if offsets[context_start][0] <= start_char and offsets[context_end][1] >= end_char:
                    token_start = context_start
                    while token_start <= context_end and offsets[token_start][0] <= start_char:
                        token_start += 1
                    token_end = context_end
                    while token_end >= context_start and offsets[token_end][1] >= end_char:
                        token_end -= 1
                    start, end = token_start - 1, token_end + 1
            features.input_ids.append(list(input_ids))
            type_ids = encoded["token_type_ids"][i] if "token_type_ids" in encoded else [0] * len(input_ids)
            features.token_type_ids.append(list(type_ids))
            features.context_mask.append([1 if s == 1 else 0 for s in sequence_ids])
            features.offsets.append(
                [tuple(o) if s == 1 else None for o, s in zip(offsets, sequence_ids, strict=True)]  # type: ignore[misc]
            )
            features.cls_index.append(cls_index)
            features.start_positions.append(start)
            features.end_positions.append(end)
            features.is_short.append(start != cls_index and end - start + 1 <= short_field_max_tokens)
            features.example_index.append(chunk_start + record_pos)
    return features


def epoch_feature_indices(features: Features, negative_downsample: float, seed: int, epoch: int) -> list[int]:
    """Every positive feature plus round(ratio x negatives) negatives, drawn afresh (and reproducibly) per epoch."""
    positives = [i for i in range(len(features)) if not features.is_negative(i)]
    negatives = [i for i in range(len(features)) if features.is_negative(i)]
    keep = round(negative_downsample * len(negatives))
    if keep < len(negatives):
        negatives = sorted(random.Random(seed * 1_000_003 + epoch).sample(negatives, keep))
    return sorted(positives + negatives)
