"""Safe and unsafe prompts into mixed batches of a fixed size and ratio, and the sampler that replays them.

Input: a generate artifact directory (`<Dataset>/<dataset>_{split}.jsonl`), a directory of jsonl/json/parquet
files, or one such file. Output: `batches.jsonl`, one row per prompt tagged `batch_idx`, `in_batch_idx`,
`label`, in batch order; training reads it back and replays exactly these batches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.store.atomic import atomic_open
from datasweep.store.inputs import InputError, read_input
from datasweep.store.records import RECORD_SUFFIXES, RecordFileError, iter_records
from datasweep.workloads.moe_steer.errors import MoeSteerInputError

Label = Literal["safe", "unsafe"]
LABEL_IDS: dict[str, int] = {"safe": 0, "unsafe": 1}
BATCHES_FILE = "batches.jsonl"
DATA_SUFFIXES = RECORD_SUFFIXES


@dataclass(frozen=True)
class Prompt:
    text: str
    label: Label
    source: str  # file:line (or file:item N / file:row N) it came from
    response: str | None = None
    pair: int | None = None  # paired input: the record it came from (goal and jailbreak share it)
    messages: list[dict[str, str]] | None = None  # a multi-turn prompt; `text` is its readable form


@dataclass(frozen=True)
class BatchRecord:
    batch_idx: int
    in_batch_idx: int
    label: Label
    prompt: str
    source: str
    response: str | None = None
    pair: int | None = None
    messages: list[dict[str, str]] | None = None


@dataclass
class LoadReport:
    files: list[str]
    records: int = 0
    skipped_empty: int = 0
    duplicates_dropped: int = 0


def _read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) for every record of a jsonl/json/parquet file; a bad line names file:line."""
    try:
        for record in iter_records(path, json_list_key="data"):
            yield record.location, record.data
    except RecordFileError as exc:
        raise MoeSteerInputError(str(exc)) from exc


def find_data_files(location: str | Path, split: str, dataset: str | None = None) -> list[Path]:
    """The record files of an input for `split`: an upstream artifact's accepted files of that split (through
    its manifest), a raw directory's `*_{split}.jsonl` (else its files that name no split), or one file."""
    try:
        data = read_input(location, dataset)
    except InputError as exc:
        raise MoeSteerInputError(str(exc)) from exc
    if Path(location).is_file():
        return data.files()
    files = data.files(split) or list(data.unsplit)
    if not files:
        raise MoeSteerInputError(
            f"{data.describe()}: no {split} split (params.split); choose one of {sorted(data.splits)}"
        )
    return files


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_messages(value: Any, where: str) -> list[dict[str, str]] | None:
    """A multi-turn prompt: a list of {role, content} messages (chat format). None for a plain value."""
    if not isinstance(value, list):
        return None
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or "role" not in message:
            raise MoeSteerInputError(
                f"{where}: message {index} is not {{role, content}}; a prompt is a string or a list of chat messages"
            )
        messages.append({"role": str(message["role"]), "content": message["content"]})
    return messages


def messages_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content'].strip()}" for m in messages if m["content"].strip())


