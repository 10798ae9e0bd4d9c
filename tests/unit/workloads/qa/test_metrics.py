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


# --- issue 15, defect 3: a stored threshold reproduces its score, also with negative null odds ---------------

# Null odds (null score minus best span score) are negative whenever a span beats the null answer.
NEG_GOLD = {"q1": [], "q2": [], "q3": ["Paris"]}
NEG_SPANS = {"q1": "Rome", "q2": "Oslo", "q3": "London"}  # every span is wrong: all-null is best
NEG_ODDS = {"q1": -2.0, "q2": -1.5, "q3": -0.5}


def test_tuned_threshold_reproduces_its_score_with_negative_odds() -> None:
    result = squad_v2_evaluate(NEG_GOLD, NEG_SPANS, NEG_ODDS)
    # the official search reports the all-null score at threshold 0.0, which scoring at 0.0 does not give
    assert result["best_f1"] == pytest.approx(200 / 3)
    assert result["best_f1_thresh"] == 0.0
    assert squad_v2_evaluate(NEG_GOLD, NEG_SPANS, NEG_ODDS, na_prob_thresh=0.0)["f1"] == 0.0
    # ours: a threshold below every odds value, which gives exactly that score
    threshold = result["tuned_f1_thresh"]
    assert threshold < min(NEG_ODDS.values())
    assert result["tuned_f1"] == pytest.approx(200 / 3)
    assert squad_v2_evaluate(NEG_GOLD, NEG_SPANS, NEG_ODDS, na_prob_thresh=threshold)["f1"] == pytest.approx(200 / 3)
    assert result["tuned_exact"] == pytest.approx(200 / 3)


def test_tuned_threshold_counts_tied_odds_together() -> None:
    # q1 (right) and q2 (wrong, unanswerable) share odds 0.3: no threshold answers one without the other
    gold = {"q1": ["Paris"], "q2": [], "q3": []}
    spans = {"q1": "Paris", "q2": "Rome", "q3": "Oslo"}
    odds = {"q1": 0.3, "q2": 0.3, "q3": 0.9}
    result = squad_v2_evaluate(gold, spans, odds)
    for metric in ("f1", "exact"):
        score, threshold = result[f"tuned_{metric}"], result[f"tuned_{metric}_thresh"]
        assert squad_v2_evaluate(gold, spans, odds, na_prob_thresh=threshold)[metric] == pytest.approx(score)
    assert result["best_f1"] == pytest.approx(100.0)  # the official search counts q1 alone: not reachable
    assert result["tuned_f1"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("seed", range(20))
def test_tuned_threshold_is_the_best_reproducible_score(seed: int) -> None:
    import random

    rng = random.Random(seed)
    gold = {f"q{i}": ([] if rng.random() < 0.4 else ["alpha beta"]) for i in range(12)}
    spans = {qid: rng.choice(["alpha beta", "alpha", "gamma", ""]) for qid in gold}
    odds = {qid: rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]) for qid in gold}  # many ties, many negative
    result = squad_v2_evaluate(gold, spans, odds)
    candidates = sorted({*odds.values(), min(odds.values()) - 1.0})
    best = max(squad_v2_evaluate(gold, spans, odds, na_prob_thresh=t)["f1"] for t in candidates)
    assert result["tuned_f1"] == pytest.approx(best)
    at_threshold = squad_v2_evaluate(gold, spans, odds, na_prob_thresh=result["tuned_f1_thresh"])
    assert at_threshold["f1"] == pytest.approx(result["tuned_f1"])


# --- seed 002: character-level F1 for Chinese answers (CMRC 2018) ------------------------------------------------


def test_whitespace_f1_on_chinese_is_exact_match_and_char_f1_is_not() -> None:
    from datasweep.workloads.qa.metrics import compute_f1_char, mixed_segmentation

    assert compute_f1("北京大学", "北京") == 0  # one "token" each: F1 degenerates to EM
    assert mixed_segmentation("北京大学，Peking University!") == ["北", "京", "大", "学", "peking", "university"]
    assert compute_f1_char("北京大学", "北京") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # longest common substring, as CMRC: 北京 and 大学 both match but not contiguously in the prediction
    assert compute_f1_char("北京大学", "北京的大学") == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    assert compute_f1_char("", "") == 1
    assert compute_f1_char("", "北京") == 0


def test_auto_picks_char_f1_for_chinese_gold_only() -> None:
    gold = {"zh": ["北京大学"], "en": ["New York City"], "none": []}
    preds = {"zh": "北京", "en": "New York", "none": ""}
    auto = squad_v2_evaluate(gold, preds, f1_tokenization="auto")
    official = squad_v2_evaluate(gold, preds)
    char = squad_v2_evaluate(gold, preds, f1_tokenization="char")
    zh_char = 2 * 1.0 * 0.5 / 1.5
    en_tokens = 2 * 1.0 * (2 / 3) / (1 + 2 / 3)
    assert official["f1"] == pytest.approx(100 * (0 + en_tokens + 1) / 3)
    assert auto["f1"] == pytest.approx(100 * (zh_char + en_tokens + 1) / 3)
    assert char["f1"] == pytest.approx(auto["f1"])  # English words are whole tokens in CMRC's segmentation too
    assert auto["exact"] == official["exact"]
