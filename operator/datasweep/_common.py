"""What every layer shares and none owns; `store/`, the bottom layer, may import it. Imports nothing of datasweep."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

SHORT_LENGTH = 12


class CamelModel(BaseModel):
    """Kubernetes-style object: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def short(full: str) -> str:
    """The short form of a fingerprint, as directory and object names carry it."""
    return full[:SHORT_LENGTH]
