"""Base models: the Pydantic models are the schema, CRDs are generated from them."""

from __future__ import annotations

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


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path: `spec.generation.temperature: ...`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        where = ".".join(part for part in (prefix, loc) if part) or "<root>"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
