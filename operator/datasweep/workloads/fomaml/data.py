"""Data preparation (seed 003): raw records -> tasks -> support/query/test verl parquet files.

Layout written under the output directory:
    meta_train/<task>_support.parquet, meta_train/<task>_query.parquet
    few_shot_eval/<task>_test.parquet, few_shot_eval/<task>_<k>shot.parquet
    baseline_sft/mixed_train.parquet            (optional)
    prepare_report.json
Columns: prompt, response (str), metadata (JSON string). Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasweep.api.stages.fomaml import FomamlParams
from datasweep.store.atomic import atomic_write_bytes, atomic_write_json
from datasweep.store.inputs import InputError, read_input, split_of
from datasweep.store.records import RECORD_SUFFIXES, Record, RecordFileError, iter_records

META_TRAIN = "meta_train"
FEW_SHOT_EVAL = "few_shot_eval"
BASELINE_SFT = "baseline_sft"


class DataError(ValueError):
    """Input data that cannot be prepared or trained on; the message names the file (and line) and the fix."""


@dataclass
class RawRecord:
    fields: dict[str, Any]
    source: str  # "path:line" (or "path:item N" / "path:row N") for messages

    def get(self, dotted: str) -> Any:
        value: Any = self.fields
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


@dataclass
class Example:
    prompt: str
    response: str
    metadata: str
    source: str = ""

    def content_hash(self) -> str:
        return content_hash(self.prompt, self.response)


@dataclass
class PrepareReport:
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    input_files: list[str] = field(default_factory=list)
    records: int = 0


def content_hash(prompt: str, response: str) -> str:
    """Hash of an example's content, whitespace-normalised, for leakage and duplicate checks."""
    normalised = " ".join(prompt.split()) + "\x1f" + " ".join(response.split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def safe_task_name(name: str) -> str:
    """A task name usable as a file name prefix (the original stays in metadata.task_id)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("._")
    return cleaned or "default"


# ---------------------------------------------------------------- reading raw records


def find_input_files(input_dir: Path, dataset: str | None = None) -> list[Path]:
    """Raw record files of an input, in train, validation, test order: an upstream artifact's accepted data
    (through its manifest), a raw dataset directory (`<name>_<split>.jsonl`, ...) or one file."""
    try:
        data = read_input(input_dir, dataset)
    except InputError as exc:
        raise DataError(str(exc)) from exc
    found = data.files()
    if not found:
        raise DataError(f"{data.describe()}: no record files to prepare")
    return found


def _iter_records(path: Path) -> Iterator[Record]:
    try:
        yield from iter_records(path)
    except RecordFileError as exc:
        raise DataError(str(exc)) from exc


def read_records(path: Path) -> list[RawRecord]:
    split = split_of(path) or path.stem
    return [RawRecord({**record.data, "_split": split}, record.location) for record in _iter_records(path)]


# ---------------------------------------------------------------- formatting


def _render(template: str, record: RawRecord, what: str) -> str:
    try:
        return template.format_map(record.fields)
    except KeyError as exc:
        available = ", ".join(sorted(k for k in record.fields if not k.startswith("_"))) or "(none)"
        raise DataError(
            f"{record.source}: {what} uses field {exc.args[0]!r} which this record lacks "
            f"(fields: {available}); fix the template or the data"
        ) from exc
    except (IndexError, ValueError, AttributeError) as exc:
        raise DataError(f"{record.source}: cannot render {what} {template!r}: {exc}") from exc


def format_example(record: RawRecord, task: str, params: FomamlParams) -> Example:
    """Turn a raw record into verl SFT format (prompt, response, metadata JSON string)."""
    prompt = _render(params.prompt_template, record, "prompt_template")
    response = _render(params.response_template, record, "response_template")
    meta: dict[str, Any] = {"task_id": task, "source": record.source.rsplit(":", 1)[0]}
    level = record.get(params.level_key)
    if level is not None:
        meta["level"] = level if isinstance(level, (int, float, bool)) else str(level)
    for name in params.metadata_fields:
        value = record.get(name)
        if value is not None:
            meta[name] = value
    return Example(prompt, response, json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str), record.source)


# ---------------------------------------------------------------- splitting


def _largest_remainder(sizes: Sequence[int], ratio: float, total_target: int) -> list[int]:
    """Split `total_target` across groups in proportion to their sizes (Hamilton's method)."""
    exact = [size * ratio for size in sizes]
    quotas = [int(value) for value in exact]
    missing = total_target - sum(quotas)
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order:
        if missing <= 0:
            break
        if quotas[i] < sizes[i]:
            quotas[i] += 1
            missing -= 1
    return quotas


def split_task(
    records: list[RawRecord], params: FomamlParams, rng: random.Random
) -> tuple[list[RawRecord], list[RawRecord], list[RawRecord]]:
    """support/query/test of one task, by the configured strategy (seed 003, strategies 1-3)."""
    total = len(records)
    n_support = int(total * params.support_ratio)
    n_query = int(total * params.query_ratio)
    if params.split_strategy == "temporal":
        ordered = list(records)
        if params.time_key is not None:
            missing = [r.source for r in ordered if r.get(params.time_key) is None]
            if missing:
                raise DataError(
                    f"{missing[0]}: temporal split by time_key {params.time_key!r} but the field is missing "
                    f"({len(missing)} records); set time_key to an existing field or null for file order"
                )
            try:
                ordered.sort(key=lambda r: r.get(params.time_key or ""))
            except TypeError as exc:
                raise DataError(f"time_key {params.time_key!r} has values that cannot be compared: {exc}") from exc
        return ordered[:n_support], ordered[n_support : n_support + n_query], ordered[n_support + n_query :]
    if params.split_strategy == "random":
        shuffled = list(records)
        rng.shuffle(shuffled)
        return (
            shuffled[:n_support],
            shuffled[n_support : n_support + n_query],
            shuffled[n_support + n_query :],
        )
    by_level: dict[str, list[RawRecord]] = defaultdict(list)
    for record in records:
        level = record.get(params.level_key)
        by_level["unknown" if level is None else str(level)].append(record)
    levels = sorted(by_level)
    for level in levels:
        rng.shuffle(by_level[level])
    sizes = [len(by_level[level]) for level in levels]
    support_quota = _largest_remainder(sizes, params.support_ratio, n_support)
    remaining = [size - quota for size, quota in zip(sizes, support_quota, strict=True)]
    query_quota = _largest_remainder(remaining, params.query_ratio / (1 - params.support_ratio), n_query)
    support: list[RawRecord] = []
    query: list[RawRecord] = []
    test: list[RawRecord] = []
    for level, n_s, n_q in zip(levels, support_quota, query_quota, strict=True):
        group = by_level[level]
        support.extend(group[:n_s])
        query.extend(group[n_s : n_s + n_q])
        test.extend(group[n_s + n_q :])
    return support, query, test


# ---------------------------------------------------------------- writing


def examples_to_parquet_bytes(
    examples: Iterable[Example], prompt_column: str = "prompt", response_column: str = "response"
) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(examples)
    table = pa.table(
        {
            prompt_column: pa.array([e.prompt for e in rows], type=pa.string()),
            response_column: pa.array([e.response for e in rows], type=pa.string()),
            "metadata": pa.array([e.metadata for e in rows], type=pa.string()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def write_examples(path: Path, examples: Iterable[Example], columns: tuple[str, str] = ("prompt", "response")) -> None:
    atomic_write_bytes(path, examples_to_parquet_bytes(examples, *columns))


def _write_shots(
    output_dir: Path,
    task: str,
    support: list[Example],
    params: FomamlParams,
    counts: dict[str, int],
    columns: tuple[str, str] = ("prompt", "response"),
) -> None:
    for k in params.k_shots:
        if k <= len(support):
            shots = random.Random(f"{params.seed}:{task}:{k}shot").sample(support, k)
            write_examples(output_dir / FEW_SHOT_EVAL / f"{task}_{k}shot.parquet", shots, columns)
            counts[f"{k}shot"] = k


# ---------------------------------------------------------------- per-task files (seed 003 meta.tasks)


def _task_examples(input_dir: Path, files: list[str], where: str, task: str, params: FomamlParams) -> list[Example]:
    """The rows of a task's files, in order, as examples (prompt_key/response_key columns, metadata kept)."""
    examples: list[Example] = []
    for index, relative in enumerate(files):
        path = input_dir / relative
        if not path.is_file():
            raise DataError(
                f"{where}[{index}]: {path} not found; paths are relative to the input data directory {input_dir}"
            )
        if path.suffix not in RECORD_SUFFIXES:
            raise DataError(f"{where}[{index}]: {path}: unsupported file type; use .parquet, .jsonl, .json or .csv")
        for record in _iter_records(path):
            prompt, response = record.data.get(params.prompt_key), record.data.get(params.response_key)
            if not isinstance(prompt, str) or not isinstance(response, str):
                fields = ", ".join(sorted(record.data)) or "(none)"
                raise DataError(
                    f"{record.location}: needs string columns {params.prompt_key!r} and {params.response_key!r} "
                    f"(got {type(prompt).__name__}, {type(response).__name__}; columns: {fields}); set "
                    "prompt_key/response_key, or give raw records without `tasks` to prepare them"
                )
            meta = record.data.get("metadata")
            if isinstance(meta, dict):
                meta = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)
            elif not isinstance(meta, str) or not meta.strip():
                meta = json.dumps({"task_id": task, "source": relative}, ensure_ascii=False, sort_keys=True)
            examples.append(Example(prompt, response, meta, record.location))
    return examples


def _seed_test_file(input_dir: Path, task: str) -> list[str]:
    """Seed 003's few_shot_eval/<task>_test.* beside the task's files, when a task lists no test_files."""
    for suffix in RECORD_SUFFIXES:
        relative = f"{FEW_SHOT_EVAL}/{task}_test{suffix}"
        if (input_dir / relative).is_file():
            return [relative]
    return []


def assemble_tasks(input_dir: Path, output_dir: Path, params: FomamlParams) -> PrepareReport:
    """The prepared layout from `params.tasks`' own files: no grouping, formatting or split (seed 003 meta.tasks).

    Each task's files are concatenated in order into meta_train/<task>_{support,query}.parquet and
    few_shot_eval/<task>_test.parquet (columns prompt_key, response_key, metadata); k-shot files and the mixed
    baseline are drawn as `prepare` draws them. Caps apply when training reads the files (`load_tasks`).
    """
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: `tasks` name files relative to an input directory; this is not one")
    columns = (params.prompt_key, params.response_key)
    report = PrepareReport()
    mixed: list[Example] = []
    sources: dict[str, dict[str, list[str]]] = {}
    for index, task in enumerate(params.tasks):
        where = f"params.tasks[{index}]"
        test_files = task.test_files or _seed_test_file(input_dir, task.name)
        parts = {
            "support": _task_examples(input_dir, task.support_files, f"{where}.support_files", task.name, params),
            "query": _task_examples(input_dir, task.query_files, f"{where}.query_files", task.name, params),
            "test": _task_examples(input_dir, test_files, f"{where}.test_files", task.name, params),
        }
        write_examples(output_dir / META_TRAIN / f"{task.name}_support.parquet", parts["support"], columns)
        write_examples(output_dir / META_TRAIN / f"{task.name}_query.parquet", parts["query"], columns)
        if test_files:
            write_examples(output_dir / FEW_SHOT_EVAL / f"{task.name}_test.parquet", parts["test"], columns)
        counts = {name: len(rows) for name, rows in parts.items()}
        _write_shots(output_dir, task.name, parts["support"], params, counts, columns)
        report.tasks[task.name] = counts
        report.records += sum(len(rows) for rows in parts.values())
        sources[task.name] = {"support": task.support_files, "query": task.query_files, "test": test_files}
        report.input_files += [str(input_dir / f) for f in (*task.support_files, *task.query_files, *test_files)]
        mixed.extend(parts["support"] + parts["query"])
    if params.mixed_baseline:
        random.Random(f"{params.seed}:mixed").shuffle(mixed)
        write_examples(output_dir / BASELINE_SFT / "mixed_train.parquet", mixed, columns)
    atomic_write_json(
        output_dir / "prepare_report.json",
        {
            "input_files": report.input_files,
            "records": report.records,
            "tasks": report.tasks,
            "task_files": sources,
            "caps": {
                task.name: dict(zip(("support", "query"), params.task_caps(task.name), strict=True))
                for task in params.tasks
            },
        },
    )
    return report


def prepare(input_dir: Path, output_dir: Path, params: FomamlParams, dataset: str | None = None) -> PrepareReport:
    """Prepare the seed-003 layout from raw records (or from `params.tasks`' own files); the same input and
    seed give the same bytes."""
    if params.tasks:
        return assemble_tasks(input_dir, output_dir, params)
    files = find_input_files(input_dir, dataset)
    report = PrepareReport(input_files=[str(path) for path in files])
    by_task: dict[str, list[RawRecord]] = defaultdict(list)
    original_names: dict[str, str] = {}
    for path in files:
        for record in read_records(path):
            report.records += 1
            raw_task = record.get(params.task_key)
            if raw_task is None or (isinstance(raw_task, str) and not raw_task.strip()):
                raise DataError(
                    f"{record.source}: record has no task field {params.task_key!r}; "
                    "set task_key to the field that names the task (dotted for nested fields)"
                )
            task = safe_task_name(str(raw_task))
            previous = original_names.setdefault(task, str(raw_task))
            if previous != str(raw_task):
                raise DataError(
                    f"{record.source}: tasks {previous!r} and {raw_task!r} map to the same file name "
                    f"{task!r}; rename one of them"
                )
            by_task[task].append(record)
    if not by_task:
        raise DataError(f"{input_dir}: the input files hold no records")

    mixed: list[Example] = []
    for task in sorted(by_task):
        rng = random.Random(f"{params.seed}:{task}")
        records = by_task[task]
        if params.deduplicate:
            seen: set[str] = set()
            unique: list[RawRecord] = []
            for record in records:
                example = format_example(record, original_names[task], params)
                digest = example.content_hash()
                if digest not in seen:
                    seen.add(digest)
                    unique.append(record)
            report.duplicates_dropped[task] = len(records) - len(unique)
            records = unique
        support, query, test = split_task(records, params, rng)
        formatted = {
            name: [format_example(r, original_names[task], params) for r in part]
            for name, part in (("support", support), ("query", query), ("test", test))
        }
        write_examples(output_dir / META_TRAIN / f"{task}_support.parquet", formatted["support"])
        write_examples(output_dir / META_TRAIN / f"{task}_query.parquet", formatted["query"])
        write_examples(output_dir / FEW_SHOT_EVAL / f"{task}_test.parquet", formatted["test"])
        counts = {name: len(rows) for name, rows in formatted.items()}
        _write_shots(output_dir, task, formatted["support"], params, counts)
        report.tasks[task] = counts
        mixed.extend(formatted["support"] + formatted["query"])
    if params.mixed_baseline:
        random.Random(f"{params.seed}:mixed").shuffle(mixed)
        write_examples(output_dir / BASELINE_SFT / "mixed_train.parquet", mixed)
    atomic_write_json(
        output_dir / "prepare_report.json",
        {
            "input_files": report.input_files,
            "records": report.records,
            "tasks": report.tasks,
            "duplicates_dropped": report.duplicates_dropped,
            "task_names": {task: original_names[task] for task in sorted(by_task)},
        },
    )
    return report


# ---------------------------------------------------------------- reading prepared data


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    return [record.data for record in _iter_records(path)]


@dataclass
class TaskData:
    name: str
    support: list[tuple[str, str]]
    query: list[tuple[str, str]]
    test: list[tuple[str, str]] = field(default_factory=list)
    shots: dict[int, list[tuple[str, str]]] = field(default_factory=dict)


def list_tasks(data_dir: Path) -> list[str]:
    meta_train = data_dir / META_TRAIN
    if not meta_train.is_dir():
        raise DataError(f"{data_dir}: no {META_TRAIN}/ folder; run `datasweep worker fomaml prepare` first")
    tasks = sorted(p.name[: -len("_support.parquet")] for p in meta_train.glob("*_support.parquet"))
    if not tasks:
        raise DataError(f"{meta_train}: no <task>_support.parquet files")
    return tasks


def _pairs(path: Path, params: FomamlParams, limit: int | None = None) -> list[tuple[str, str]]:
    rows = read_parquet_rows(path)
    pairs: list[tuple[str, str]] = []
    for index, row in enumerate(rows[:limit] if limit is not None else rows):
        prompt, response = row.get(params.prompt_key), row.get(params.response_key)
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise DataError(
                f"{path}:row {index}: {params.prompt_key!r} and {params.response_key!r} must be strings "
                f"(got {type(prompt).__name__}, {type(response).__name__}); "
                "run `datasweep worker fomaml validate`"
            )
        pairs.append((prompt, response))
    return pairs


def load_tasks(data_dir: Path, params: FomamlParams, with_test: bool = True) -> list[TaskData]:
    """Every task of a prepared directory (only those of `params.tasks` when given), capped by each task's
    support_max_samples/query_max_samples, else the global ones."""
    tasks: list[TaskData] = []
    listed = [task.name for task in params.tasks]
    names = list_tasks(data_dir)
    missing = [name for name in listed if name not in names]
    if missing:
        raise DataError(f"{data_dir / META_TRAIN}: no support file of task(s) {missing} named in params.tasks")
    for name in listed or names:
        support_cap, query_cap = params.task_caps(name)
        task = TaskData(
            name=name,
            support=_pairs(data_dir / META_TRAIN / f"{name}_support.parquet", params, support_cap),
            query=_pairs(data_dir / META_TRAIN / f"{name}_query.parquet", params, query_cap),
        )
        test_path = data_dir / FEW_SHOT_EVAL / f"{name}_test.parquet"
        if with_test and test_path.exists():
            task.test = _pairs(test_path, params, params.eval_max_samples)
        for k in params.k_shots:
            shot_path = data_dir / FEW_SHOT_EVAL / f"{name}_{k}shot.parquet"
            if with_test and shot_path.exists():
                task.shots[k] = _pairs(shot_path, params)
        if not task.support or not task.query:
            raise DataError(f"{data_dir / META_TRAIN}: task {name!r} has an empty support or query set")
        tasks.append(task)
    return tasks
