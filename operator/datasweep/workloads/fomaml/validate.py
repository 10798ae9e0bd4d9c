"""Validation of a prepared directory (seed 003's validate_data.py, and more).

Errors (training would be wrong or fail): unreadable files, missing columns, nulls, non-string values,
invalid metadata JSON, support/query/test leakage by content hash, sets below the minimum sizes,
a task without its query file. Warnings: query smaller than support, sets below seed 003's
recommendations, empty strings, duplicates within a file, very different query/support ratios.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasweep.api.stages.fomaml import FomamlParams
from datasweep.workloads.fomaml.data import FEW_SHOT_EVAL, META_TRAIN, content_hash

# Seed 003: "Support < 100 may not be enough", "Query < 150 makes the meta-gradient unstable".
RECOMMENDED_SUPPORT = 100
RECOMMENDED_QUERY = 150


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "tasks": self.tasks,
            "files": self.files,
        }

    def render(self) -> str:
        lines = [f"Validated {len(self.tasks)} task(s), {len(self.files)} file(s)"]
        for task, counts in sorted(self.tasks.items()):
            support, query = counts.get("support", 0), counts.get("query", 0)
            ratio = f"{query / support:.2f}" if support else "n/a"
            lines.append(
                f"  {task}: support={support} query={query} test={counts.get('test', 0)} (query/support={ratio})"
            )
        for name, stats in sorted(self.files.items()):
            if "prompt_chars" in stats:
                p, r = stats["prompt_chars"], stats["response_chars"]
                lines.append(
                    f"  {name}: {stats['rows']} rows; prompt chars min/mean/max "
                    f"{p['min']}/{p['mean']}/{p['max']}; response chars {r['min']}/{r['mean']}/{r['max']}"
                )
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        lines.extend(f"ERROR: {e}" for e in self.errors)
        lines.append("All checks passed." if self.ok else f"FAILED: {len(self.errors)} error(s).")
        return "\n".join(lines)


def _length_stats(values: list[str]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0}
    lengths = [len(v) for v in values]
    return {"min": min(lengths), "max": max(lengths), "mean": round(statistics.fmean(lengths), 1)}


def _check_file(path: Path, params: FomamlParams, report: ValidationReport) -> list[tuple[str, str]] | None:
    """Check one parquet file; return its (prompt, response) pairs when they are usable."""
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    name = str(path.relative_to(path.parent.parent))
    try:
        table = pq.read_table(path)
    except Exception as exc:
        report.errors.append(f"{name}: cannot read parquet: {exc}")
        return None
    stats: dict[str, Any] = {"rows": table.num_rows}
    report.files[name] = stats
    usable = True
    for column in (params.prompt_key, params.response_key):
        if column not in table.column_names:
            report.errors.append(
                f"{name}: missing required column {column!r} (columns: {', '.join(table.column_names)}); "
                "prepare the data with prompt/response columns or set prompt_key/response_key"
            )
            usable = False
            continue
        col = table.column(column)
        if not (pat.is_string(col.type) or pat.is_large_string(col.type)):
            report.errors.append(f"{name}: column {column!r} has type {col.type}, expected string")
            usable = False
        if col.null_count:
            rows = [i for i, v in enumerate(col.to_pylist()) if v is None][:5]
            report.errors.append(f"{name}: column {column!r} has {col.null_count} null value(s) (rows {rows}...)")
            usable = False
    if not usable:
        return None
    prompts = [str(v) for v in table.column(params.prompt_key).to_pylist()]
    responses = [str(v) for v in table.column(params.response_key).to_pylist()]
    stats["prompt_chars"] = _length_stats(prompts)
    stats["response_chars"] = _length_stats(responses)
    empty = [i for i, (p, r) in enumerate(zip(prompts, responses, strict=True)) if not p.strip() or not r.strip()]
    if empty:
        report.warnings.append(f"{name}: {len(empty)} row(s) with an empty prompt or response (rows {empty[:5]})")
    if "metadata" in table.column_names:
        bad_rows = []
        for index, meta in enumerate(table.column("metadata").to_pylist()):
            if meta is None:
                continue
            try:
                json.loads(meta)
            except (TypeError, json.JSONDecodeError):
                bad_rows.append(index)
        if bad_rows:
            report.errors.append(
                f"{name}: metadata is not a JSON string in {len(bad_rows)} row(s) (rows {bad_rows[:5]})"
            )
    digests = [content_hash(p, r) for p, r in zip(prompts, responses, strict=True)]
    duplicates = len(digests) - len(set(digests))
    if duplicates:
        report.warnings.append(f"{name}: {duplicates} duplicate row(s) (same prompt and response)")
    return list(zip(prompts, responses, strict=True))


def validate_prepared(data_dir: Path, params: FomamlParams) -> ValidationReport:
    report = ValidationReport()
    meta_train = data_dir / META_TRAIN
    if not meta_train.is_dir():
        report.errors.append(f"{data_dir}: no {META_TRAIN}/ folder; run `datasweep worker fomaml prepare` first")
        return report
    support_files = sorted(meta_train.glob("*_support.parquet"))
    query_files = sorted(meta_train.glob("*_query.parquet"))
    tasks = sorted({p.name[: -len("_support.parquet")] for p in support_files})
    for orphan in sorted({p.name[: -len("_query.parquet")] for p in query_files} - set(tasks)):
        report.errors.append(f"{META_TRAIN}/{orphan}_query.parquet has no matching {orphan}_support.parquet")
    if not tasks:
        report.errors.append(f"{meta_train}: no <task>_support.parquet files")
        return report

    train_hashes: dict[str, str] = {}  # content hash -> "task/split" of its first training occurrence
    test_pairs: dict[str, list[tuple[str, str]]] = {}
    ratios: dict[str, float] = {}
    for task in tasks:
        counts: dict[str, int] = {}
        split_pairs: dict[str, list[tuple[str, str]] | None] = {}
        for split in ("support", "query"):
            path = meta_train / f"{task}_{split}.parquet"
            if not path.exists():
                report.errors.append(f"{META_TRAIN}/{task}_{split}.parquet: missing (every task needs both)")
                split_pairs[split] = None
                continue
            split_pairs[split] = _check_file(path, params, report)
            counts[split] = int(report.files.get(f"{META_TRAIN}/{path.name}", {}).get("rows", 0))
        test_path = data_dir / FEW_SHOT_EVAL / f"{task}_test.parquet"
        if test_path.exists():
            pairs = _check_file(test_path, params, report)
            counts["test"] = int(report.files.get(f"{FEW_SHOT_EVAL}/{test_path.name}", {}).get("rows", 0))
            if pairs is not None:
                test_pairs[task] = pairs
        elif params.min_test_samples > 0:
            report.errors.append(f"{FEW_SHOT_EVAL}/{task}_test.parquet: missing (needed for few-shot evaluation)")
        report.tasks[task] = counts

        support, query = counts.get("support", 0), counts.get("query", 0)
        for split, minimum, recommended in (
            ("support", params.min_support_samples, RECOMMENDED_SUPPORT),
            ("query", params.min_query_samples, RECOMMENDED_QUERY),
            ("test", params.min_test_samples, 0),
        ):
            have = counts.get(split)
            if have is None:
                continue
            if have < minimum:
                report.errors.append(
                    f"task {task!r}: {split} has {have} row(s), fewer than min_{split}_samples={minimum}"
                )
            elif have < recommended:
                report.warnings.append(
                    f"task {task!r}: {split} has {have} row(s); at least {recommended} are recommended"
                )
        if support and query < support:
            report.warnings.append(
                f"task {task!r}: query set ({query}) is smaller than support set ({support}); "
                "recommended query >= support (lower support_ratio or raise query_ratio)"
            )
        if support:
            ratios[task] = query / support

        # Leakage within the task: an example in two of support/query/test.
        hashes_by_split: dict[str, set[str]] = {}
        for split in ("support", "query"):
            pairs_or_none = split_pairs.get(split)
            if pairs_or_none is not None:
                hashes_by_split[split] = {content_hash(p, r) for p, r in pairs_or_none}
        if task in test_pairs:
            hashes_by_split["test"] = {content_hash(p, r) for p, r in test_pairs[task]}
        names = sorted(hashes_by_split)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                shared = hashes_by_split[first] & hashes_by_split[second]
                if shared:
                    report.errors.append(
                        f"task {task!r}: {len(shared)} example(s) appear in both {first} and {second} "
                        "(leakage); re-run prepare with deduplicate: true"
                    )
        for split in ("support", "query"):
            for digest in hashes_by_split.get(split, set()):
                train_hashes.setdefault(digest, f"{task}/{split}")

    # Leakage across tasks: a test example that some other task trains on.
    leaked: dict[str, int] = defaultdict(int)
    for task, pairs in test_pairs.items():
        for prompt, response in pairs:
            owner = train_hashes.get(content_hash(prompt, response))
            if owner is not None and not owner.startswith(f"{task}/"):
                leaked[f"{task} test <- {owner}"] += 1
    for where, count in sorted(leaked.items()):
        report.errors.append(f"leakage across tasks: {count} example(s) of {where}")

    if len(ratios) > 1 and min(ratios.values()) > 0 and max(ratios.values()) / min(ratios.values()) > 2.0:
        report.warnings.append(
            "query/support ratios differ a lot between tasks "
            + ", ".join(f"{t}={r:.2f}" for t, r in sorted(ratios.items()))
        )
    return report
