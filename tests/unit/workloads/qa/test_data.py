"""Records, validation messages, split discovery, sliding-window features and negative downsampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datasweep.workloads.qa.data import (
    FieldNames,
    QaDataError,
    find_split_files,
    load_records,
    load_split,
    validate_record,
)

from .conftest import write_jsonl

GOOD = {
    "id": "ok-1",
    "context": "Kalo is also known as Renvel.",
    "question": "What is Kalo also known as?",
    "answers": {"text": ["Renvel"], "answer_start": [22]},
}


def _bad_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "d" / "x_train.jsonl",
        [
            GOOD,
            {**GOOD, "id": "outside", "answers": {"text": ["Renvel"], "answer_start": [40]}},
            {**GOOD, "id": "shifted", "answers": {"text": ["Renvel"], "answer_start": [3]}},
            {**GOOD, "id": "empty-ctx", "context": "   "},
            {**GOOD, "id": "no-question", "question": ""},
        ],
    )


def test_bad_records_are_reported_with_id_and_line(tmp_path: Path) -> None:
    path = _bad_file(tmp_path)
    with pytest.raises(QaDataError) as info:
        load_split({"train": path}, "train", FieldNames(), skip_bad=False)
    message = str(info.value)
    assert "4 invalid record(s)" in message
    assert f"{path}:2 (id outside)" in message
    assert "outside the context" in message
    assert f"{path}:3 (id shifted)" in message
    assert "is not at answer_start 3" in message
    assert "'o is a'" in message  # what the context reads at the wrong offset
    assert f"{path}:4 (id empty-ctx): empty context" in message
    assert "(id no-question): empty question" in message
    assert "bad_records: skip" in message  # the fix is named


def test_skip_mode_keeps_good_records_and_lists_bad_ones(tmp_path: Path) -> None:
    report = load_split({"train": _bad_file(tmp_path)}, "train", FieldNames(), skip_bad=True)
    assert [r.id for r in report.records] == ["ok-1"]
    assert [p["id"] for p in report.problems] == ["outside", "shifted", "empty-ctx", "no-question"]


def test_answers_in_list_form_custom_fields_and_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    row = {"qid": "a", "passage": "Bern is old.", "q": "Which city?", "ans": [{"text": "Bern", "answer_start": 0}]}
    path.write_text(json.dumps(row) + "\n{not json\n", encoding="utf-8")
    report = load_records(path, FieldNames(id="qid", context="passage", question="q", answers="ans"))
    assert report.records[0].answer_texts == ("Bern",)
    assert report.problems[0]["source"] == f"{path}:2"
    assert "not valid JSON" in report.problems[0]["problem"]
    record, problem, _ = validate_record(row, FieldNames(), "f:1")
    assert record is None
    assert problem is not None
    assert "missing field(s) id, question, context" in problem


def test_parquet_split_is_read(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD]), tmp_path / "train.parquet")
    files = find_split_files(tmp_path)
    assert load_records(files["train"]).records[0].id == "ok-1"


def test_find_split_files_in_generate_layout_skips_nested_stage_outputs(generate_artifact: Path) -> None:
    write_jsonl(generate_artifact / "train" / "qa-abc" / "x_train.jsonl", [GOOD])  # a nested stage output
    files = find_split_files(generate_artifact, "aliastitle")
    assert sorted(files) == ["test", "train", "validation"]
    assert files["validation"].name == "aliastitle_validation.jsonl"
    with pytest.raises(QaDataError, match="no test split"):
        load_split({}, "test", FieldNames(), skip_bad=False)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


def test_sliding_window_labels_the_windows_that_hold_the_answer(tokenizer: Any) -> None:
    from datasweep.workloads.qa.data import QaRecord
    from datasweep.workloads.qa.features import build_features

    filler = " ".join(["Few people remember this."] * 12)
    context = f"{filler} Kalo is also known as Renvel Quitor. {filler}"
    start = context.index("Renvel")
    record = QaRecord("long", "What is Kalo also known as?", context, ("Renvel Quitor",), (start,))
    impossible = QaRecord("none", "What is Kalo also known as?", filler)
    features = build_features(tokenizer, [record, impossible], max_length=40, doc_stride=12, short_field_max_tokens=3)
    mine = [i for i, e in enumerate(features.example_index) if e == 0]
    assert len(mine) > 2  # the long context became several windows
    labelled = [i for i in mine if not features.is_negative(i)]
    assert labelled
    assert len(labelled) < len(mine)
    for i in labelled:
        offsets = features.offsets[i]
        s, e = features.start_positions[i], features.end_positions[i]
        assert context[offsets[s][0] : offsets[e][1]] == "Renvel Quitor"  # type: ignore[index]
        assert features.is_short[i] == (e - s + 1 <= 3)
    others = [i for i, e in enumerate(features.example_index) if e == 1]
    assert all(features.is_negative(i) for i in others)
    assert all(len(ids) <= 40 for ids in features.input_ids)


def test_question_too_long_for_window_is_reported(tokenizer: Any) -> None:
    from datasweep.workloads.qa.data import QaRecord
    from datasweep.workloads.qa.features import build_features

    record = QaRecord("long-q", "What " * 30 + "?", "Bern is old.", source="f.jsonl:7")
    with pytest.raises(QaDataError, match=r"f.jsonl:7 \(id long-q\): question has"):
        build_features(tokenizer, [record], max_length=32, doc_stride=8, short_field_max_tokens=3)


def test_negative_downsampling_keeps_positives_and_a_share_of_negatives() -> None:
    from datasweep.workloads.qa.features import Features, epoch_feature_indices

    features = Features(input_ids=[[1]] * 10, cls_index=[0] * 10, start_positions=[5, 0, 0, 0, 0, 6, 0, 0, 0, 0])
    kept = epoch_feature_indices(features, 0.5, seed=1, epoch=1)
    assert {0, 5} <= set(kept)
    assert len(kept) == 2 + 4
    assert kept == epoch_feature_indices(features, 0.5, seed=1, epoch=1)  # reproducible
    assert len(epoch_feature_indices(features, 1.0, seed=1, epoch=2)) == 10
    assert epoch_feature_indices(features, 0.0, seed=1, epoch=2) == [0, 5]


def test_one_merged_file_is_split_into_train_and_dev_by_context_with_a_seed(tmp_path: Path) -> None:
    """Seed 002 trains from one merged file: a seeded train/dev split, whole contexts on one side."""
    from datasweep.workloads.qa.data import FieldNames, find_split_files, load_train_dev

    from .conftest import make_alias_title_records

    records = make_alias_title_records(60, seed=4)
    merged = write_jsonl(tmp_path / "merged.converted.alias_title.jsonl", records)
    files = find_split_files(merged)
    train, dev = load_train_dev(files, FieldNames(), False, dev_ratio=0.2, seed=42)
    assert len(train.records) + len(dev.records) == 60
    assert {r.context for r in train.records}.isdisjoint({r.context for r in dev.records})
    assert 0.1 < len(dev.records) / 60 < 0.3
    again, _ = load_train_dev(files, FieldNames(), False, dev_ratio=0.2, seed=42)
    assert [r.id for r in again.records] == [r.id for r in train.records]
    other, _ = load_train_dev(files, FieldNames(), False, dev_ratio=0.2, seed=7)
    assert [r.id for r in other.records] != [r.id for r in train.records]
    with pytest.raises(QaDataError, match="no train split found"):
        load_train_dev(files, FieldNames(), False, dev_ratio=0, seed=42)
