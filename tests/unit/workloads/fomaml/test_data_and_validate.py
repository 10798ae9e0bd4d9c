"""Data preparation (layout, determinism, strategies) and validation (errors and warnings)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasweep.api.stages.fomaml import FomamlParams
from datasweep.workloads.fomaml.data import DataError, prepare
from datasweep.workloads.fomaml.stage import ParamsError, load_params, parse_params
from datasweep.workloads.fomaml.validate import validate_prepared

from .conftest import PREP_PARAMS, synthetic_records, write_generate_artifact


def _prepare(tmp_path: Path, name: str = "out", **overrides: object) -> tuple[Path, FomamlParams]:
    source = write_generate_artifact(tmp_path / "gen", synthetic_records())
    params = FomamlParams(**{**PREP_PARAMS, **overrides})
    out = tmp_path / name
    prepare(source, out, params)
    return out, params


def _rows(path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pq.read_table(path).to_pylist()
    return rows


def test_layout_columns_and_ratios(tmp_path: Path) -> None:
    out, params = _prepare(tmp_path)
    for task in ("task0", "task1", "task2"):
        support = _rows(out / "meta_train" / f"{task}_support.parquet")
        query = _rows(out / "meta_train" / f"{task}_query.parquet")
        test = _rows(out / "few_shot_eval" / f"{task}_test.parquet")
        assert (len(support), len(query), len(test)) == (6, 8, 6)
        assert set(support[0]) == {"prompt", "response", "metadata"}
        assert support[0]["prompt"].startswith("Q: question ")  # type: ignore[union-attr]
        assert json.loads(str(support[0]["metadata"]))["task_id"] == task
        assert len(_rows(out / "few_shot_eval" / f"{task}_2shot.parquet")) == 2
    assert len(_rows(out / "baseline_sft" / "mixed_train.parquet")) == 3 * (6 + 8)
    assert validate_prepared(out, params).ok


def test_preparation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first, _ = _prepare(tmp_path, "a")
    second, _ = _prepare(tmp_path, "b")
    other, _ = _prepare(tmp_path, "c", seed=7)
    files = sorted(p.relative_to(first) for p in first.rglob("*.parquet"))
    assert files
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_stratified_and_temporal_strategies(tmp_path: Path) -> None:
    out, _ = _prepare(tmp_path, "strat", split_strategy="stratified")
    support = _rows(out / "meta_train" / "task0_support.parquet")
    levels = sorted(json.loads(str(r["metadata"]))["level"] for r in support)
    assert levels == ["Level 0", "Level 0", "Level 1", "Level 1", "Level 2", "Level 2"]

    out, _ = _prepare(tmp_path, "temporal", split_strategy="temporal", time_key="time", metadata_fields=["time"])
    times = {
        split: [json.loads(str(r["metadata"]))["time"] for r in _rows(out / folder / f"task0_{split}.parquet")]
        for folder, split in (("meta_train", "support"), ("meta_train", "query"), ("few_shot_eval", "test"))
    }
    assert times["support"] == sorted(times["support"])
    assert max(times["support"]) < min(times["query"])
    assert max(times["query"]) < min(times["test"])


def test_bad_records_name_the_file_and_line(tmp_path: Path) -> None:
    source = write_generate_artifact(tmp_path / "gen", synthetic_records())
    with pytest.raises(DataError, match=r"copa_train\.jsonl:1: record has no task field 'category'"):
        prepare(source, tmp_path / "o1", FomamlParams(**{**PREP_PARAMS, "task_key": "category"}))
    with pytest.raises(DataError, match=r"copa_train\.jsonl:1: prompt_template uses field 'problem'"):
        prepare(source, tmp_path / "o2", FomamlParams(**{**PREP_PARAMS, "prompt_template": "{problem}"}))
    (source / "Copa" / "copa_test.jsonl").write_text('{"task": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"copa_test\.jsonl:2: not valid JSON"):
        prepare(source, tmp_path / "o3", FomamlParams(**PREP_PARAMS))


def test_duplicates_are_dropped_before_splitting(tmp_path: Path) -> None:
    records = synthetic_records(n_tasks=1)
    source = write_generate_artifact(tmp_path / "gen", records + [dict(r, id="dup") for r in records])
    report = prepare(source, tmp_path / "out", FomamlParams(**PREP_PARAMS))
    assert report.duplicates_dropped == {"task0": 20}
    assert validate_prepared(tmp_path / "out", FomamlParams(**PREP_PARAMS)).ok


def _write(path: Path, columns: dict[str, list[object]]) -> None:
    pq.write_table(pa.table(columns), path)


def test_validation_catches_leakage_nulls_columns_metadata_and_sizes(tmp_path: Path) -> None:
    out, params = _prepare(tmp_path)
    support_path = out / "meta_train" / "task0_support.parquet"
    test_rows = _rows(out / "few_shot_eval" / "task0_test.parquet")
    support_rows = _rows(support_path)
    leaked = [*support_rows[:-1], test_rows[0]]
    _write(support_path, {k: [r[k] for r in leaked] for k in ("prompt", "response", "metadata")})
    _write(out / "meta_train" / "task1_query.parquet", {"prompt": ["a", None], "response": ["b", "c"]})
    _write(out / "meta_train" / "task2_query.parquet", {"question": ["a"], "response": ["b"]})
    _write(
        out / "few_shot_eval" / "task1_test.parquet",
        {"prompt": ["p"], "response": ["r"], "metadata": ["{not json"]},
    )
    report = validate_prepared(out, params.model_copy(update={"min_test_samples": 2}))
    text = "\n".join(report.errors)
    assert not report.ok
    assert "task 'task0': 1 example(s) appear in both support and test (leakage)" in text
    assert "task1_query.parquet: column 'prompt' has 1 null value(s)" in text
    assert "task2_query.parquet: missing required column 'prompt'" in text
    assert "task1_test.parquet: metadata is not a JSON string in 1 row(s)" in text
    assert "task 'task1': test has 1 row(s), fewer than min_test_samples=2" in text
    assert any("query set (2) is smaller than support set (6)" in w for w in report.warnings)
    assert "FAILED" in report.render()


def test_cross_task_leakage(tmp_path: Path) -> None:
    out, params = _prepare(tmp_path)
    task1_support = _rows(out / "meta_train" / "task1_support.parquet")
    rows = [*_rows(out / "few_shot_eval" / "task0_test.parquet"), task1_support[0]]
    _write(
        out / "few_shot_eval" / "task0_test.parquet",
        {k: [r[k] for r in rows] for k in ("prompt", "response", "metadata")},
    )
    report = validate_prepared(out, params)
    assert report.errors == ["leakage across tasks: 1 example(s) of task0 test <- task1/support"]


def test_bad_params_are_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"params.inner_lr: Input should be greater than 0"):
        parse_params({"inner_lr": 0})
    with pytest.raises(ParamsError, match=r"params.inner_batchsize: Extra inputs are not permitted"):
        parse_params({"inner_batchsize": 4})
    with pytest.raises(ParamsError, match=r"support_ratio \+ query_ratio must be <= 1"):
        parse_params({"support_ratio": 0.6, "query_ratio": 0.6})
    with pytest.raises(ParamsError, match=r"--set 'inner_lr': expected KEY=VALUE"):
        load_params(None, ["inner_lr"])
    assert load_params(None, ["inner_lr=1e-3", "k_shots=[1, 3]"]).k_shots == [1, 3]
