"""Record files read one record at a time: jsonl (one JSON object a line), .json (a list of objects), parquet
or CSV (a header line naming the columns; every value is a string, as the seed 003 notes' `pd.read_csv` records
are once formatted).

Every record comes with its location for messages: `file:LINE` for jsonl and CSV, `file:item N` for .json and
`file:row N` for parquet (all counted from 1). A file that cannot be read raises `RecordFileError`, whose
message names the location and the fix; each workload turns it into its own bad-input error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

RECORD_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class RecordFileError(ValueError):
    """A record file, or one record in it, that cannot be read; `location` is the file or file:line."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem


class Record(NamedTuple):
    location: str  # file:LINE (jsonl), file:item N (.json), file:row N (parquet)
    data: dict[str, Any]
    number: int  # the line, item or row number, from 1


BadRecordHandler = Callable[[RecordFileError], None]


def _not_an_object(location: str, value: Any) -> RecordFileError:
    return RecordFileError(location, f"a record must be a JSON object, got {type(value).__name__}")


def _report(error: RecordFileError, on_bad_record: BadRecordHandler | None) -> None:
    if on_bad_record is None:
        raise error
    on_bad_record(error)


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except FileNotFoundError as exc:
        raise RecordFileError(str(path), "file not found") from exc
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise RecordFileError(str(path), f"cannot read parquet: {exc}") from exc
    for number, row in enumerate(rows, start=1):
        yield Record(f"{path}:row {number}", row, number)


def _iter_json_list(
    path: Path, text: str, json_list_key: str | None, on_bad_record: BadRecordHandler | None
) -> Iterator[Record]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordFileError(f"{path}:{exc.lineno}", f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    items = payload.get(json_list_key) if json_list_key and isinstance(payload, dict) else payload
    if not isinstance(items, list):
        also = f" (or {{{json_list_key!r}: [...]}})" if json_list_key else ""
        raise RecordFileError(str(path), f"a .json record file holds a list of objects{also}; or use jsonl")
    for number, item in enumerate(items, start=1):
        location = f"{path}:item {number}"
        if isinstance(item, dict):
            yield Record(location, item, number)
        else:
            _report(_not_an_object(location, item), on_bad_record)


def _iter_csv(path: Path, raw: bytes, encoding_errors: str, on_bad_record: BadRecordHandler | None) -> Iterator[Record]:
    try:
        text = raw.decode("utf-8-sig", errors=encoding_errors)  # -sig: spreadsheets save a byte-order mark
    except UnicodeDecodeError as exc:
        raise RecordFileError(str(path), f"not UTF-8 text ({exc.reason}); save the CSV as UTF-8") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RecordFileError(f"{path}:1", f"not a valid CSV header ({exc})") from exc
    if not header or not any(name.strip() for name in header):
        raise RecordFileError(str(path), "a CSV record file starts with a header line naming the columns")
    names = [name.strip() for name in header]
    blank = [index for index, name in enumerate(names, start=1) if not name]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if blank or repeated:
        problem = f"column {blank[0]} has no name" if blank else f"column name(s) {repeated} appear twice"
        raise RecordFileError(f"{path}:1", f"{problem}; give every column of the header a distinct name")
    number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            _report(RecordFileError(f"{path}:{number + 1}", f"not valid CSV ({exc})"), on_bad_record)
            number = reader.line_num
            continue
        start, number = number + 1, reader.line_num  # a quoted value may span lines: the record starts at `start`
        if not row or not any(cell.strip() for cell in row):
            continue
        location = f"{path}:{start}"
        if len(row) != len(names):
            problem = f"{len(row)} value(s) but the header has {len(names)} column(s); quote values that hold commas"
            _report(RecordFileError(location, problem), on_bad_record)
            continue
        yield Record(location, dict(zip(names, row, strict=True)), start)


def _iter_jsonl(
    path: Path, handle: BinaryIO, encoding_errors: str, on_bad_record: BadRecordHandler | None
) -> Iterator[Record]:
    for number, raw_line in enumerate(handle, start=1):
        location = f"{path}:{number}"
        try:
            line = raw_line.decode("utf-8", errors=encoding_errors)
        except UnicodeDecodeError as exc:
            _report(RecordFileError(location, f"not UTF-8 text ({exc.reason}); save the file as UTF-8"), on_bad_record)
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno}); each line holds one JSON object"
            _report(RecordFileError(location, problem), on_bad_record)
            continue
        if isinstance(value, dict):
            yield Record(location, value, number)
        else:
            _report(_not_an_object(location, value), on_bad_record)


def iter_records(
    path: str | Path,
    *,
    on_bad_record: BadRecordHandler | None = None,
    json_list_key: str | None = None,
    content: bytes | None = None,
    encoding_errors: str = "strict",
) -> Iterator[Record]:
    """Every record of a `.parquet`, `.json` (list of objects), `.csv` or jsonl file (any other suffix), in order.

    Blank lines are skipped. A bad record (a line that is not JSON, or not an object) raises
    `RecordFileError` naming its location, or, with `on_bad_record`, is handed to it and skipped so that a
    caller can list every problem at once; a file that cannot be read at all always raises.
    `json_list_key` also accepts a .json file shaped `{key: [...]}`; `content` is the file's bytes when the
    caller has read them already (e.g. to hash them); `encoding_errors` is as for `bytes.decode`.
    """
    source = Path(path)
    try:
        if source.suffix == ".parquet":
            yield from _iter_parquet(source)
        elif source.suffix == ".json":
            raw = content if content is not None else source.read_bytes()
            try:
                text = raw.decode("utf-8", errors=encoding_errors)
            except UnicodeDecodeError as exc:
                raise RecordFileError(str(source), f"not UTF-8 text ({exc.reason}); save the file as UTF-8") from exc
            yield from _iter_json_list(source, text, json_list_key, on_bad_record)
        elif source.suffix == ".csv":
            raw = content if content is not None else source.read_bytes()
            yield from _iter_csv(source, raw, encoding_errors, on_bad_record)
        elif content is not None:
            yield from _iter_jsonl(source, io.BytesIO(content), encoding_errors, on_bad_record)
        else:
            with source.open("rb") as handle:  # streamed: a jsonl file may be large
                yield from _iter_jsonl(source, handle, encoding_errors, on_bad_record)
    except FileNotFoundError as exc:
        raise RecordFileError(str(source), "file not found") from exc
    except IsADirectoryError as exc:
        raise RecordFileError(str(source), "is a directory, not a record file") from exc
