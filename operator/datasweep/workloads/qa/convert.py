"""Report records -> extractive QA samples with generated negatives (seed 002's merged.converted.alias_title.jsonl).

One report record is a report text with its structured fields:

    {"id": "r1", "report": "...text...", "fields": {"title": "...", "aliases": ["...", "..."], "author": null}}

Each field becomes one question whose text is the field name (the EBQA convention of the seed: the key is the
question). Texts, field names and values are NFC-normalized first, so character offsets are offsets into the NFC
report, which becomes the sample's context.

- positive: a field with a value (a string, or a list of strings such as aliases) that occurs in the report; its
  answers are every occurrence of every value, ordered by offset (longest first on a tie), so the training
  label (the first answer) is the earliest mention and evaluation accepts any of them;
- negative: a field name seen in the file that this report lacks, or holds empty (null, "", []): the question
  has no answer in this report. With `negative_ratio` the negatives are downsampled to at most
  round(ratio x positives), drawn with `seed`; None keeps every one;
- a value that does not occur in its report is neither (the report has the field, worded otherwise): it is
  counted as `unlocated` and left out.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasweep.store.atomic import atomic_open
from datasweep.store.records import Record, RecordFileError, iter_records

REPORT_KEY = "report"
FIELDS_KEY = "fields"


class ReportFormatError(ValueError):
    """A report record that cannot be converted; the message names the record and field."""


@dataclass(frozen=True)
class ConvertOptions:
    negative_ratio: float | None = None  # max negatives per positive; None keeps every negative
    seed: int = 42
    id_field: str = "id"


@dataclass
class ConvertResult:
    samples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # {"source", "id", "problem"}, as LoadReport's
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Report:
    id: str
    text: str
    values: dict[str, list[str]]  # field -> non-empty values, in the record's order
    source: str


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def occurrences(text: str, value: str) -> list[int]:
    """Every start offset of `value` in `text`, overlapping ones included."""
    starts, position = [], text.find(value)
    while position != -1:
        starts.append(position)
        position = text.find(value, position + 1)
    return starts


def _field_values(name: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    values: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            where = f"fields.{name}" + (f"[{index}]" if isinstance(raw, list) else "")
            raise ReportFormatError(f"{where}: must be a string, a list of strings or null, got {type(item).__name__}")
        value = nfc(item).strip()
        if value and value not in values:
            values.append(value)
    return values


def parse_report(record: Record, id_field: str) -> _Report:
    """Validate one report record; ReportFormatError names the field and the fix."""
    raw = record.data
    report_id = raw.get(id_field)
    if report_id is None:
        report_id = f"line{record.number}"  # no id: the record's line/item/row number keeps ids unique
    elif not isinstance(report_id, (str, int)) or isinstance(report_id, bool) or str(report_id) == "":
        raise ReportFormatError(f"{id_field}: must be a non-empty string or an integer")
    text = raw.get(REPORT_KEY)
    if not isinstance(text, str) or not text.strip():
        raise ReportFormatError(f"{REPORT_KEY}: missing or empty; each record needs the report text as a string")
    fields = raw.get(FIELDS_KEY)
    if not isinstance(fields, dict):
        got = "missing" if fields is None else f"a {type(fields).__name__}"
        raise ReportFormatError(f"{FIELDS_KEY}: must be an object of field name -> value(s), got {got}")
    values: dict[str, list[str]] = {}
    for name, value in fields.items():
        key = nfc(name).strip()
        if not key:
            raise ReportFormatError(f"{FIELDS_KEY}: a field name is empty; field names are the questions")
        if key in values:
            raise ReportFormatError(f"fields.{name}: the same field name twice (after Unicode NFC normalization)")
        values[key] = _field_values(name, value)
    return _Report(str(report_id), nfc(text), values, record.location)


def _positive(report: _Report, name: str) -> dict[str, Any] | None:
    spans = sorted(
        {(start, value) for value in report.values[name] for start in occurrences(report.text, value)},
        key=lambda span: (span[0], -len(span[1]), span[1]),
    )
    if not spans:
        return None
    return _sample(report, name, [value for _, value in spans], [start for start, _ in spans])


def _sample(report: _Report, name: str, texts: list[str], starts: list[int]) -> dict[str, Any]:
    return {
        "id": f"{report.id}:{name}",
        "context": report.text,
        "question": name,
        "answers": {"text": texts, "answer_start": starts},
        "report_id": report.id,
        "field": name,
    }


def convert_records(records: Iterable[Record], options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """QA samples from report records, in record order (each report's positives, then its negatives).

    Invalid records are listed in `problems` and left out; the caller decides whether that is fatal."""
    result = ConvertResult()
    reports: list[_Report] = []
    seen: set[str] = set()
    for record in records:
        try:
            report = parse_report(record, options.id_field)
        except ReportFormatError as exc:
            rid = str(record.data.get(options.id_field, "?"))
            result.problems.append({"source": record.location, "id": rid, "problem": str(exc)})
            continue
        if report.id in seen:
            result.problems.append({"source": record.location, "id": report.id, "problem": "duplicate report id"})
            continue
        seen.add(report.id)
        reports.append(report)
    vocabulary = sorted({name for report in reports for name in report.values})
    per_report: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    unlocated = 0
    for report in reports:
        positives, negatives = [], []
        for name in report.values:
            sample = _positive(report, name)
            if sample is not None:
                positives.append(sample)
            elif report.values[name]:
                unlocated += 1
        present = {name for name in report.values if report.values[name]}
        negatives = [_sample(report, name, [], []) for name in vocabulary if name not in present]
        per_report.append((positives, negatives))
    n_positive = sum(len(pos) for pos, _ in per_report)
    candidates = [sample["id"] for _, negs in per_report for sample in negs]
    kept = set(candidates)
    if options.negative_ratio is not None:
        limit = min(len(candidates), round(options.negative_ratio * n_positive))
        kept = set(random.Random(options.seed).sample(candidates, limit))
    for positives, negatives in per_report:
        result.samples.extend(positives)
        result.samples.extend(sample for sample in negatives if sample["id"] in kept)
    result.stats = {
        "reports": len(reports),
        "invalid_reports": len(result.problems),
        "positives": n_positive,
        "negatives": len(kept),
        "negative_candidates": len(candidates),
        "unlocated_values": unlocated,
        "samples": len(result.samples),
    }
    return result


def convert_file(path: str | Path, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert one jsonl/json/parquet/csv file of report records (a line that is not JSON is a problem)."""
    problems: list[dict[str, str]] = []

    def bad_record(error: RecordFileError) -> None:
        problems.append({"source": error.location, "id": "?", "problem": error.problem})

    result = convert_records(list(iter_records(path, on_bad_record=bad_record)), options)
    result.problems[:0] = problems
    result.stats["invalid_reports"] = len(result.problems)
    return result


def write_samples(path: str | Path, samples: Iterable[dict[str, Any]]) -> None:
    """The samples as jsonl, replacing `path` whole (never a half-written file on the shared volume)."""
    with atomic_open(path) as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
