"""Plan-time check of the generate stage: every prompt template rendered against a dataset's first records.

The operator and `datasweep plan` / `datasweep run` call it before anything is created, so that a template
the worker could not render (an unbalanced brace, a field the records do not have, a bad format spec) is
answered at once with the spec field that holds it, instead of failing inside a Job. Pure: no torch, no I/O
beyond reading the first records of the split files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasweep.api.stages.generate import GenerateParams
from datasweep.store.records import Record, RecordFileError, iter_records
from datasweep.workloads.generate.inputs import GenerateInputError
from datasweep.workloads.generate.prompts import PromptTemplate
from datasweep.workloads.generate.tasks import VALIDATION_EXTRA_FIELDS

SAMPLE_RECORDS = 3

# Values the worker adds to a record's fields before rendering (workloads/generate/tasks.py); the texts are
# not known before the requests are made, so placeholders stand in for them.
_GENERATION_EXTRAS: dict[str, tuple[str, ...]] = {"rephrase": ("text", "field"), "code-scenarios": ("code", "scenario")}
_VALIDATION_EXTRAS: tuple[str, ...] = (*VALIDATION_EXTRA_FIELDS, "code", "scenario")

# Where each template of the generate params is written in an Experiment.
SPEC_FIELDS = {
    "prompt": "spec.generation.prompt",
    "scenario2_prompt": "spec.generation.options.scenario2_prompt",
    "validation.prompt": "spec.validation.prompt",
}


def sample_records(files: Iterable[Path], limit: int = SAMPLE_RECORDS) -> list[Record]:
    """The first `limit` records of each split file; unreadable lines are the worker's to report."""
    samples: list[Record] = []
    for path in files:
        try:
            samples.extend(itertools.islice(iter_records(path, on_bad_record=lambda _error: None), limit))
        except RecordFileError:
            continue
    return samples


def _templates(params: GenerateParams) -> list[tuple[str, str, tuple[str, ...]]]:
    extras = _GENERATION_EXTRAS[params.task]
    found: list[tuple[str, str, tuple[str, ...]]] = [("prompt", params.prompt, extras)]
    if params.task == "code-scenarios":
        found.append(("scenario2_prompt", params.scenario2_prompt, extras))
    if params.validation is not None:
        found.append(("validation.prompt", params.validation.prompt, _VALIDATION_EXTRAS))
    return found


def template_problems(
    params: Mapping[str, Any], samples: Sequence[Record], fields: Mapping[str, str] = SPEC_FIELDS
) -> list[str]:
    """One message per template that the worker could not render for these records, naming its spec field."""
    model = GenerateParams.model_validate(params)
    problems = []
    for key, text, extras in _templates(model):
        name = fields.get(key, f"params.{key}")
        try:
            template = PromptTemplate(text, name)
        except GenerateInputError as exc:
            problems.append(str(exc))
            continue
        for record in samples:
            values: dict[str, Any] = {**{str(k): v for k, v in record.data.items()}, **dict.fromkeys(extras, "x")}
            missing = template.missing(values)
            if missing:
                problems.append(
                    f"{name}: {', '.join('{' + field + '}' for field in missing)} is not a field of the records "
                    f"({record.location} has: {', '.join(sorted(map(str, record.data))) or 'nothing'}) nor one the "
                    f"worker adds ({', '.join(extras)}); fix the name, or write a literal brace as {{{{ or }}}}"
                )
                break
            try:
                template.render(values)
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                problems.append(f"{name}: cannot be rendered for {record.location}: {exc}")
                break
    return problems
