"""Report records -> QA samples with generated negatives (seed 002), and training on them end to end."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.workloads.qa.convert import ConvertOptions, convert_file, occurrences
from datasweep.workloads.qa.data import FieldNames, QaDataError, load_records, validate_record

from .conftest import FAST_PARAMS, write_jsonl

TITLES = ["北京大学", "清华大学", "复旦大学", "浙江大学", "南京大学", "武汉大学"]
ALIASES = ["北大", "清华", "复旦", "浙大", "南大", "武大"]


def make_reports(count: int, seed: int) -> list[dict[str, Any]]:
    """Chinese reports: each names its title, most an alias too; every third has no alias (a negative)."""
    rng = random.Random(seed)
    reports = []
    for index in range(count):
        pick = rng.randrange(len(TITLES))
        title, alias = TITLES[pick], ALIASES[pick]
        if index % 3 == 2:
            text = f"{title}位于中国。今年招生{rng.randint(100, 999)}人。"
            fields: dict[str, Any] = {"title": title}
        else:
            text = f"今年{title}，简称{alias}，招生{rng.randint(100, 999)}人。"
            fields = {"title": title, "aliases": [alias]}
        reports.append({"id": f"r{seed}-{index}", "report": text, "fields": fields})
    return reports


def _convert(tmp_path: Path, reports: list[Any], **options: Any) -> Any:
    return convert_file(write_jsonl(tmp_path / "reports.jsonl", reports), ConvertOptions(**options))


def test_positive_spans_are_exact_and_cover_every_occurrence(tmp_path: Path) -> None:
    report = {
        "id": "a",
        "report": "北京大学简称北大。北大在北京，北京大学很大。",
        "fields": {"title": "北京大学", "aliases": ["北大"]},
    }
    result = _convert(tmp_path, [report])
    by_field = {s["field"]: s for s in result.samples}
    title, aliases = by_field["title"]["answers"], by_field["aliases"]["answers"]
    assert title == {"text": ["北京大学", "北京大学"], "answer_start": [0, 15]}
    assert aliases["answer_start"] == [6, 9]
    for sample in result.samples:
        for text, start in zip(sample["answers"]["text"], sample["answers"]["answer_start"], strict=True):
            assert sample["context"][start : start + len(text)] == text
        record, problem, _ = validate_record(sample, FieldNames(), "test")
        assert problem is None
        assert record is not None
    assert by_field["title"]["question"] == "title"
    assert by_field["title"]["id"] == "a:title"


def test_overlapping_values_are_ordered_earliest_then_longest(tmp_path: Path) -> None:
    report = {"id": "a", "report": "在上海市的上海", "fields": {"city": ["上海", "上海市"]}}
    answers = _convert(tmp_path, [report]).samples[0]["answers"]
    assert answers == {"text": ["上海市", "上海", "上海"], "answer_start": [1, 1, 5]}
    assert occurrences("aaa", "aa") == [0, 1]


def test_offsets_are_on_nfc_text(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Café Zoë opened")
    report = {"id": "a", "report": decomposed, "fields": {"title": unicodedata.normalize("NFD", "Zoë")}}
    sample = _convert(tmp_path, [report]).samples[0]
    assert sample["context"] == "Café Zoë opened"  # NFC: one code point per accented letter
    assert sample["answers"] == {"text": ["Zoë"], "answer_start": [5]}


def test_negatives_are_unanswerable_fields_the_report_lacks(tmp_path: Path) -> None:
    reports = [
        {"id": "a", "report": "甲方是张三。", "fields": {"party": "张三", "aliases": []}},
        {"id": "b", "report": "乙方简称李四。", "fields": {"aliases": ["李四"], "party": None}},
        {"id": "c", "report": "无关内容。", "fields": {"party": "王五"}},  # the value is not in the text
    ]
    result = _convert(tmp_path, reports)
    ids = [s["id"] for s in result.samples]
    assert ids == ["a:party", "a:aliases", "b:aliases", "b:party", "c:aliases"]
    negatives = [s for s in result.samples if not s["answers"]["text"]]
    assert [s["id"] for s in negatives] == ["a:aliases", "b:party", "c:aliases"]
    assert all(s["answers"] == {"text": [], "answer_start": []} for s in negatives)
    assert result.stats["unlocated_values"] == 1  # c:party: not a positive, not a negative
    assert result.stats["positives"] == 2
    assert result.stats["negatives"] == 3


def test_negative_ratio_is_seeded_and_reproducible(tmp_path: Path) -> None:
    reports = make_reports(60, seed=1)
    everything = _convert(tmp_path, reports)
    assert everything.stats["negatives"] == everything.stats["negative_candidates"] == 20
    one = _convert(tmp_path, reports, negative_ratio=0.1, seed=7)
    again = _convert(tmp_path, reports, negative_ratio=0.1, seed=7)
    other = _convert(tmp_path, reports, negative_ratio=0.1, seed=8)
    positives = everything.stats["positives"]
    assert positives == 100
    assert one.stats["negatives"] == round(0.1 * positives) == 10
    assert one.samples == again.samples
    assert [s["id"] for s in one.samples] != [s["id"] for s in other.samples]
    assert sum(1 for s in one.samples if s["answers"]["text"]) == positives  # positives are never dropped


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"id": "x", "fields": {"title": "t"}}, "report: missing or empty"),
        ({"id": "x", "report": "t", "fields": ["title"]}, "fields: must be an object"),
        ({"id": "x", "report": "t"}, "fields: must be an object of field name -> value(s), got missing"),
        ({"id": "x", "report": "t", "fields": {"title": 3}}, "fields.title: must be a string"),
        ({"id": "x", "report": "t", "fields": {"aliases": ["a", {"b": 1}]}}, "fields.aliases[1]: must be a string"),
        ({"id": "x", "report": "t", "fields": {" ": "t"}}, "a field name is empty"),
    ],
)
def test_malformed_reports_name_the_line_record_and_field(tmp_path: Path, record: Any, expected: str) -> None:
    good = {"id": "ok", "report": "标题", "fields": {"title": "标题"}}
    result = _convert(tmp_path, [good, record])
    [problem] = result.problems
    assert problem["source"] == f"{tmp_path / 'reports.jsonl'}:2"
    assert problem["id"] == "x"
    assert expected in problem["problem"]
    assert [s["id"] for s in result.samples] == ["ok:title"]


def test_bad_reports_stop_the_stage_loader_with_their_lines(tmp_path: Path) -> None:
    from datasweep.workloads.qa.data import load_split

    path = write_jsonl(tmp_path / "train.jsonl", [{"id": "x", "report": "t", "fields": {"title": 3}}])
    with pytest.raises(QaDataError, match=r"train.jsonl:1 \(id x\): fields.title: must be a string"):
        load_split({"train": path}, "train", FieldNames(), skip_bad=False, reports=ConvertOptions())


def test_malformed_report_problems(tmp_path: Path) -> None:
    good = {"id": "ok", "report": "标题", "fields": {"title": "标题"}}
    path = tmp_path / "reports.jsonl"
    lines = [json.dumps(good), "{not json", json.dumps({"id": "x", "report": "t", "fields": {"title": 3}})]
    lines.append(json.dumps(good))  # a duplicate id
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = load_records(path, reports=ConvertOptions())
    problems = [(p["source"], p["id"], p["problem"]) for p in report.problems]
    assert problems[0][0] == f"{path}:2"
    assert problems[1] == (f"{path}:3", "x", "fields.title: must be a string, a list of strings or null, got int")
    assert problems[2] == (f"{path}:4", "ok", "duplicate report id")
    assert [r.id for r in report.records] == ["ok:title"]


def test_convert_command_writes_what_the_converter_makes(tmp_path: Path) -> None:
    reports = make_reports(12, seed=3)
    source = write_jsonl(tmp_path / "reports.jsonl", reports)
    out = tmp_path / "data" / "merged.converted.alias_title.jsonl"
    args = ["worker", "qa", "convert", "--input", str(source), "--output", str(out), "--negative-ratio", "0.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = convert_file(source, ConvertOptions(negative_ratio=0.5, seed=42)).samples
    assert written == expected
    assert json.loads(result.output)["samples"] == len(expected)
    text = out.read_text(encoding="utf-8")
    assert "大学" in text
    assert "\\u" not in text  # Chinese written as text, not \u escapes
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left beside it


def test_convert_command_refuses_bad_reports_naming_line_and_field(tmp_path: Path) -> None:
    bad = [*make_reports(2, seed=3), {"id": "x", "report": "文本", "fields": {"aliases": [1]}}]
    source = write_jsonl(tmp_path / "reports.jsonl", bad)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["worker", "qa", "convert", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 2
    assert f"{source}:3 (id x): fields.aliases[0]: must be a string" in result.output
    assert not out.exists()
    args = ["worker", "qa", "convert", "--input", str(source), "--output", str(out), "--skip-bad"]
    skipped = CliRunner().invoke(cli, args)
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.output.splitlines()[-1])["invalid_reports"] == 1


def _spec(root: Path, data: Path, model: Path, params: dict[str, Any]) -> Path:
    spec = {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": "WorkerSpec",
        "stage": "qa",
        "artifact": "reports-qa-abababababab",
        "fingerprint": "cd" * 32,
        "dataset": "reports",
        "semanticName": "reports",
        "outputDir": str(root / "out"),
        "inputs": {"data": str(data)},
        "baseModel": str(model),
        "params": params,
    }
    path = root / "worker.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def test_the_stage_trains_on_converted_reports(tmp_path: Path) -> None:
    """input_format: reports converts the merged report file in the stage; the tiny model trains on it, and the
    `convert` command's file trains to the same dev set through `train`."""
    import torch

    from datasweep.testing.tiny import build_for_kind

    torch.set_num_threads(1)
    reports = make_reports(40, seed=5)
    source = write_jsonl(tmp_path / "reports.jsonl", reports)
    model = build_for_kind("qa", tmp_path / "tiny", corpus=[r["report"] for r in reports] + ["title aliases"])
    params = {**FAST_PARAMS, "num_train_epochs": 1, "dev_ratio": 0.25}
    stage_params = {**params, "input_format": "reports", "report_negative_ratio": 0.2}
    spec = _spec(tmp_path, source, model, stage_params)
    result = CliRunner().invoke(cli, ["worker", "qa", "--spec", str(spec)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out")
    assert manifest is not None
    stats = manifest.extra["converted_reports"]["train"]
    converted = convert_file(source, ConvertOptions(negative_ratio=0.2, seed=42)).stats
    assert stats == converted
    assert stats["negatives"] == round(0.2 * stats["positives"])
    dev_eval = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert dev_eval["HasAns_total"] + dev_eval.get("NoAns_total", 0) == dev_eval["total"]
    assert dev_eval["total"] < converted["samples"]  # 10 of the 40 reports, whole

    converted_file = tmp_path / "merged.converted.alias_title.jsonl"
    args = ["worker", "qa", "convert", "--input", str(source), "--output", str(converted_file)]
    assert CliRunner().invoke(cli, [*args, "--negative-ratio", "0.2"]).exit_code == 0
    settings = [f"{key}={value}" for key, value in params.items()]
    train = ["worker", "qa", "train", "--data", str(converted_file), "--model", str(model), "--output"]
    trained = CliRunner().invoke(cli, [*train, str(tmp_path / "o"), *(p for s in settings for p in ("--set", s))])
    assert trained.exit_code == 0, trained.output
    history = json.loads((tmp_path / "o" / "metrics_history.json").read_text())
    assert history["eval"][0]["total"] == dev_eval["total"]  # same samples, same seeded split


def test_report_ids_default_to_the_line_and_may_be_integers(tmp_path: Path) -> None:
    reports = [
        {"report": "标题甲", "fields": {"title": "甲"}},
        {"id": 7, "report": "标题乙", "fields": {"title": "乙"}},
    ]
    assert [s["id"] for s in _convert(tmp_path, reports).samples] == ["line1:title", "7:title"]


def test_skipped_bad_reports_reach_the_stage_as_problems(tmp_path: Path) -> None:
    from datasweep.workloads.qa.data import load_train_dev

    reports = [*make_reports(8, seed=4), {"id": "x", "report": "文本"}]
    path = write_jsonl(tmp_path / "merged.jsonl", reports)
    train, dev = load_train_dev({"validation": path}, FieldNames(), True, 0.25, 42, ConvertOptions())
    assert [p["id"] for p in train.problems] == ["x"]
    assert train.conversion is not None
    assert train.conversion["reports"] == 8
    assert {r.context for r in train.records}.isdisjoint({r.context for r in dev.records})
    assert len(train.records) + len(dev.records) == train.conversion["samples"]
