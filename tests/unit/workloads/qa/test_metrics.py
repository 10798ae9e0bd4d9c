"""The SQuAD-v2 metric functions against hand-worked cases."""

from __future__ import annotations

import pytest

from datasweep.workloads.qa.metrics import (
    apply_threshold,
    compute_exact,
    compute_f1,
    find_best_thresh,
    get_raw_scores,
    normalize_answer,
    squad_v2_evaluate,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theater", "theater"),  # 'the' only as a whole word
        ("  A.B.C.  ", "abc"),
        ("Jean-Luc's", "jeanlucs"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_ignores_case_articles_punctuation() -> None:
    assert compute_exact("the cat", "Cat.") == 1
    assert compute_exact("cat", "cats") == 0


def test_token_f1_hand_worked() -> None:
    # gold {quick, brown, fox}, pred {quick, fox, jumps}: 2 common, P = R = 2/3
    assert compute_f1("the quick brown fox", "quick fox jumps") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: gold [new, new, york], pred [new, york]: P = 1, R = 2/3
    assert compute_f1("new new york", "new york") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert compute_f1("paris", "london") == 0


def test_empty_gold_scores_only_empty_prediction() -> None:
    assert compute_f1("", "") == 1
    assert compute_f1("", "something") == 0
    assert compute_f1("the", "") == 1  # 'the' normalizes to no tokens: a no-answer gold
    assert compute_exact("", "") == 1
    assert compute_exact("", "a cat") == 0


def test_raw_scores_take_max_over_gold_and_treat_article_only_gold_as_no_answer() -> None:
    gold = {"q1": ["New York City", "NYC"], "q2": ["the"], "q3": []}
    exact, f1 = get_raw_scores(gold, {"q1": "nyc", "q2": "", "q3": "x"})
    assert exact == {"q1": 1, "q2": 1, "q3": 0}
    assert f1 == {"q1": 1.0, "q2": 1, "q3": 0}
    _, f1 = get_raw_scores(gold, {"q1": "New York", "q2": "", "q3": ""})
    assert f1["q1"] == pytest.approx(0.8)  # P = 1, R = 2/3 against 'new york city'


GOLD = {"q1": ["Paris"], "q2": ["New York City", "NYC"], "q3": [], "q4": []}
SPANS = {"q1": "paris", "q2": "New York", "q3": "Rome", "q4": "London"}
ODDS = {"q1": 0.1, "q2": 0.5, "q3": 0.6, "q4": 0.9}


def test_breakdowns_without_null_odds() -> None:
    preds = {"q1": "paris", "q2": "New York", "q3": "", "q4": "London"}
    result = squad_v2_evaluate(GOLD, preds)
    assert result["exact"] == pytest.approx(50.0)  # q1, q3
    assert result["f1"] == pytest.approx(70.0)  # (1 + 0.8 + 1 + 0) / 4
    assert result["HasAns_f1"] == pytest.approx(90.0)
    assert result["HasAns_exact"] == pytest.approx(50.0)
    assert result["NoAns_f1"] == pytest.approx(50.0)
    assert result["HasAns_total"] == 2
    assert result["NoAns_total"] == 2
    assert "best_f1" not in result


def test_best_threshold_hand_worked() -> None:
    # start: 2 no-answer questions right (all predicted empty). Ascending odds: q1 +1 -> 3 (thresh 0.1),
    # q2 +0.8 (F1) / +0 (EM) -> 3.8 (thresh 0.5) for F1, q3 and q4 answered wrongly: -1 each.
    best_f1, f1_thresh = find_best_thresh(
        SPANS, {"q1": 1, "q2": 0.8, "q3": 0, "q4": 0}, ODDS, {"q1": True, "q2": True, "q3": False, "q4": False}
    )
    assert (best_f1, f1_thresh) == (pytest.approx(95.0), 0.5)
    result = squad_v2_evaluate(GOLD, SPANS, ODDS, na_prob_thresh=0.5)
    assert result["best_f1"] == pytest.approx(95.0)
    assert result["best_f1_thresh"] == 0.5
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == 0.1
    # at threshold 0.5, q3 and q4 (odds above it) become no-answer and score 1
    assert result["f1"] == pytest.approx(95.0)
    assert result["exact"] == pytest.approx(75.0)


def test_applied_threshold_matches_official_thresholding() -> None:
    final = apply_threshold(SPANS, ODDS, 0.5)
    assert final == {"q1": "paris", "q2": "New York", "q3": "", "q4": ""}
    assert squad_v2_evaluate(GOLD, final)["f1"] == pytest.approx(95.0)


def test_all_no_answer_baseline_equals_no_answer_share() -> None:
    result = squad_v2_evaluate(GOLD, dict.fromkeys(GOLD, ""))
    assert result["f1"] == pytest.approx(50.0)
    assert result["HasAns_f1"] == 0
    assert result["NoAns_f1"] == 100
