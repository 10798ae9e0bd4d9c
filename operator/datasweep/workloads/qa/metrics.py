"""The official SQuAD v2.0 evaluation, function for function (evaluate-v2.0.py), without torch.

Gold answers are given per question id as a list of answer texts (empty list = unanswerable);
predictions are texts ("" = no answer); `na_probs` are any scores where larger means "more likely no
answer" (we pass null odds: null score minus best span score).
"""

from __future__ import annotations

import collections
import re
import string
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text: str) -> str:
        return re.sub(_ARTICLES, " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        return "".join(ch for ch in text if ch not in _PUNCTUATION)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


# --- character-level F1 for Chinese (CMRC 2018's evaluation), chosen per question -----------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# CMRC's sp_char list (Chinese and ASCII symbols), plus the ASCII punctuation SQuAD removes
_CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》…·、「」（）－～『』") | _PUNCTUATION


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def mixed_segmentation(text: str) -> list[str]:
    """CMRC 2018: each CJK character is a token, other runs split on whitespace; punctuation removed, lower case.

    (CMRC splits the non-CJK runs with nltk's word tokenizer; whitespace + punctuation removal is the same
    for answer spans, without the dependency.)"""
    tokens: list[str] = []
    run: list[str] = []
    for char in text.lower().strip():
        if char in _CMRC_PUNCTUATION:
            char = " "
        if _CJK.match(char):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(char)
        else:
            run.append(char)
    tokens.extend("".join(run).split())
    return tokens


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def compute_f1_char(a_gold: str, a_pred: str) -> float:
    """CMRC 2018's F1: longest common substring of the mixed segmentations; no-answer rule as SQuAD v2."""
    gold_toks = mixed_segmentation(a_gold)
    pred_toks = mixed_segmentation(a_pred)
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    common = _longest_common_substring(gold_toks, pred_toks)
    if common == 0:
        return 0
    precision = common / len(pred_toks)
    recall = common / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


F1_TOKENIZATIONS = ("auto", "whitespace", "char")


def f1_function(gold_answers: list[str], tokenization: str) -> Callable[[str, str], float]:
    """whitespace: SQuAD token F1; char: CMRC character F1; auto: char when a gold answer has CJK text.

    Whitespace token F1 on Chinese, which has no spaces, is just exact match."""
    if tokenization == "char" or (tokenization == "auto" and any(has_cjk(answer) for answer in gold_answers)):
        return compute_f1_char
    if tokenization not in F1_TOKENIZATIONS:
        raise ValueError(f"unknown F1 tokenization {tokenization!r}; use one of {F1_TOKENIZATIONS}")
    return compute_f1


def make_qid_to_has_ans(gold: Mapping[str, list[str]]) -> dict[str, bool]:
    return {qid: bool(answers) for qid, answers in gold.items()}


def get_raw_scores(
    gold: Mapping[str, list[str]], preds: Mapping[str, str], f1_tokenization: str = "whitespace"
) -> tuple[dict[str, int], dict[str, float]]:
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    for qid, answers in gold.items():
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            # For unanswerable questions, only correct answer is empty string
            gold_answers = [""]
        if qid not in preds:
            continue  # the official script prints "Missing prediction" and skips it
        a_pred = preds[qid]
        # Take max over all gold answers
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1 = f1_function(gold_answers, f1_tokenization)
        f1_scores[qid] = max(f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    new_scores: dict[str, float] = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def make_eval_dict(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], qid_list: Iterable[str] | None = None
) -> OrderedDict[str, float]:
    qids = list(qid_list) if qid_list is not None else []
    if not qids:
        total = len(exact_scores)
        return OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    total = len(qids)
    return OrderedDict(
        [
            ("exact", 100.0 * sum(exact_scores[k] for k in qids) / total),
            ("f1", 100.0 * sum(f1_scores[k] for k in qids) / total),
            ("total", total),
        ]
    )


def merge_eval(main_eval: dict[str, float], new_eval: Mapping[str, float], prefix: str) -> None:
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """Best score over thresholds: a prediction is replaced by "no answer" when its na_prob > threshold."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score: float = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        elif preds[qid]:
            diff = -1
        else:
            diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_reproducible_best_thresh(
    scores: Mapping[str, float], na_probs: Mapping[str, float], qid_to_has_ans: Mapping[str, bool]
) -> tuple[float, float]:
    """Best score over thresholds, with a threshold that gives exactly that score when applied.

    The official search above starts at threshold 0.0 with every question predicted "no answer", which
    assumes na_probs are probabilities (>= 0), and it moves past one question at a time, so questions with
    tied na_probs are split in a way no threshold can reproduce. Our null odds can be negative and tie, so
    here "all no answer" is a threshold below every na_prob and tied questions move together. Used to
    choose the null threshold we store and the early-stopping score; the official numbers stay for reporting.
    """
    if not scores:
        return 0.0, 0.0
    ordered = sorted((qid for qid in scores), key=lambda k: na_probs[k])
    cur_score = float(sum(1 for qid in ordered if not qid_to_has_ans[qid]))  # every question "no answer"
    best_score, best_thresh = cur_score, na_probs[ordered[0]] - 1.0
    index = 0
    while index < len(ordered):
        value = na_probs[ordered[index]]
        while index < len(ordered) and na_probs[ordered[index]] == value:
            qid = ordered[index]
            # answered from here on (na_prob <= threshold): its raw score replaces the no-answer score
            cur_score += scores[qid] - float(not qid_to_has_ans[qid])
            index += 1
        if cur_score > best_score:
            best_score, best_thresh = cur_score, value
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(
    main_eval: dict[str, float],
    preds: Mapping[str, str],
    exact_raw: Mapping[str, float],
    f1_raw: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> None:
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh
    for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
        score, thresh = find_reproducible_best_thresh(raw, na_probs, qid_to_has_ans)
        main_eval[f"tuned_{name}"] = score
        main_eval[f"tuned_{name}_thresh"] = thresh


def squad_v2_evaluate(
    gold: Mapping[str, list[str]],
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    f1_tokenization: str = "whitespace",
) -> dict[str, float]:
    """The official script's main(): overall, HasAns and NoAns EM/F1, best thresholds when na_probs are given.

    To tune a null threshold, pass every question's best non-null span as `preds` and the null odds as
    `na_probs`: `exact`/`f1` are then the scores at `na_prob_thresh`, `best_*` the best over thresholds
    (the official numbers) and `tuned_*` the best over thresholds that reproduce their score when applied.
    """
    probs = dict(na_probs) if na_probs is not None else dict.fromkeys(preds, 0.0)
    qid_to_has_ans = make_qid_to_has_ans(gold)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(gold, preds, f1_tokenization)
    exact_thresh = apply_no_ans_threshold(exact_raw, probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, probs, qid_to_has_ans, na_prob_thresh)
    out_eval: dict[str, float] = dict(make_eval_dict(exact_thresh, f1_thresh))
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if na_probs is not None:
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, probs, qid_to_has_ans)
    return out_eval


def apply_threshold(span_preds: Mapping[str, str], null_odds: Mapping[str, float], threshold: float) -> dict[str, str]:
    """Final answers: "" where the null odds exceed the threshold (the official rule), else the best span."""
    return {qid: ("" if null_odds[qid] > threshold else text) for qid, text in span_preds.items()}
