"""Reading a dataset's source splits, with errors that name file:line and the fix."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasweep.api.stages.generate import GenerateParams
from datasweep.core.templates import GenerateInputError as GenerateInputError  # prompt templates raise it too
from datasweep.store.records import iter_records

SPLITS: tuple[str, ...] = ("train", "validation", "test")
MAX_REPORTED_PROBLEMS = 20


class GenerateFailed(RuntimeError):
    """The work could not be completed (requests failed after retries): exit code 1, progress kept."""


@dataclass
class SourceRecord:
    line: int
    record_id: str
    data: dict[str, Any]
    path: Path | None = None  # set when a split is read from several files


@dataclass
class SplitData:
    split: str
    path: Path
    sha256: str
    records: list[SourceRecord] = field(default_factory=list)
    id_field: str | None = None

    def where(self, record: SourceRecord) -> str:
        return f"{record.path or self.path}:{record.line}"


def split_path(source_dir: Path, dataset: str, split: str) -> Path:
    return source_dir / f"{dataset.lower()}_{split}.jsonl"


def resolve_api_key(params: GenerateParams) -> str:
    """The credential the backend sends (checked by `plan` and `run` too, before anything is claimed)."""
    if params.backend == "transformers":
        return ""
    key = os.environ.get(params.api_key_env, "").strip()
    if key:
        return key
    if params.backend == "openai-compatible":
        return "not-needed"  # self-hosted servers (vLLM, llama.cpp) usually ignore the key
    raise GenerateInputError(
        f"the API key is missing: environment variable {params.api_key_env} is not set "
        "(the Job sets it from the Secret in spec.generation.apiKeySecret; "
        f"locally: export {params.api_key_env}=...)"
    )


def _raise_problems(problems: list[str], hint: str) -> None:
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise GenerateInputError("\n  ".join(["bad dataset input:", *shown]) + more + f"\n{hint}")


def _choose_id_field(rows: list[dict[str, Any]], id_field: str | None) -> str | None:
    if id_field is not None:
        return id_field
    for candidate in ("id", "idx"):
        if rows and all(candidate in row for row in rows):
            return candidate
    return None  # fall back to line numbers


def files_found(directory: Path, limit: int = 10) -> str:
    """The files directly in `directory`, for a message about a split that is not there."""
    names = sorted(path.name for path in directory.iterdir() if path.is_file() and not path.name.startswith("."))
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (", ".join(names[:limit]) + more) if names else "no files"


def any_jsonl_files(source_dir: Path) -> list[Path]:
    """Every `*.jsonl` file directly in `source_dir`, by name (seed 001 reads every file of the directory)."""
    return sorted(path for path in source_dir.glob("*.jsonl") if path.is_file())


def read_splits(
    source_dir: Path, dataset: str, id_field: str | None = None, any_jsonl: bool = False
) -> dict[str, SplitData]:
    """Every split present in `source_dir` (at least one must be), fully parsed and checked.

    With `any_jsonl` (code-scenarios) a directory without `<dataset>_<split>.jsonl` files is read as one
    `train` split made of every `*.jsonl` in it, as seed 001 reads its reviewed slices.
    """
    if not source_dir.is_dir():
        raise GenerateInputError(f"sourceDir {source_dir} is not a directory: point it at the dataset's jsonl files")
    found = {split: split_path(source_dir, dataset, split) for split in SPLITS}
    found = {split: path for split, path in found.items() if path.is_file()}
    if not found and any_jsonl and any_jsonl_files(source_dir):
        return {"train": _read_merged(source_dir, any_jsonl_files(source_dir), id_field)}
    if not found:
        expected = ", ".join(split_path(source_dir, dataset, split).name for split in SPLITS)
        also = " (or, for code-scenarios, any *.jsonl files)" if any_jsonl else ""
        raise GenerateInputError(
            f"{source_dir}: no split of dataset {dataset!r} found; expected one of {expected}{also}; "
            f"found: {files_found(source_dir)}"
        )
    problems: list[str] = []
    splits: dict[str, SplitData] = {}
    for split, path in found.items():
        raw = path.read_bytes()
        rows = [
            (record.number, record.data)
            for record in iter_records(
                path, content=raw, encoding_errors="replace", on_bad_record=lambda error: problems.append(str(error))
            )
        ]
        if not rows and not any(p.startswith(f"{path}:") for p in problems):
            problems.append(f"{path}: the split is empty (no records); fill it or remove the file")
            continue
        data = SplitData(split=split, path=path, sha256=hashlib.sha256(raw).hexdigest())
        _add_records(data, [(path, number, row) for number, row in rows], id_field, problems, merged=False)
        splits[split] = data
    _raise_problems(problems, "Fix the lines above (each line is one JSON object); nothing was generated.")
    return splits


def _add_records(
    data: SplitData,
    rows: list[tuple[Path, int, dict[str, Any]]],
    id_field: str | None,
    problems: list[str],
    *,
    merged: bool,
) -> None:
    """Give every row its id (the id field when every record has it, else its line) and refuse duplicates.

    A split read from several files (`merged`) names lines `<file stem>:<line>` and keeps each record's file.
    """
    data.id_field = _choose_id_field([row for _, _, row in rows], id_field)
    seen: dict[str, str] = {}
    for path, number, row in rows:
        where = f"{path}:{number}"
        if data.id_field is None:
            record_id = f"{path.stem}:{number}" if merged else str(number)
        elif data.id_field not in row:
            problems.append(f"{where}: missing id field {data.id_field!r} (params.id_field)")
            continue
        else:
            record_id = str(row[data.id_field])
        if record_id in seen:
            problems.append(f"{where}: duplicate id {record_id!r} (first at {seen[record_id]})")
            continue
        seen[record_id] = where if merged else f"line {number}"
        data.records.append(SourceRecord(line=number, record_id=record_id, data=row, path=path if merged else None))


def _read_merged(source_dir: Path, paths: list[Path], id_field: str | None) -> SplitData:
    """One split from several files; ids are the id field when every record has it, else `<file stem>:<line>`."""
    problems: list[str] = []
    digest = hashlib.sha256()
    rows: list[tuple[Path, int, dict[str, Any]]] = []
    for path in paths:
        raw = path.read_bytes()
        # the same content hash as store.layout.dataset_files: file name and bytes of every file
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        for record in iter_records(
            path, content=raw, encoding_errors="replace", on_bad_record=lambda error: problems.append(str(error))
        ):
            rows.append((path, record.number, record.data))
    if not rows and not problems:
        problems.append(f"{source_dir}: the *.jsonl files hold no records")
    data = SplitData(split="train", path=source_dir, sha256=digest.hexdigest())
    _add_records(data, rows, id_field, problems, merged=True)
    _raise_problems(problems, "Fix the lines above (each line is one JSON object); nothing was generated.")
    return data
