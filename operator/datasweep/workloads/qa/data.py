"""QA records from jsonl/parquet files, validated with messages that name the file, line and record id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasweep.store.inputs import SPLIT_ALIASES, InputError, read_input, split_of
from datasweep.store.records import RecordFileError, iter_records

if TYPE_CHECKING:
    from datasweep.workloads.qa.convert import ConvertOptions


class QaDataError(ValueError):
    """Input data that cannot be used; the message lists every problem with file:line and record id."""


@dataclass(frozen=True)
class QaRecord:
    id: str
    question: str
    context: str
    answer_texts: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    source: str = ""  # file:line, for messages

    @property
    def is_impossible(self) -> bool:
        return not self.answer_texts


@dataclass(frozen=True)
class FieldNames:
    id: str = "id"
    context: str = "context"
    question: str = "question"
    answers: str = "answers"


@dataclass
class LoadReport:
    records: list[QaRecord] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # {"source", "id", "problem"}
    conversion: dict[str, int] | None = None  # counts of the report -> QA conversion, when there was one

    def describe_problems(self, limit: int = 20) -> str:
        lines = [f"{p['source']} (id {p['id']}): {p['problem']}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _parse_answers(raw: Any) -> tuple[list[str], list[int]]:
    """SQuAD answers either as {"text": [...], "answer_start": [...]} or [{"text", "answer_start"}, ...]."""
    if raw is None:
        return [], []
    if isinstance(raw, dict):
        texts, starts = raw.get("text", []), raw.get("answer_start", [])
        if isinstance(texts, str):
            texts, starts = [texts], [starts]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise ValueError("answers.text and answers.answer_start must be lists of the same length")
        return [str(t) for t in texts], [int(s) for s in starts]
    if isinstance(raw, list):
        texts_list: list[str] = []
        starts_list: list[int] = []
        for item in raw:
            if not isinstance(item, dict) or "text" not in item or "answer_start" not in item:
                raise ValueError("each answer must be an object with text and answer_start")
            texts_list.append(str(item["text"]))
            starts_list.append(int(item["answer_start"]))
        return texts_list, starts_list
    raise ValueError(f"answers must be an object or a list, got {type(raw).__name__}")


def validate_record(raw: Any, fields: FieldNames, source: str) -> tuple[QaRecord | None, str | None, str]:
    """(record, problem, id): exactly one of record and problem is set."""
    if not isinstance(raw, dict):
        return None, "not a JSON object", "?"
    record_id = str(raw.get(fields.id, "?"))
    missing = [name for name in (fields.id, fields.question, fields.context) if name not in raw]
    if missing:
        return (
            None,
            f"missing field(s) {', '.join(missing)} (set id_field/question_field/context_field)",
            record_id,
        )
    context, question = raw[fields.context], raw[fields.question]
    if not isinstance(context, str) or not context.strip():
        return None, f"empty context ({fields.context!r} must be a non-empty string)", record_id
    if not isinstance(question, str) or not question.strip():
        return None, f"empty question ({fields.question!r} must be a non-empty string)", record_id
    try:
        texts, starts = _parse_answers(raw.get(fields.answers))
    except (ValueError, TypeError) as exc:
        return None, f"{fields.answers}: {exc}", record_id
    for text, start in zip(texts, starts, strict=True):
        end = start + len(text)
        if not text:
            return (
                None,
                f"empty answer text at answer_start {start} (use empty lists for no answer)",
                record_id,
            )
        if start < 0 or end > len(context):
            return (
                None,
                (f"answer {text!r} at answer_start {start} ends at {end}, outside the context (length {len(context)})"),
                record_id,
            )
        if context[start:end] != text:
            return (
                None,
                (
                    f"answer text {text!r} is not at answer_start {start}: the context there reads "
                    f"{context[start:end]!r}"
                ),
                record_id,
            )
    return QaRecord(record_id, question, context, tuple(texts), tuple(starts), source), None, record_id


def load_records(
    path: str | Path, fields: FieldNames = FieldNames(), reports: ConvertOptions | None = None
) -> LoadReport:
    """Read and validate every record of one jsonl/parquet file (duplicate ids are problems too).

    With `reports`, the file holds report records, converted to QA samples first (convert.py)."""
    source_path = Path(path)
    if not source_path.is_file():
        raise QaDataError(f"{source_path}: data file not found")
    if reports is not None:
        return _load_reports(source_path, reports)
    report = LoadReport()
    seen: set[str] = set()

    def bad_record(error: RecordFileError) -> None:
        report.problems.append({"source": error.location, "id": "?", "problem": error.problem})

    try:
        for source, raw, _ in iter_records(source_path, on_bad_record=bad_record):
            record, problem, record_id = validate_record(raw, fields, source)
            if record is not None and record.id in seen:
                record, problem = None, "duplicate id"
            if problem is not None:
                report.problems.append({"source": source, "id": record_id, "problem": problem})
            elif record is not None:
                seen.add(record.id)
                report.records.append(record)
    except RecordFileError as exc:
        raise QaDataError(str(exc)) from exc
    return report


def _load_reports(path: Path, options: ConvertOptions) -> LoadReport:
    from datasweep.workloads.qa.convert import convert_file

    try:
        converted = convert_file(path, options)
    except RecordFileError as exc:
        raise QaDataError(str(exc)) from exc
    report = LoadReport(problems=converted.problems, conversion=converted.stats)
    for sample in converted.samples:
        # the converter writes the default field names; checking its samples keeps one definition of valid
        record, problem, record_id = validate_record(sample, FieldNames(), f"{path} (report {sample['report_id']})")
        if record is None:
            raise AssertionError(f"converted sample {record_id} is invalid: {problem}")
        report.records.append(record)
    return report


def find_split_files(data: str | Path, dataset: str | None = None) -> dict[str, Path]:
    """Split name -> file: an upstream artifact's accepted data (through its manifest), a raw dataset directory
    (`<dataset>_{train,validation,test}.jsonl`, `train.jsonl`, `dev.parquet`, ...). A file is the only split."""
    try:
        found = read_input(data, dataset)
    except InputError as exc:
        raise QaDataError(str(exc)) from exc
    if Path(data).is_file():
        return {split_of(Path(data)) or "validation": Path(data)}
    chosen: dict[str, Path] = {}
    for split, paths in found.splits.items():
        if len(paths) > 1:
            listing = ", ".join(str(p) for p in paths)
            raise QaDataError(f"{data}: several {split} files ({listing}); keep one or point --data at a file")
        chosen[split] = paths[0]
    return chosen


def load_split(
    files: dict[str, Path], split: str, fields: FieldNames, skip_bad: bool, reports: ConvertOptions | None = None
) -> LoadReport:
    if split not in files:
        names = ", ".join(SPLIT_ALIASES[split])
        raise QaDataError(f"no {split} split found (looked for *_{{{names}}}.jsonl/.parquet)")
    report = load_records(files[split], fields, reports)
    if report.problems and not skip_bad:
        raise QaDataError(
            f"{len(report.problems)} invalid record(s) in {files[split]} "
            f"(fix them, or set bad_records: skip to drop them):\n{report.describe_problems()}"
        )
    if not report.records:
        raise QaDataError(f"{files[split]}: no usable records")
    return report


def gold_answers(records: Sequence[QaRecord]) -> dict[str, list[str]]:
    return {record.id: list(record.answer_texts) for record in records}


def split_train_dev(records: Sequence[QaRecord], dev_ratio: float, seed: int) -> tuple[list[QaRecord], list[QaRecord]]:
    """A seeded train/dev split of one merged file (seed 002 trains from merged.converted.*.jsonl).

    Whole contexts go to one side, so no dev question shares its report with a training question."""
    import random

    contexts = sorted({record.context for record in records})
    random.Random(seed).shuffle(contexts)
    n_dev = max(1, round(len(contexts) * dev_ratio)) if len(contexts) > 1 else 0
    if n_dev == 0 or n_dev >= len(contexts):
        raise QaDataError(
            f"cannot split {len(records)} records ({len(contexts)} distinct contexts) into train and dev with "
            f"dev_ratio {dev_ratio}; give a validation split or more data"
        )
    dev_contexts = set(contexts[:n_dev])
    train = [record for record in records if record.context not in dev_contexts]
    dev = [record for record in records if record.context in dev_contexts]
    return train, dev


def load_train_dev(
    files: dict[str, Path],
    fields: FieldNames,
    skip_bad: bool,
    dev_ratio: float,
    seed: int,
    reports: ConvertOptions | None = None,
) -> tuple[LoadReport, LoadReport]:
    """Train and dev reports: the train and validation splits, or, when only one file is there (a merged
    file), a seeded split of it by `dev_ratio` (converted reports split whole: one report, one context)."""
    present = [split for split in ("train", "validation") if split in files]
    if len(present) != 1 or dev_ratio <= 0:
        return (
            load_split(files, "train", fields, skip_bad, reports),
            load_split(files, "validation", fields, skip_bad, reports),
        )
    merged = load_split(files, present[0], fields, skip_bad, reports)
    train, dev = split_train_dev(merged.records, dev_ratio, seed)
    return LoadReport(records=train, problems=merged.problems, conversion=merged.conversion), LoadReport(records=dev)
