"""The parameters model of every stage kind, and which of its fields change a stage's result."""

from __future__ import annotations

import importlib
import types
import typing
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


def axis_refusal(kind: str, field: str) -> str | None:
    """Why a param of a training stage cannot be a list of values (a grid axis), or None when it can.

    Fields that name parts of the records (`NOT_AXES` of each stage module) and operational fields (a sweep over
    one would train the same model once per value) cannot.
    """
    module = importlib.import_module(_PARAMS_MODELS[kind][0])
    refused: dict[str, str] = getattr(module, "NOT_AXES", {})
    if field in refused:
        return refused[field]
    operational = operational_reasons(kind)
    if field in operational:
        return f"it never changes the result ({operational[field]}), so every value would train the same model"
    return None


def _holds_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_holds_list(arg) for arg in typing.get_args(annotation))
    return False


@cache
def list_fields(kind: str) -> frozenset[str]:
    """Params whose value is itself a list (fomaml `tasks`, `k_shots`): a list there is one value, not an axis."""
    return frozenset(name for name, info in params_model(kind).model_fields.items() if _holds_list(info.annotation))


def metric_names(kind: str) -> dict[str, str]:
    """`METRICS` of a training kind: what its Artifacts record (status.manifest.metrics), name -> meaning."""
    module = importlib.import_module(_PARAMS_MODELS[kind][0])
    metrics: dict[str, str] = getattr(module, "METRICS", {})
    return metrics


def result_params(kind: str, params: BaseModel) -> dict[str, Any]:
    """The effective parameters (defaults filled in) that change the result: the fingerprint's input."""
    return params.model_dump(mode="json", exclude=set(operational_fields(kind)))


def training_kinds() -> tuple[str, ...]:
    return tuple(kind for kind in _PARAMS_MODELS if kind != "generate")
