"""The seed 002 training loss: label-smoothed span cross-entropy with short-field weighting and boost, plus
a null-margin hinge that makes the null (CLS) score beat the best span on unanswerable features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_BAND_CACHE: dict[tuple[int, int, str], torch.Tensor] = {}


@dataclass(frozen=True)
class LossWeights:
    label_smoothing: float
    short_field_weight: float
    short_field_boost: float
    null_margin: float
    null_margin_weight: float
    max_answer_length: int


def _span_band(length: int, max_answer_length: int, device: torch.device) -> torch.Tensor:
    """(L, L) bool: start <= end < start + max_answer_length."""
    key = (length, max_answer_length, str(device))
    band = _BAND_CACHE.get(key)
    if band is None:
        ones = torch.ones(length, length, dtype=torch.bool, device=device)
        band = torch.triu(ones) & torch.tril(ones, diagonal=max_answer_length - 1)
        _BAND_CACHE[key] = band
    return band


def smoothed_position_ce(
    logits: torch.Tensor, valid: torch.Tensor, target: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Per-feature cross-entropy over the valid positions (CLS + context), smoothing spread uniformly over them."""
    masked = logits.float().masked_fill(~valid, -1e4)
    log_probs = F.log_softmax(masked, dim=-1)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if smoothing == 0:
        return nll
    uniform = -torch.where(valid, log_probs, torch.zeros_like(log_probs)).sum(-1) / valid.sum(-1)
    return (1 - smoothing) * nll + smoothing * uniform


def best_span_scores(
    start_logits: torch.Tensor, end_logits: torch.Tensor, context: torch.Tensor, max_answer_length: int
) -> torch.Tensor:
    """Per feature: max over context spans (start <= end, length <= max_answer_length) of start + end logit."""
    length = start_logits.shape[-1]
    pair = start_logits.float().unsqueeze(-1) + end_logits.float().unsqueeze(-2)
    allowed = _span_band(length, max_answer_length, start_logits.device) & (
        context.unsqueeze(-1) & context.unsqueeze(-2)
    )
    return pair.masked_fill(~allowed, -1e4).flatten(1).amax(-1)


def qa_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    *,
    context_mask: torch.Tensor,
    cls_index: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    is_short: torch.Tensor,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (detached) for logging."""
    context = context_mask.bool()
    valid = context.clone()
    valid.scatter_(1, cls_index.unsqueeze(-1), True)
    ce_start = smoothed_position_ce(start_logits, valid, start_positions, weights.label_smoothing)
    ce_end = smoothed_position_ce(end_logits, valid, end_positions, weights.label_smoothing)
    span_ce = (ce_start + ce_end) / 2
    short = is_short.bool()
    feature_weight = torch.where(short, torch.full_like(span_ce, weights.short_field_weight), torch.ones_like(span_ce))
    span_loss = (feature_weight * span_ce).sum() / feature_weight.sum().clamp_min(1e-8)
    short_float = short.float()
    boost = weights.short_field_boost * (span_ce * short_float).sum() / short_float.sum().clamp_min(1.0)
    total = span_loss + boost
    parts = {"span": span_loss.detach(), "short_boost": boost.detach()}
    if weights.null_margin_weight > 0:
        negative = (start_positions == cls_index).float()
        null_score = start_logits.float().gather(1, cls_index.unsqueeze(-1)).squeeze(-1) + end_logits.float().gather(
            1, cls_index.unsqueeze(-1)
        ).squeeze(-1)
        best_span = best_span_scores(start_logits, end_logits, context, weights.max_answer_length)
        hinge = F.relu(weights.null_margin - (null_score - best_span))
        null_loss = weights.null_margin_weight * (hinge * negative).sum() / negative.sum().clamp_min(1.0)
        total = total + null_loss
        parts["null_margin"] = null_loss.detach()
    return total, parts
