"""The parameters model of every stage kind, and which of its fields change a stage's result."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from datasweep.api._base import Locate, describe_validation_error

# kind -> (module, class); modules import pydantic only, never torch.
_PARAMS_MODELS = {
    "generate": ("datasweep.api.stages.generate", "GenerateParams"),
    "fomaml": ("datasweep.api.stages.fomaml", "FomamlParams"),
    "moe-steer": ("datasweep.api.stages.moe_steer", "MoeSteerParams"),
    "qa": ("datasweep.api.stages.qa", "QaParams"),
}


class StageParamsError(ValueError):
    pass


@cache
def params_model(kind: str) -> type[BaseModel]:
    module_name, class_name = _PARAMS_MODELS[kind]
    model = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(model, type)
    assert issubclass(model, BaseModel)
    return model


def validate_params(kind: str, params: dict[str, Any], where: str, locate: Locate | None = None) -> BaseModel:
    """Validate a stage's params; the error names the field as `where.<field>` (or as `locate` says)."""
    if kind not in _PARAMS_MODELS:
        raise StageParamsError(f"{where}: unknown stage kind {kind!r}; use one of {sorted(_PARAMS_MODELS)}")
    try:
        return params_model(kind).model_validate(params, strict=True)
    except ValidationError as exc:
        raise StageParamsError(describe_validation_error(exc, where, locate)) from exc


def operational_fields(kind: str) -> frozenset[str]:
    """Fields that change how a stage works, never what it produces (logging, workers, retries, ...).

    Each stage module maps them to the reason in `OPERATIONAL_FIELDS`, beside the fields themselves.
    """
    return frozenset(operational_reasons(kind))


def operational_reasons(kind: str) -> dict[str, str]:
    """`OPERATIONAL_FIELDS` of a stage kind: field -> why it never changes the result."""
    module = importlib.import_module(_PARAMS_MODELS[kind][0])
    reasons: dict[str, str] = getattr(module, "OPERATIONAL_FIELDS", {})
    assert isinstance(reasons, dict)
    return reasons


def result_params(kind: str, params: BaseModel) -> dict[str, Any]:
    """The effective parameters (defaults filled in) that change the result: the fingerprint's input."""
    return params.model_dump(mode="json", exclude=set(operational_fields(kind)))


def training_kinds() -> tuple[str, ...]:
    return tuple(kind for kind in _PARAMS_MODELS if kind != "generate")
