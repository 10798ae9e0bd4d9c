"""What gets asked: generation items of both tasks, their validation, and the records they compile into."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from datasweep.api.stages.generate import GenerateParams
from datasweep.core.templates import VALIDATION_EXTRA_FIELDS
from datasweep.workloads.generate.inputs import GenerateInputError, SourceRecord, SplitData
from datasweep.workloads.generate.prompts import PromptTemplate

SCENARIO_BY_TYPE = {"function": "scenario1", "class": "scenario2"}


@dataclass
class WorkItem:
    """One generation request (and later its validation): a record's field, or a code slice."""

    custom_id: str
    split: str
    record: SourceRecord
    field: str  # rephrased field, or "response" for code scenarios
    original: str
    prompt: str
    scenario: str | None = None

    @property
    def validation_id(self) -> str:
        return "val" + self.custom_id.removeprefix("gen")


@dataclass
class TaskPlan:
    items: list[WorkItem]
    skipped: dict[str, dict[str, int]]  # split -> reason -> count (code-scenarios: other types, caps)


def _record_values(record: SourceRecord) -> dict[str, Any]:
    return {str(key): value for key, value in record.data.items()}


def _fail_missing(problems: list[str]) -> None:
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise GenerateInputError("\n  ".join(["bad dataset input:", *shown]) + more)


def plan_rephrase(splits: dict[str, SplitData], params: GenerateParams) -> TaskPlan:
    template = PromptTemplate(params.prompt, "params.prompt")
    items: list[WorkItem] = []
    problems: list[str] = []
    for split, data in splits.items():
        for record in data.records:
            values = _record_values(record)
            for field in params.rephrase_fields:
                value = record.data.get(field)
                if not isinstance(value, str) or not value.strip():
                    problems.append(
                        f"{data.where(record)}: field {field!r} to rephrase is "
                        + ("missing" if value is None else "not a non-empty string")
                        + " (params.rephrase_fields)"
                    )
                    continue
                fields = {**values, "text": value, "field": field}
                missing = template.missing(fields)
                if missing:
                    problems.append(f"{data.where(record)}: params.prompt needs field(s) {', '.join(missing)}")
                    continue
                items.append(
                    WorkItem(
                        custom_id=f"gen:{split}:{record.record_id}:{field}",
                        split=split,
                        record=record,
                        field=field,
                        original=value,
                        prompt=template.render(fields),
                    )
                )
    _fail_missing(problems)
    return TaskPlan(items=items, skipped={})


def plan_code_scenarios(splits: dict[str, SplitData], params: GenerateParams) -> TaskPlan:
    """Seed 001: function slices -> scenario1, class slices -> scenario2, each capped overall (the seed's
    --max-scenario1/--max-scenario2, in file order) or per split (caps_per_split)."""
    templates = {
        "scenario1": PromptTemplate(params.prompt, "params.prompt"),
        "scenario2": PromptTemplate(params.scenario2_prompt, "params.scenario2_prompt"),
    }
    caps = {"scenario1": params.max_scenario1, "scenario2": params.max_scenario2}
    items: list[WorkItem] = []
    problems: list[str] = []
    skipped: dict[str, dict[str, int]] = {}
    taken = {"scenario1": 0, "scenario2": 0}
    for split, data in splits.items():
        if params.caps_per_split:
            taken = {"scenario1": 0, "scenario2": 0}
        split_skips: dict[str, int] = {}
        for record in data.records:
            kind = record.data.get(params.type_field)
            code = record.data.get(params.code_field)
            if kind is None:
                problems.append(
                    f"{data.where(record)}: missing slice type field {params.type_field!r} (params.type_field)"
                )
                continue
            if not isinstance(code, str) or not code.strip():
                problems.append(f"{data.where(record)}: missing code field {params.code_field!r} (params.code_field)")
                continue
            scenario = SCENARIO_BY_TYPE.get(str(kind).lower())
            if scenario is None:
                reason = f"type {kind}"
                split_skips[reason] = split_skips.get(reason, 0) + 1
                continue
            cap = caps[scenario]
            if cap is not None and taken[scenario] >= cap:
                reason = f"{scenario} cap {cap}"
                split_skips[reason] = split_skips.get(reason, 0) + 1
                continue
            fields = {**_record_values(record), "code": code, "scenario": scenario}
            template = templates[scenario]
            missing = template.missing(fields)
            if missing:
                problems.append(f"{data.where(record)}: {template.name} needs field(s) {', '.join(missing)}")
                continue
            taken[scenario] += 1
            items.append(
                WorkItem(
                    custom_id=f"gen:{split}:{record.record_id}:{scenario}",
                    split=split,
                    record=record,
                    field="response",
                    original=code,
                    prompt=template.render(fields),
                    scenario=scenario,
                )
            )
        if split_skips:
            skipped[split] = split_skips
    _fail_missing(problems)
    return TaskPlan(items=items, skipped=skipped)


def plan_task(splits: dict[str, SplitData], params: GenerateParams) -> TaskPlan:
    plan = plan_rephrase(splits, params) if params.task == "rephrase" else plan_code_scenarios(splits, params)
    if not plan.items:
        raise GenerateInputError(
            "nothing to generate: no record produced a request (check params.task, type_field and the caps)"
        )
    if params.validation is not None:
        template = PromptTemplate(params.validation.prompt, "params.validation.prompt")
        problems = []
        for item in plan.items:
            missing = template.missing({*item.record.data, *VALIDATION_EXTRA_FIELDS, "code", "scenario"})
            if missing:
                problems.append(
                    f"{splits[item.split].where(item.record)}: params.validation.prompt needs field(s) "
                    f"{', '.join(missing)} (available: record fields, original, rephrased, field)"
                )
        _fail_missing(problems)
    return plan


def validation_prompt(item: WorkItem, generated: str, params: GenerateParams) -> str:
    assert params.validation is not None
    template = PromptTemplate(params.validation.prompt, "params.validation.prompt")
    fields: dict[str, Any] = {
        **_record_values(item.record),
        "original": item.original,
        "rephrased": generated,
        "field": item.field,
        "code": item.original,
        "scenario": item.scenario or "",
    }
    return template.render(fields)


def compile_record(
    task: str, items: list[WorkItem], generated: dict[str, str], verdicts: dict[str, tuple[str, str]] | None
) -> tuple[dict[str, Any], bool]:
    """The output record for one source record (rephrase) or one slice (scenarios); and whether it is kept."""
    record = copy.deepcopy(items[0].record.data)
    if task == "rephrase":
        for item in items:
            record[f"original_{item.field}"] = item.original
            record[item.field] = generated[item.custom_id]
    else:
        item = items[0]
        record["scenario"] = item.scenario
        record["response"] = generated[item.custom_id]
    if verdicts is None:
        record["validation"] = None
        return record, True
    judged = [verdicts[item.validation_id] for item in items]
    rejected = [
        (item.field, reason) for item, (verdict, reason) in zip(items, judged, strict=True) if verdict != "keep"
    ]
    if rejected:
        reason = "; ".join(f"{field}: {why}" if len(items) > 1 else why for field, why in rejected)
        record["validation"] = {"verdict": "reject", "reason": reason}
        return record, False
    record["validation"] = {"verdict": "keep", "reason": "; ".join(reason for _, reason in judged if reason)}
    return record, True
