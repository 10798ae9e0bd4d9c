"""The generate stage's prompt templates, and the plan-time check of them against a dataset's first records. Pure.

The worker renders its prompts with `PromptTemplate`. The operator and `datasweep plan` / `datasweep run` call
`template_problems` before anything is created, so that a template the worker could not render (an unbalanced
brace, a field the records do not have, a bad format spec) is answered at once with the spec field that holds
it, instead of failing inside a Job.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from typing import Any

from datasweep.api.stages.generate import GenerateParams
from datasweep.store.records import Record


class GenerateInputError(ValueError):
    """Bad input (spec, params, dataset files, missing API key): exit code 2, nothing spent."""


# Values the worker adds to a record's fields before rendering a validation prompt (workloads/generate/tasks.py).
VALIDATION_EXTRA_FIELDS = ("original", "rephrased", "field")

# Values the worker adds to a record's fields before rendering; the texts are not known before the requests
# are made, so placeholders stand in for them.
_GENERATION_EXTRAS: dict[str, tuple[str, ...]] = {"rephrase": ("text", "field"), "code-scenarios": ("code", "scenario")}
_VALIDATION_EXTRAS: tuple[str, ...] = (*VALIDATION_EXTRA_FIELDS, "code", "scenario")

# Where each template of the generate params is written in an Experiment.
SPEC_FIELDS = {
    "prompt": "spec.generation.prompt",
    "scenario2_prompt": "spec.generation.options.scenario2_prompt",
    "validation.prompt": "spec.validation.prompt",
}


class PromptTemplate:
    """`Rephrase: {text}`: named fields only; literal braces are doubled (`{{`)."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        fields: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise GenerateInputError(
                f"{name}: not a valid template ({exc}); write literal braces as {{{{ and }}}}"
            ) from exc
        for _, field_name, _, _ in parsed:
            if field_name is None:
                continue
            base = field_name.split(".", 1)[0].split("[", 1)[0]
            if not base or base.isdigit():
                raise GenerateInputError(
                    f"{name}: positional field {{{field_name}}} is not allowed; name it, e.g. {{text}}"
                )
            fields.add(base)
        self.fields = frozenset(fields)

    def missing(self, available: Mapping[str, object] | frozenset[str] | set[str]) -> list[str]:
        keys = set(available)
        return sorted(self.fields - keys)

    def render(self, values: Mapping[str, object]) -> str:
        missing = self.missing(values)
        if missing:
            raise GenerateInputError(
                f"{self.name}: template field(s) {', '.join(missing)} not available; "
                f"available: {', '.join(sorted(values))}"
            )
        shown = {
            key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            for key, value in values.items()
        }
        return self.text.format_map(shown)


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
