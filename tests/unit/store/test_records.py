"""The one reader of record files: jsonl, .json (list of objects) and parquet, with file:line messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasweep.store.records import Record, RecordFileError, iter_records


def test_jsonl_skips_blank_lines_and_numbers_records_by_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert list(iter_records(path)) == [
        Record(f"{path}:1", {"a": 1}, 1),
        Record(f"{path}:4", {"a": 2}, 4),
    ]


def test_json_list_of_objects_is_read_by_item(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}]), encoding="utf-8")
    assert [(r.location, r.data) for r in iter_records(path)] == [
        (f"{path}:item 1", {"a": 1}),
        (f"{path}:item 2", {"a": 2}),
    ]


def test_json_object_with_a_list_key_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"a": 1}]}), encoding="utf-8")
    assert [r.data for r in iter_records(path, json_list_key="data")] == [{"a": 1}]
    with pytest.raises(RecordFileError, match=r"data\.json: a \.json record file holds a list of objects"):
        list(iter_records(path))


def test_json_item_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"a": 1}, 3]), encoding="utf-8")
    with pytest.raises(RecordFileError, match=r"data\.json:item 2: a record must be a JSON object, got int"):
        list(iter_records(path))


def test_parquet_is_read_by_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist([{"a": 1}, {"a": 2}]), path)
    assert [(r.location, r.data, r.number) for r in iter_records(path)] == [
        (f"{path}:row 1", {"a": 1}, 1),
        (f"{path}:row 2", {"a": 2}, 2),
    ]


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(RecordFileError, match=r"data\.parquet: cannot read parquet"):
        list(iter_records(path))


def test_bad_line_is_reported_as_file_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n{not json\n', encoding="utf-8")
    with pytest.raises(
        RecordFileError, match=r"data\.jsonl:2: not valid JSON .*each line holds one JSON object"
    ) as info:
        list(iter_records(path))
    assert info.value.location == f"{path}:2"


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(RecordFileError, match=r"data\.jsonl:2: a record must be a JSON object, got list"):
        list(iter_records(path))


def test_bad_records_can_be_collected_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n{not json\n"text"\n{"a": 2}\n', encoding="utf-8")
    problems: list[RecordFileError] = []
    assert [r.data for r in iter_records(path, on_bad_record=problems.append)] == [{"a": 1}, {"a": 2}]
    assert [p.location for p in problems] == [f"{path}:2", f"{path}:3"]


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    for name in ("empty.jsonl", "blank.jsonl"):
        path = tmp_path / name
        path.write_text("" if name == "empty.jsonl" else "\n\n", encoding="utf-8")
        assert list(iter_records(path)) == []
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]", encoding="utf-8")
    assert list(iter_records(empty_list)) == []


def test_missing_file_and_non_utf8_line(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match=r"missing\.jsonl: file not found"):
        list(iter_records(tmp_path / "missing.jsonl"))
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(RecordFileError, match=r"latin1\.jsonl:2: not UTF-8 text"):
        list(iter_records(path))
    assert [r.data["a"] for r in iter_records(path, encoding_errors="replace")] == [1, "caf\ufffd"]


def test_csv_written_by_pandas_is_read_by_line_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {"question": "什么是光合作用？", "answer": 'plants, "light"', "category": "biology"},
        {"question": "two\nlines", "answer": "", "category": "math"},
        {"question": "q3", "answer": "a3", "category": "math"},
    ]
    path = tmp_path / "raw.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    records = list(iter_records(path))
    # pandas writes an empty string as an empty cell: every CSV value is a string
    assert [r.data for r in records] == rows
    assert [(r.location, r.number) for r in records] == [(f"{path}:2", 2), (f"{path}:3", 3), (f"{path}:5", 5)]


def test_csv_with_a_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffprompt,response\r\np,r\r\n\r\nq,s\r\n".encode())
    assert [(r.location, r.data) for r in iter_records(path)] == [
        (f"{path}:2", {"prompt": "p", "response": "r"}),
        (f"{path}:4", {"prompt": "q", "response": "s"}),
    ]


def test_bad_csv_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2,3\n4,5\n", encoding="utf-8")
    with pytest.raises(RecordFileError, match=r"bad\.csv:2: 3 value\(s\) but the header has 2 column\(s\); quote"):
        list(iter_records(path))
    problems: list[RecordFileError] = []
    assert [r.data for r in iter_records(path, on_bad_record=problems.append)] == [{"a": "4", "b": "5"}]
    assert len(problems) == 1

    for text, message in [
        ("a,a\n1,2\n", r"dup\.csv:1: column name\(s\) \['a'\] appear twice"),
        ("a,\n1,2\n", r"dup\.csv:1: column 2 has no name"),
        ("", r"dup\.csv: a CSV record file starts with a header line"),
    ]:
        (tmp_path / "dup.csv").write_text(text, encoding="utf-8")
        with pytest.raises(RecordFileError, match=message):
            list(iter_records(tmp_path / "dup.csv"))
    (tmp_path / "latin.csv").write_bytes("a\n\xe9\n".encode("latin-1"))
    with pytest.raises(RecordFileError, match=r"latin\.csv: not UTF-8 text .*save the CSV as UTF-8"):
        list(iter_records(tmp_path / "latin.csv"))
