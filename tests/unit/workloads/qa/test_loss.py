"""The seed 002 loss: smoothing, short-field weighting and boost, the null-margin hinge."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from datasweep.workloads.qa.loss import LossWeights, best_span_scores, qa_loss  # noqa: E402

PLAIN = LossWeights(0.0, 1.0, 0.0, 0.0, 0.0, max_answer_length=5)


def _batch(length: int = 6) -> dict[str, torch.Tensor]:
    return {
        "context_mask": torch.tensor([[0, 0, 1, 1, 1, 1][:length]] * 2),
        "cls_index": torch.tensor([0, 0]),
        "start_positions": torch.tensor([2, 0]),  # feature 1 has no answer (CLS)
        "end_positions": torch.tensor([3, 0]),
        "is_short": torch.tensor([True, False]),
    }


def test_plain_settings_equal_cross_entropy_over_cls_and_context() -> None:
    torch.manual_seed(0)
    start, end = torch.randn(2, 6), torch.randn(2, 6)
    batch = _batch()
    loss, _ = qa_loss(start, end, weights=PLAIN, **batch)
    valid = torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy
    expected = (
        ce(start[:, valid], torch.tensor([1, 0])) + ce(end[:, valid], torch.tensor([2, 0]))
    ) / 2  # positions 2/3 become 1/2 once position 1 (a question token) is dropped
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_label_smoothing_and_short_weighting_change_the_loss() -> None:
    torch.manual_seed(1)
    start, end = torch.randn(2, 6), torch.randn(2, 6)
    batch = _batch()
    base, _ = qa_loss(start, end, weights=PLAIN, **batch)
    smooth, _ = qa_loss(start, end, weights=LossWeights(0.1, 1.0, 0.0, 0.0, 0.0, 5), **batch)
    weighted, parts = qa_loss(start, end, weights=LossWeights(0.0, 3.0, 0.5, 0.0, 0.0, 5), **batch)
    assert float(smooth) != pytest.approx(float(base))
    per_feature = [
        float(
            qa_loss(start[i : i + 1], end[i : i + 1], weights=PLAIN, **{k: v[i : i + 1] for k, v in batch.items()})[0]
        )
        for i in range(2)
    ]
    expected_span = (3.0 * per_feature[0] + per_feature[1]) / 4.0
    assert float(parts["span"]) == pytest.approx(expected_span, rel=1e-5)
    assert float(parts["short_boost"]) == pytest.approx(0.5 * per_feature[0], rel=1e-5)
    assert float(weighted) == pytest.approx(expected_span + 0.5 * per_feature[0], rel=1e-5)


def test_null_margin_hinge_only_on_no_answer_features() -> None:
    batch = _batch()
    weights = LossWeights(0.0, 1.0, 0.0, null_margin=0.5, null_margin_weight=2.0, max_answer_length=5)
    start = torch.zeros(2, 6)
    end = torch.zeros(2, 6)
    start[1, 0], end[1, 0] = 3.0, 3.0  # null 6 vs best span 0: beats the margin
    _, parts = qa_loss(start, end, weights=weights, **batch)
    assert float(parts["null_margin"]) == 0.0
    start[1, 4] = 5.8  # best span 5.8 + 0: null leads by 0.2 < 0.5 -> hinge 0.3, times weight 2
    _, parts = qa_loss(start, end, weights=weights, **batch)
    assert float(parts["null_margin"]) == pytest.approx(0.6, rel=1e-5)


def test_best_span_respects_order_length_and_context() -> None:
    start = torch.tensor([[9.0, 0.0, 0.0, 1.0, 0.0]])
    end = torch.tensor([[9.0, 0.0, 4.0, 0.0, 2.0]])
    context = torch.tensor([[False, True, True, True, True]])
    # CLS (9 + 9) is excluded; spans ending at 2 score 0 + 4 = 4, better than (3, 4) = 1 + 2
    assert float(best_span_scores(start, end, context, max_answer_length=5)[0]) == pytest.approx(4.0)
    assert float(best_span_scores(start, end, context, max_answer_length=1)[0]) == pytest.approx(4.0)  # (2,2)
