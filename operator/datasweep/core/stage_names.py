"""Which of an Experiment's training entries could have planned a training Artifact (the STAGE of its results).

An Artifact does not record the entry's name: a shared one may be consumed by Experiments that name the entry
differently, so each Experiment's own spec.training answers it for that Experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datasweep.api.experiment import TrainingStage
from datasweep.api.stage_params import StageParamsError, list_fields, validate_params
from datasweep.core.fingerprint import FingerprintError, canonicalize


def _same_model(entry: TrainingStage, base_model: Mapping[str, Any] | None) -> bool:
    """The entry's base model is the Artifact's: the same path (and the same volume where both name one)."""
    if base_model is None:
        return False
    ref = entry.base_model
    if ref.path != base_model.get("path") or ref.hub_id != base_model.get("hub_id"):
        return False
    return ref.pvc is None or base_model.get("pvc") is None or ref.pvc == base_model.get("pvc")


def _matches(entry: TrainingStage, params: Mapping[str, Any]) -> bool:
    """Every param of the entry equals the Artifact's value or, for a list-valued axis, one of its values does:
    each value typed by the kind's params model and canonicalised as the fingerprint does (3e-5 == 3.0e-5)."""
    listed = list_fields(entry.kind)
    axes = {k: v for k, v in entry.params.items() if isinstance(v, list) and k not in listed and v}
    one_point = {**entry.params, **{k: v[0] for k, v in axes.items()}}  # a valid whole to type one value in
    for key, given in entry.params.items():
        if key not in params:
            continue  # a field the fingerprint leaves out (operational): it never tells Artifacts apart
        try:
            recorded = canonicalize(params[key])
            typed = [
                canonicalize(
                    validate_params(entry.kind, {**one_point, key: value}, "params").model_dump(mode="json")[key]
                )
                for value in axes.get(key, [given])
            ]
        except (StageParamsError, FingerprintError):
            return False
        if recorded not in typed:
            return False
    return True


def training_entry_names(
    entries: Sequence[TrainingStage], kind: str, base_model: Mapping[str, Any] | None, params: Mapping[str, Any]
) -> list[str]:
    """Names of the entries that could have planned a training Artifact of `kind` on `base_model` (its identity:
    pvc, path, hub_id) with the effective `params`, in spec order; empty when none could."""
    return [
        entry.name
        for entry in entries
        if entry.kind == kind and _same_model(entry, base_model) and _matches(entry, params)
    ]
