"""Shape checks before anything is paid: do the dataset's records have the fields every stage needs? Pure.

The caller (the operator's planner, `datasweep plan` / `run`) reads the first records of each dataset split
and passes them in. A training stage after generation sees the source fields plus what generation adds
(rephrase: `original_<field>`; code-scenarios: `scenario`, `response`; both: `validation`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from datasweep.core.plan import Plan, StagePlan

# dataset -> split -> its first records
Samples = Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]


def template_fields(text: str) -> set[str]:
    """The top-level record fields a str.format template uses (`{question}`, `{meta.level}` -> meta)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return set()  # a malformed template is the params validation's or the worker's message
    return {
        name.split(".", 1)[0].split("[", 1)[0] for _, name, _, _ in parsed if name and not name.split(".")[0].isdigit()
    }


def _has(record: Mapping[str, Any], dotted: str) -> bool:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def generated_fields(generate: StagePlan) -> set[str]:
    """Fields the generate stage adds to every record it keeps."""
    if generate.stage != "generate":
        return set()
    if generate.params.get("task") == "code-scenarios":
        return {"scenario", "response", "validation"}
    return {f"original_{field}" for field in generate.params.get("rephrase_fields", [])} | {"validation"}


class _Check:
    def __init__(self, dataset: str, records: Sequence[Mapping[str, Any]], added: set[str]) -> None:
        self.dataset = dataset
        self.records = [{**record, **dict.fromkeys(added, "")} for record in records]
        self.found = sorted({key for record in records for key in record})
        self.added = sorted(added)
        self.problems: list[str] = []

    def _found(self) -> str:
        text = f"fields found: {', '.join(self.found) or '(none)'}"
        return text + (f"; generation adds {', '.join(self.added)}" if self.added else "")

    def need(self, where: str, field: str, what: str = "field") -> bool:
        missing = [index for index, record in enumerate(self.records, start=1) if not _has(record, field)]
        if missing:
            self.problems.append(
                f"{where}: {what} {field!r} is not in the {self.dataset} records "
                f"(missing in record {missing[0]} of the first {len(self.records)}; {self._found()})"
            )
        return not missing

    def need_any(self, where: str, fields: Sequence[str]) -> None:
        if not any(_has(record, field) for record in self.records for field in fields):
            names = " or ".join(repr(f) for f in fields)
            self.problems.append(f"{where}: no {self.dataset} record has {names} ({self._found()})")

    def template(self, where: str, text: str) -> None:
        for field in sorted(template_fields(text)):
            if not self.need(where, field, "template field"):
                return


def _check_generate(check: _Check, stage: StagePlan) -> None:
    params = stage.params
    if params.get("task") == "code-scenarios":
        check.need("spec.generation.options.type_field", params.get("type_field", "type"))
        check.need("spec.generation.options.code_field", params.get("code_field", "code"))
        return
    for field in params.get("rephrase_fields", []):
        check.need("spec.generation.options.rephrase_fields", field)
    extra = {"text", "field"}
    check.records = [{**record, **dict.fromkeys(extra, "")} for record in check.records]
    check.template("spec.generation.prompt", str(params.get("prompt") or ""))


def _check_training(check: _Check, index: int, stage: StagePlan) -> None:
    where = f"spec.training[{index}].params"
    params = stage.params
    if stage.stage == "fomaml":
        if params.get("tasks"):
            return  # the tasks' own files are read as they are: nothing is grouped or formatted
        check.need(f"{where}.task_key", params["task_key"])
        check.template(f"{where}.prompt_template", params["prompt_template"])
        check.template(f"{where}.response_template", params["response_template"])
    elif stage.stage == "moe-steer":
        if params.get("input_format") == "labeled":
            check.need(f"{where}.prompt_field", params["prompt_field"])
            check.need(f"{where}.label_field", params["label_field"])
        else:
            check.need_any(f"{where}.safe_field/unsafe_field", [params["safe_field"], params["unsafe_field"]])
        if params.get("response_field"):
            check.need(f"{where}.response_field", params["response_field"])
    elif stage.stage == "qa":
        for key in ("id_field", "question_field", "context_field"):
            check.need(f"{where}.{key}", params[key])
        check.need_any(f"{where}.answers_field", [params["answers_field"]])


def check_shapes(plan: Plan, samples: Samples) -> list[str]:
    """Every field a stage needs that the sampled records lack, as messages naming the spec field."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for point in plan.points:
        splits = samples.get(point.dataset)
        if not splits:
            continue  # the caller could not read this dataset: the worker checks it
        every = [record for records in splits.values() for record in records]
        data = point.generate
        if ("generate", data.fingerprint) not in seen:
            seen.add(("generate", data.fingerprint))
            if data.stage == "generate":
                check = _Check(point.dataset, every, set())
                _check_generate(check, data)
                problems.extend(check.problems)
        added = generated_fields(data)
        for stage in point.training:
            if (point.dataset, stage.fingerprint) in seen:
                continue
            seen.add((point.dataset, stage.fingerprint))
            split = str(stage.params.get("split", "")) if stage.stage == "moe-steer" else ""
            records = list(splits.get(split, ())) or every
            check = _Check(point.dataset, records, added)
            _check_training(check, stage.training_index, stage)
            problems.extend(check.problems)
    return list(dict.fromkeys(problems))


def check_task_files(plan: Plan, available: Mapping[str, Sequence[str]]) -> list[str]:
    """fomaml `tasks` files a prepared dataset does not hold (`available`: dataset -> its files relative to its
    directory, split files and seed 003 folders). Files after generation are only known to the worker."""
    problems: list[str] = []
    for point in plan.points:
        files = available.get(point.dataset)
        if files is None or point.generate.stage != "dataset":
            continue
        for stage in point.training:
            index = stage.training_index
            for t, task in enumerate(stage.params.get("tasks") or [] if stage.stage == "fomaml" else []):
                for key in ("support_files", "query_files", "test_files"):
                    for f, relative in enumerate(task.get(key) or []):
                        if relative not in files:
                            listing = ", ".join(sorted(files)[:8]) or "(none)"
                            problems.append(
                                f"spec.training[{index}].params.tasks[{t}].{key}[{f}]: {relative} is not in the "
                                f"{point.dataset} dataset (paths are relative to its directory; it has {listing})"
                            )
    return list(dict.fromkeys(problems))


__all__ = ["Samples", "check_shapes", "check_task_files", "generated_fields", "template_fields"]
