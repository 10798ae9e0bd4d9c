"""A prepared dataset may hold seed 003's per-task folders: they are part of its content hash and snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from datasweep.store.layout import LayoutError, dataset_files
from datasweep.store.records import RECORD_SUFFIXES


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "tasks"
    (source / "meta_train").mkdir(parents=True)
    (source / "tasks_train.jsonl").write_text('{"task": "a"}\n')
    (source / "meta_train" / "a_support.csv").write_text("prompt,response\np,r\n")
    (source / "meta_train" / "notes.txt").write_text("not a record file")
    return source


def test_task_files_change_the_hash_of_a_prepared_dataset_only(tmp_path: Path) -> None:
    source = _source(tmp_path)
    prepared = dataset_files(source, "Tasks", RECORD_SUFFIXES)
    assert prepared.relative_task_files() == ["meta_train/a_support.csv"]
    generated = dataset_files(source, "Tasks")
    assert generated.task_files == ()
    # a dataset's hash without task folders is what it always was: name + bytes of each split file
    expected = hashlib.sha256(b"tasks_train.jsonl\0" + b'{"task": "a"}\n' + b"\0").hexdigest()
    assert generated.sha256 == expected
    assert prepared.sha256 != expected

    (source / "meta_train" / "a_support.csv").write_text("prompt,response\np,other\n")
    assert dataset_files(source, "Tasks", RECORD_SUFFIXES).sha256 != prepared.sha256
    assert dataset_files(source, "Tasks").sha256 == expected


def test_a_prepared_dataset_may_be_only_seed_003_folders(tmp_path: Path) -> None:
    source = _source(tmp_path)
    (source / "tasks_train.jsonl").unlink()
    files = dataset_files(source, "Tasks", RECORD_SUFFIXES)
    assert files.files == ()
    assert files.relative_task_files() == ["meta_train/a_support.csv"]
    with pytest.raises(LayoutError, match="no split files"):
        dataset_files(source, "Tasks")
    (source / "meta_train" / "a_support.csv").unlink()
    with pytest.raises(LayoutError, match=r"or seed 003 folders meta_train/, few_shot_eval/, baseline_sft/"):
        dataset_files(source, "Tasks", RECORD_SUFFIXES)
