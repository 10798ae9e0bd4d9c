"""Base models: the Pydantic models are the schema, CRDs are generated from them."""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from datasweep._common import CamelModel as CamelModel  # below store/, which uses it too


class ParamsModel(BaseModel):
    """Hyper-parameters of a stage, spelled as in the seed configs (snake_case), unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Location parts pydantic adds for the members of a union or for validators (`temperature.float`,
# `temperature.list[float]`, `function-after[...]`): internals, not what the user wrote.
_INTERNAL_PART = re.compile(r"^(float|int|str|bool|bytes|none|[a-z-]+\[.*\]|constrained-[a-z-]+)$")

Locate = Callable[[Sequence[int | str]], str]


def format_location(loc: Sequence[int | str], prefix: str = "") -> str:
    """`spec`, ("datasets", 0, "name") -> `spec.datasets[0].name`, without pydantic's union member tags."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _INTERNAL_PART.match(part):
            text += f".{part}" if text else part
    return text or "<root>"


# What a `pattern` of a field means, in words with an example (api/common.py fills it in; a test checks that
# every pattern of the models has one): a pattern error says this instead of printing the regex.
PATTERN_FORMS: dict[str, str] = {}

# Errors whose input is worth showing: the value was there but has the wrong type or form.
_SHOW_INPUT = re.compile(
    r"^(.*_type|.*_parsing|literal_error|enum|string_pattern_mismatch|string_too_(long|short)|too_(long|short)"
    r"|(greater|less)_than(_equal)?|multiple_of|finite_number|int_from_float|url_.*)$"
)
_NUMBER_TYPES = {"float_type", "float_parsing", "int_type", "int_parsing"}


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold: Annotated, Optional and unions unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(candidates: list[Any], part: int | str) -> list[Any]:
    found: list[Any] = []
    for candidate in candidates:
        origin = get_origin(candidate)
        if isinstance(part, int):
            if origin in (list, tuple, set, frozenset, Sequence) and get_args(candidate):
                found += _members(get_args(candidate)[0])
        elif _is_model(candidate):
            for name, info in candidate.model_fields.items():
                if part in (name, info.alias):
                    found += _members(info.annotation)
        elif origin is dict and len(get_args(candidate)) == 2:
            found += _members(get_args(candidate)[1])
    if not found and isinstance(part, str):  # pydantic's tag of a union member: `float`, `list[float]`, a model
        named = [c for c in candidates if getattr(c, "__name__", None) == part]
        return named or (candidates if _INTERNAL_PART.match(part) else [])
    return found


def _all_models(root: type[BaseModel] = BaseModel) -> list[type[BaseModel]]:
    found = []
    for sub in root.__subclasses__():
        found += [sub, *_all_models(sub)]
    return found


def field_names_at(title: str, loc: Sequence[int | str]) -> list[str]:
    """The field names (as written: aliases) of the model found at `loc` under the model named `title`."""
    roots = {model for model in _all_models() if model.__name__ == title and model.__module__.startswith("datasweep")}
    if len(roots) != 1:
        return []
    candidates: list[Any] = list(roots)
    for part in loc:
        candidates = _step(candidates, part)
    names: list[str] = []
    for model in candidates:
        if _is_model(model):
            names += [info.alias or name for name, info in model.model_fields.items()]
    return list(dict.fromkeys(names))


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """The choice `word` was most likely meant to be (`baseUrl` -> `baseURL`, `moe_steer` -> `moe-steer`)."""
    folded = {choice.lower().replace("_", "").replace("-", ""): choice for choice in choices}
    exact = folded.get(word.lower().replace("_", "").replace("-", ""))
    if exact is not None:
        return exact
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _message(err: Any, title: str) -> tuple[str, str]:
    """pydantic's message (a pattern in words, a did-you-mean added) and what was received, when worth showing."""
    kind, message, value = err["type"], err["msg"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden" and isinstance(err["loc"][-1], str):
        suggestion = did_you_mean(err["loc"][-1], field_names_at(title, err["loc"][:-1]))
        return message + (f" (unknown field; did you mean {suggestion}?)" if suggestion else " (unknown field)"), ""
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_FORMS:
        message = f"should be {PATTERN_FORMS[ctx['pattern']]}"
    if not _SHOW_INPUT.match(kind):
        return message, ""
    got = f"got {_shown(value)}"
    if kind in _NUMBER_TYPES and isinstance(value, str) and _is_number(value):
        got += ", a string: write the number without quotes"
    if kind == "string_type" and isinstance(value, bool):  # `on`, `yes`, `no`, `y`: booleans to kubectl too
        got += ": unquoted yes/no/on/off/y/n/true/false are booleans in YAML as kubectl reads it; quote the word"
    if kind in ("literal_error", "enum") and isinstance(value, str):
        suggestion = did_you_mean(value, re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        got += f"; did you mean {suggestion!r}?" if suggestion else ""
    return message, got


def describe_validation_error(exc: ValidationError, prefix: str = "", locate: Locate | None = None) -> str:
    """One entry per field path, as the user wrote it (`spec.datasets[0].name: ...`); the alternatives of a
    union that failed on every member are joined with "or". `locate` maps a location where the model's
    fields are not the user's (e.g. generate params built from `generation` and `generation.options`).
    Each entry shows the value received where its type or form was wrong, a did-you-mean for an unknown
    field or a near-miss of a fixed value, and a pattern as the form it asks for."""
    grouped: dict[str, list[str]] = {}
    received: dict[str, str] = {}  # the members of a union all got the same value: shown once, at the end
    for err in exc.errors():
        where = locate(err["loc"]) if locate is not None else format_location(err["loc"], prefix)
        messages = grouped.setdefault(where, [])
        message, got = _message(err, exc.title)
        if len(got) > len(received.get(where, "")):
            received[where] = got
        if message not in messages:
            messages.append(message)
    return "; ".join(
        f"{where}: {' or '.join(messages)}" + (f" ({received[where]})" if where in received else "")
        for where, messages in grouped.items()
    )
