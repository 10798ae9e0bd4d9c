"""Base models: the Pydantic models are the schema, CRDs are generated from them."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Kubernetes-style object: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


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


def describe_validation_error(exc: ValidationError, prefix: str = "", locate: Locate | None = None) -> str:
    """One entry per field path, as the user wrote it (`spec.datasets[0].name: ...`); the alternatives of a
    union that failed on every member are joined with "or". `locate` maps a location where the model's
    fields are not the user's (e.g. generate params built from `generation` and `generation.options`)."""
    grouped: dict[str, list[str]] = {}
    for err in exc.errors():
        where = locate(err["loc"]) if locate is not None else format_location(err["loc"], prefix)
        messages = grouped.setdefault(where, [])
        if err["msg"] not in messages:
            messages.append(err["msg"])
    return "; ".join(f"{where}: {' or '.join(messages)}" for where, messages in grouped.items())