def load_prompts(
    params: MoeSteerParams,
    data: str | Path | None = None,
    safe: str | Path | None = None,
    unsafe: str | Path | None = None,
    dataset: str | None = None,
) -> tuple[list[Prompt], LoadReport]:
    """Read safe and unsafe prompts from `data` (paired or labeled records) and/or separate inputs."""
    if data is None and safe is None and unsafe is None:
        raise MoeSteerInputError("no input data: give the data input (or both safe and unsafe inputs)")
    if (safe is None) != (unsafe is None) and data is None:
        raise MoeSteerInputError("separate inputs need both a safe and an unsafe file/directory")
    prompts: list[Prompt] = []
    report = LoadReport(files=[])
    response_field = params.response_field

    def add(text: Any, label: Label, source: str, record: dict[str, Any], pair: int | None = None) -> None:
        messages = parse_messages(text, source)
        cleaned = messages_text(messages) if messages is not None else _text(text)
        if not cleaned:
            report.skipped_empty += 1
            return
        response = _text(record.get(response_field)) or None if response_field else None
        prompts.append(
            Prompt(text=cleaned, label=label, source=source, response=response, pair=pair, messages=messages)
        )

    if data is not None:
        safe_values = {v.strip().lower() for v in params.safe_labels}
        unsafe_values = {v.strip().lower() for v in params.unsafe_labels}
        for path in find_data_files(data, params.split, dataset):
            report.files.append(str(path))
            for where, record in _read_records(path):
                report.records += 1
                if params.input_format == "paired":
                    if params.safe_field not in record and params.unsafe_field not in record:
                        raise MoeSteerInputError(
                            f"{where}: record has neither {params.safe_field!r} nor {params.unsafe_field!r} "
                            f"(fields: {sorted(record)}); set safe_field/unsafe_field, "
                            "or input_format: labeled"
                        )
                    add(record.get(params.safe_field), "safe", where, record, report.records)
                    add(record.get(params.unsafe_field), "unsafe", where, record, report.records)
                else:
                    if params.prompt_field not in record or params.label_field not in record:
                        raise MoeSteerInputError(
                            f"{where}: labeled records need {params.prompt_field!r} "
                            f"and {params.label_field!r} "
                            f"(fields: {sorted(record)}); set prompt_field/label_field"
                        )
                    value = _text(record[params.label_field]).lower()
                    if value in safe_values:
                        add(record[params.prompt_field], "safe", where, record)
                    elif value in unsafe_values:
                        add(record[params.prompt_field], "unsafe", where, record)
                    else:
                        raise MoeSteerInputError(
                            f"{where}: label {record[params.label_field]!r} is in neither safe_labels "
                            f"{params.safe_labels} nor unsafe_labels {params.unsafe_labels}; "
                            "add it to one of them"
                        )
    for location, label in ((safe, "safe"), (unsafe, "unsafe")):
        if location is None:
            continue
        for path in find_data_files(location, params.split, dataset):
            report.files.append(str(path))
            for where, record in _read_records(path):
                report.records += 1
                if params.prompt_field not in record:
                    raise MoeSteerInputError(
                        f"{where}: record has no {params.prompt_field!r} (fields: {sorted(record)}); set prompt_field"
                    )
                add(record[params.prompt_field], label, where, record)  # type: ignore[arg-type]

    if params.deduplicate and paired_batches(params) and data is not None:
        prompts = _dedupe_pairs(prompts, report)
    elif params.deduplicate:
        seen: set[tuple[str, str]] = set()
        unique: list[Prompt] = []
        for prompt in prompts:
            key = (prompt.label, prompt.text)
            if key in seen:
                report.duplicates_dropped += 1
                continue
            seen.add(key)
            unique.append(prompt)
        prompts = unique
    return prompts, report


def paired_batches(params: MoeSteerParams) -> bool:
    """Batches are made of whole goal/jailbreak pairs: pair_batches and as many safe as unsafe per batch."""
    return params.input_format == "paired" and params.pair_batches and params.safe_per_batch == params.unsafe_per_batch


def complete_pairs(prompts: Sequence[Prompt]) -> dict[int, tuple[Prompt, Prompt]]:
    """pair id -> (safe, unsafe) for records that gave both prompts, in input order."""
    sides: dict[int, dict[str, Prompt]] = {}
    for prompt in prompts:
        if prompt.pair is not None:
            sides.setdefault(prompt.pair, {})[prompt.label] = prompt
    return {pair: (both["safe"], both["unsafe"]) for pair, both in sides.items() if len(both) == 2}


def _dedupe_pairs(prompts: list[Prompt], report: LoadReport) -> list[Prompt]:
    seen: set[tuple[str, str]] = set()
    dropped: set[int] = set()
    for pair, (safe, unsafe) in complete_pairs(prompts).items():
        if (safe.text, unsafe.text) in seen:
            dropped.add(pair)
        seen.add((safe.text, unsafe.text))
    report.duplicates_dropped += 2 * len(dropped)
    return [prompt for prompt in prompts if prompt.pair not in dropped]


