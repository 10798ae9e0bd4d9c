"""Model logits -> answers: n-best spans per question across its windows, null odds for the threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasweep.workloads.qa.data import QaRecord
from datasweep.workloads.qa.features import Features

# Null odds for a question with no valid span at all: it is a no-answer at any threshold.
NO_SPAN_ODDS = 1e4


@dataclass
class Predictions:
    span_texts: dict[str, str] = field(default_factory=dict)  # best non-null span ("" if none)
    null_odds: dict[str, float] = field(default_factory=dict)  # null score - best span score
    nbest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def postprocess(
    records: Sequence[QaRecord],
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int,
    max_answer_length: int,
) -> Predictions:
    """`start_logits`/`end_logits` are (features, max_len) arrays padded on the right."""
    by_example: dict[int, list[int]] = {}
    for feature_index, example_index in enumerate(features.example_index):
        by_example.setdefault(example_index, []).append(feature_index)
    out = Predictions()
    for example_index, record in enumerate(records):
        min_null: float | None = None
        candidates: list[dict[str, Any]] = []
        for feature_index in by_example.get(example_index, []):
            offsets = features.offsets[feature_index]
            length = len(offsets)
            starts = start_logits[feature_index, :length]
            ends = end_logits[feature_index, :length]
            cls = features.cls_index[feature_index]
            null_score = float(starts[cls] + ends[cls])
            if min_null is None or null_score < min_null:
                min_null = null_score
            top_starts = np.argsort(starts)[::-1][:n_best_size]
            top_ends = np.argsort(ends)[::-1][:n_best_size]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    start_char, end_char = offsets[s][0], offsets[e][1]  # type: ignore[index]
                    candidates.append(
                        {
                            "text": record.context[start_char:end_char],
                            "score": float(starts[s] + ends[e]),
                            "start_logit": float(starts[s]),
                            "end_logit": float(ends[e]),
                            "answer_start": int(start_char),
                        }
                    )
        candidates.sort(key=lambda c: c["score"], reverse=True)
        best = candidates[0] if candidates else None
        null = min_null if min_null is not None else 0.0
        out.span_texts[record.id] = best["text"] if best else ""
        out.null_odds[record.id] = null - best["score"] if best else NO_SPAN_ODDS
        out.nbest[record.id] = [*candidates[:n_best_size], {"text": "", "score": null, "null": True}]
    return out