def build_batches(prompts: Sequence[Prompt], params: MoeSteerParams) -> list[list[BatchRecord]]:
    """Shuffle each label's prompts (seeded) and deal them into batches of safe_per_batch + unsafe_per_batch.

    Within a batch the safe prompts come first, then the unsafe ones (as in seed 004). Leftovers that cannot
    fill a whole batch are dropped (their number is in the metadata).
    """
    safe = [p for p in prompts if p.label == "safe"]
    unsafe = [p for p in prompts if p.label == "unsafe"]
    n_safe, n_unsafe = params.safe_per_batch, params.unsafe_per_batch
    if not safe or not unsafe:
        missing = "safe" if not safe else "unsafe"
        raise MoeSteerInputError(
            f"no {missing} prompts in the input ({len(safe)} safe, {len(unsafe)} unsafe); "
            "check the field names "
            "(safe_field/unsafe_field, or prompt_field/label_field with safe_labels/unsafe_labels)"
        )
    rng = random.Random(params.seed)
    pairs = complete_pairs(prompts) if paired_batches(params) else {}
    if pairs:
        # seed 004: a goal and its jailbreak in the same batch, in the same positions of the two halves
        order = list(pairs)
        rng.shuffle(order)
        safe = [pairs[pair][0] for pair in order]
        unsafe = [pairs[pair][1] for pair in order]
    else:
        rng.shuffle(safe)
        rng.shuffle(unsafe)
    count = min(len(safe) // n_safe, len(unsafe) // n_unsafe)
    if params.max_batches is not None:
        count = min(count, params.max_batches)
    if count == 0:
        raise MoeSteerInputError(
            f"not enough prompts for one batch of {n_safe} safe + {n_unsafe} unsafe "
            f"(have {len(safe)} safe, {len(unsafe)} unsafe); lower batch_size or add data"
        )
    batches: list[list[BatchRecord]] = []
    for batch_idx in range(count):
        members = (
            safe[batch_idx * n_safe : (batch_idx + 1) * n_safe]
            + unsafe[batch_idx * n_unsafe : (batch_idx + 1) * n_unsafe]
        )
        batches.append(
            [
                BatchRecord(
                    batch_idx=batch_idx,
                    in_batch_idx=position,
                    label=prompt.label,
                    prompt=prompt.text,
                    source=prompt.source,
                    response=prompt.response,
                    pair=prompt.pair,
                    messages=prompt.messages,
                )
                for position, prompt in enumerate(members)
            ]
        )
    return batches


def write_batches(batches: Sequence[Sequence[BatchRecord]], path: str | Path) -> None:
    with atomic_open(path) as handle:
        for batch in batches:
            for record in batch:
                handle.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")


def read_batches(path: str | Path) -> list[list[BatchRecord]]:
    """Read `batches.jsonl` back, checking that batches are whole, contiguous and in order."""
    source = Path(path)
    if not source.is_file():
        raise MoeSteerInputError(f"{source}: batches file not found; run `datasweep worker moe-steer analyze` first")
    grouped: dict[int, list[BatchRecord]] = {}
    for where, row in _read_records(source):
        try:
            record = BatchRecord(
                batch_idx=int(row["batch_idx"]),
                in_batch_idx=int(row["in_batch_idx"]),
                label=row["label"],
                prompt=str(row["prompt"]),
                source=str(row.get("source", "")),
                response=row.get("response"),
                pair=row.get("pair"),
                messages=row.get("messages"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MoeSteerInputError(
                f"{where}: not a batch record (needs batch_idx, in_batch_idx, label, prompt)"
            ) from exc
        if record.label not in LABEL_IDS:
            raise MoeSteerInputError(f"{where}: label {record.label!r} is not 'safe' or 'unsafe'")
        grouped.setdefault(record.batch_idx, []).append(record)
    if sorted(grouped) != list(range(len(grouped))):
        raise MoeSteerInputError(f"{source}: batch_idx values are not 0..{len(grouped) - 1}")
    batches = []
    for batch_idx in range(len(grouped)):
        members = sorted(grouped[batch_idx], key=lambda r: r.in_batch_idx)
        if [r.in_batch_idx for r in members] != list(range(len(members))):
            raise MoeSteerInputError(f"{source}: batch {batch_idx} has in_batch_idx gaps or repeats")
        batches.append(members)
    return batches


class BatchPreservingSampler:
    """Yields, for each analysis batch, the dataset row indices of exactly its members in in_batch_idx order.

    Use it as a DataLoader `batch_sampler` over rows tagged with batch_idx / in_batch_idx: every training
    batch is one analysis batch (same members, same safe/unsafe ratio). With `shuffle` the order of the
    batches changes from epoch to epoch (seeded), never their members.
    """

    def __init__(
        self, batch_idx: Sequence[int], in_batch_idx: Sequence[int], shuffle: bool = False, seed: int = 0
    ) -> None:
        if len(batch_idx) != len(in_batch_idx):
            raise ValueError("batch_idx and in_batch_idx must have one entry per row")
        groups: dict[int, list[tuple[int, int]]] = {}
        for row, (batch, position) in enumerate(zip(batch_idx, in_batch_idx, strict=True)):
            groups.setdefault(int(batch), []).append((int(position), row))
        self._batches = [[row for _, row in sorted(groups[b])] for b in sorted(groups)]
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self._batches)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for index in order:
            yield list(self._batches[index])
