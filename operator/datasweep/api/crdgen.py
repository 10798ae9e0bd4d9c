"""Generate the CustomResourceDefinitions from the Pydantic models (the single source of truth).

`python -m datasweep.api.crdgen --out crds [--chart charts/datasweep/crds]` writes them; `--check` fails when the
files on disk are stale (a test runs it).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from datasweep import GROUP, VERSION
from datasweep.api.artifact import ArtifactSpec, ArtifactStatus
from datasweep.api.batch import BatchSpec, BatchStatus
from datasweep.api.common import HUB_ID_UNSUPPORTED
from datasweep.api.experiment import (
    NO_GENERATION,
    SET_BY_SPEC,
    VALIDATION_SET_BY_SPEC,
    ExperimentSpec,
    ExperimentStatus,
)
from datasweep.api.stage_params import axis_refusal, metric_names, params_model, training_kinds

CATEGORY = "datasweep"
MAX_PARAMS = 64


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        merged: dict[str, Any] = copy.deepcopy(defs[name])
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        return merged
    return schema


def _axis(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A grid axis (`T | list[T]`) has no structural type: it keeps any value, and the operator checks it.

    CEL cannot see untyped fields, so a wrong value is answered by a Failed condition naming the field.
    """
    options = schema.get("anyOf", [])
    if len(options) == 2 and "array" in {o.get("type") for o in options}:
        scalar = next(o for o in options if o.get("type") != "array")["type"]
        return {
            "x-kubernetes-preserve-unknown-fields": True,
            "description": f"A {scalar} or a list of them (a grid axis). {schema.get('description', '')}".strip(),
        }
    return None


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a Pydantic JSON schema into a Kubernetes structural OpenAPI v3 schema."""
    schema = _resolve(schema, defs)
    if schema.get("x-kubernetes-int-or-string"):
        # e.g. a resource quantity: 8 or "500m"; the pattern applies to the string form
        return {key: schema[key] for key in ("x-kubernetes-int-or-string", "pattern", "description") if key in schema}
    axis = _axis(schema)
    if axis is not None:
        return axis
    out: dict[str, Any] = {}
    if "anyOf" in schema:
        options = [_resolve(o, defs) for o in schema["anyOf"]]
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            inner = structural(non_null[0], defs)
            inner["nullable"] = True
            if "description" in schema:
                inner["description"] = schema["description"]
            return inner
        return {"x-kubernetes-preserve-unknown-fields": True, "description": schema.get("description", "")}
    kind = schema.get("type")
    if "const" in schema:
        out["type"] = kind or "string"
        out["enum"] = [schema["const"]]
    elif "enum" in schema:
        out["type"] = kind or "string"
        out["enum"] = list(schema["enum"])
    elif kind == "object" or "properties" in schema:
        out["type"] = "object"
        props = schema.get("properties", {})
        if props:
            out["properties"] = {name: structural(sub, defs) for name, sub in props.items()}
            if schema.get("required"):
                out["required"] = list(schema["required"])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        elif not props:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["type"] = "array"
        out["items"] = structural(schema.get("items", {}), defs) if schema.get("items") else {"type": "string"}
    elif kind in ("string", "integer", "number", "boolean"):
        out["type"] = kind
    elif kind is None:
        out["x-kubernetes-preserve-unknown-fields"] = True
    for key in (
        "description",
        "pattern",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "format",
        "x-kubernetes-validations",  # CEL rules a model field declares (json_schema_extra)
    ):
        if key in schema:
            out[key] = schema[key]
    if "exclusiveMinimum" in schema:
        out["minimum"], out["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        out["maximum"], out["exclusiveMaximum"] = schema["exclusiveMaximum"], True
    if "default" in schema and schema["default"] is not None and "x-kubernetes-preserve-unknown-fields" not in out:
        out["default"] = schema["default"]
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _merge_param(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Two kinds share a key with different bounds: keep the type (each kind's worker checks its bounds)."""
    if first.get("type") != other.get("type"):
        kinds = {first.get("type"), other.get("type")}
        if kinds != {"integer", "number"}:
            raise ValueError(f"stage params share a key with different types: {first} / {other}")
        merged: dict[str, Any] = {"type": "number"}
    else:
        merged = {"type": first["type"]}
        if "items" in first:
            merged["items"] = first["items"]
        if "enum" in first and "enum" in other:  # e.g. input_format: the API server still refuses a typo
            merged["enum"] = list(dict.fromkeys([*first["enum"], *other["enum"]]))
    if first.get("nullable") or other.get("nullable"):
        merged["nullable"] = True
    return merged


AXIS_MARK = "x-datasweep-axis"  # an internal marker, removed before the CRD is written


def _training_axis(kind: str, name: str, sub: dict[str, Any]) -> dict[str, Any]:
    """A scalar param that may be a grid axis takes a value or a list (untyped, as spec.generation's axes: the
    operator checks it); a param that cannot keeps its type, and its description says why."""
    if sub.get("type") not in ("string", "integer", "number", "boolean"):
        return sub
    reason = axis_refusal(kind, name)
    if reason is not None:
        said = sub.get("description", "").rstrip(".")
        return {**sub, "description": f"{said}. One value, never a list: {reason}".lstrip(". ")}
    return {**sub, AXIS_MARK: True}


_ARTICLE = {"string": "A string", "integer": "An integer", "number": "A number", "boolean": "A boolean"}


def _training_axis_schema(sub: dict[str, Any]) -> dict[str, Any]:
    return {
        "x-kubernetes-preserve-unknown-fields": True,
        "description": f"{_ARTICLE[sub.get('type', '')]} or a list of them (a grid axis of the stage). "
        f"{sub.get('description', '')}".strip(),
    }


def training_params_schema() -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Union of the params of every training kind, plus a CEL rule per kind rejecting the other kinds' keys.

    Keys no kind knows are rejected by strict field validation (kubectl's default).
    """
    merged: dict[str, Any] = {}
    per_kind: dict[str, set[str]] = {}
    for kind in training_kinds():
        props = model_schema(params_model(kind)).get("properties", {})
        per_kind[kind] = set(props)
        for name, sub in props.items():
            sub = {k: v for k, v in sub.items() if k != "default"}  # defaults belong to each kind's worker
            sub = _training_axis(kind, name, sub)
            if name in merged and (AXIS_MARK in merged[name] or AXIS_MARK in sub):
                # an axis in one kind is untyped for all (each kind's own check refuses a list where it cannot be)
                merged[name] = merged[name] if AXIS_MARK in merged[name] else sub
                continue
            merged[name] = _merge_param(merged[name], sub) if name in merged and merged[name] != sub else sub
    merged = {name: _training_axis_schema(sub) if AXIS_MARK in sub else sub for name, sub in merged.items()}
    rules = []
    for kind, keys in per_kind.items():
        # CEL cannot see untyped params (the grid axes): the planner refuses those of another kind by name
        foreign = sorted(name for name in set(merged) - keys if "type" in merged[name])
        if not foreign:
            continue
        present = " || ".join(f"has(self.params.{name})" for name in foreign)
        rules.append(
            {
                "rule": f"self.kind != '{kind}' || !has(self.params) || !({present})",
                "message": f"params of a {kind} stage accept only: {', '.join(sorted(keys))}",
                "fieldPath": ".params",
            }
        )
    return {"type": "object", "properties": merged, "maxProperties": MAX_PARAMS}, rules


def _rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def experiment_spec_schema() -> dict[str, Any]:
    spec = model_schema(ExperimentSpec)
    props = spec["properties"]
    spec["x-kubernetes-validations"] = [
        _rule("has(self.generation) || self.datasets.all(d, has(d.prepared) && d.prepared)", NO_GENERATION),
        _rule(
            "has(self.batch) || has(self.purpose)",
            "set spec.purpose (the batch defaults to batch_<YYYYMMDD>_<purpose>) or spec.batch",
        ),
        _rule(
            "self.datasets.all(d, self.datasets.exists_one(e, e.name == d.name))",
            "dataset names must be unique",
            ".datasets",
        ),
        _rule(
            "!has(self.training) || self.training.all(t, self.training.exists_one(u, u.name == t.name))",
            "training stage names must be unique",
            ".training",
        ),
        _rule(
            "!self.datasets.exists(d, has(d.prepared) && d.prepared) || "
            "(has(self.training) && size(self.training) > 0)",
            "a prepared dataset is only trained on: add spec.training",
            ".datasets",
        ),
        _rule(
            "!has(self.objective) || (has(self.training) && self.training.exists(t, t.name == self.objective.stage))",
            "spec.objective.stage must name a stage in spec.training",
            ".objective.stage",
        ),
        *[
            _rule(
                f"!has(self.objective) || !has(self.training) || self.training.all(t, t.name != self.objective.stage "
                f"|| t.kind != '{kind}' || self.objective.metric in {list(metric_names(kind))})",
                f"spec.objective.metric: a {kind} stage records {', '.join(metric_names(kind))}",
                ".objective.metric",
            )
            for kind in training_kinds()
        ],
    ]
    generation = props["generation"]
    generation["x-kubernetes-validations"] = [
        _rule(
            "self.backend != 'openai-compatible' || has(self.baseURL)",
            "backend openai-compatible needs generation.baseURL (e.g. http://vllm:8000/v1)",
        ),
        _rule(
            "!(self.backend in ['openai', 'openai-batch']) || has(self.apiKeySecret)",
            "backend openai needs generation.apiKeySecret: {name: <Secret>, key: api-key}",
        ),
        _rule(
            "self.backend != 'transformers' || has(self.modelPath)",
            "backend transformers needs generation.modelPath",
        ),
    ]
    # Typed options (the generate params the spec does not set itself): `concurrency: "8"` or an 800 KB
    # system_prompt is refused at apply instead of by the operator.
    options = model_schema(params_model("generate"))["properties"]
    generation["properties"]["options"] = {
        "type": "object",
        "description": generation["properties"]["options"].get("description", ""),
        "properties": {
            name: {k: v for k, v in sub.items() if k != "default"}  # defaults belong to the worker
            for name, sub in options.items()
            if name not in SET_BY_SPEC
        },
    }
    judge = generation["properties"]["options"]["properties"].get("validation", {})
    for variant in [judge, *judge.get("anyOf", [])]:
        for name in VALIDATION_SET_BY_SPEC:
            variant.get("properties", {}).pop(name, None)
    prompt_rule = _rule(
        "!(has(self.text) && has(self.configMapKeyRef))",
        "set prompt.text or prompt.configMapKeyRef, not both",
    )
    generation["properties"]["prompt"]["x-kubernetes-validations"] = [prompt_rule]
    props["validation"]["properties"]["prompt"]["x-kubernetes-validations"] = [prompt_rule]
    stage = props["training"]["items"]
    params, rules = training_params_schema()
    stage["properties"]["params"] = params
    stage["x-kubernetes-validations"] = [
        *rules,
        _rule(
            "!(self.kind in ['moe-steer', 'qa']) || !has(self.resources) || "
            "((!has(self.resources.gpus) || self.resources.gpus <= 1) && "
            "(!has(self.resources.nodes) || self.resources.nodes <= 1))",
            "moe-steer and qa run as one process on one GPU: set resources.gpus <= 1 and nodes: 1 "
            "(only fomaml trains on several GPUs or nodes)",
            ".resources",
        ),
        _rule("has(self.baseModel.path)", "baseModel.path is required (the model directory on a volume)", ".baseModel"),
        _rule("!has(self.baseModel.hubId)", f"baseModel.{HUB_ID_UNSUPPORTED}", ".baseModel"),
    ]
    generation["properties"]["modelPath"]["x-kubernetes-validations"] = [
        _rule("has(self.path)", "modelPath.path is required (the model directory on a volume)"),
        _rule("!has(self.hubId)", f"modelPath.{HUB_ID_UNSUPPORTED}"),
    ]
    return spec


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def _condition_column(name: str, condition: str, field: str = "status") -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field}',
    }


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
    spec_required: bool = True,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            **({"required": ["spec"]} if spec_required else {}),
                        }
                    },
                }
            ],
        },
    }


def build_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD."""
    experiment = _crd(
        "Experiment",
        "experiments",
        "exp",
        experiment_spec_schema(),
        _status_schema(ExperimentStatus),
        [
            # The object name (batch-...), not the id (batch_...): what `kubectl get bat NAME` finds.
            {"name": "Batch", "type": "string", "jsonPath": ".status.batchName"},
            {"name": "Points", "type": "integer", "jsonPath": ".status.counts.points"},
            {"name": "Reused", "type": "integer", "jsonPath": ".status.counts.reused"},
            {"name": "Running", "type": "integer", "jsonPath": ".status.counts.running"},
            {"name": "Done", "type": "integer", "jsonPath": ".status.counts.succeeded"},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.counts.failed"},
            # Progress and dollars so far, summed from the running Artifacts' reports (core/progress.py).
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
            {"name": "Cost", "type": "string", "jsonPath": ".status.progress.cost"},
            # Requests the request store answered for the Artifacts made here, and their dollars (-o wide).
            {"name": "Saved", "type": "string", "jsonPath": ".status.progress.saved", "priority": 1},
            {"name": "Best", "type": "string", "jsonPath": ".status.best.summary"},
            _condition_column("Status", "Succeeded", "reason"),
        ],
    )
    artifact = _crd(
        "Artifact",
        "artifacts",
        "art",
        model_schema(ArtifactSpec),
        _status_schema(ArtifactStatus),
        [
            {"name": "Stage", "type": "string", "jsonPath": ".spec.stage"},
            {"name": "Dataset", "type": "string", "jsonPath": ".spec.dataset"},
            {"name": "Semantic", "type": "string", "jsonPath": ".spec.semanticName"},
            _condition_column("Ready", "Ready"),
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _condition_column("Reason", "Ready", "reason"),
            {"name": "First Batch", "type": "string", "jsonPath": ".status.firstBatchName"},
            # Consumers are labels (kubectl get art -l exp.datasweep.io/NAME): a column shows the first one.
            {"name": "First Experiment", "type": "string", "jsonPath": ".status.firstExperiment", "priority": 1},
        ],
    )
    artifact_spec = artifact["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    artifact_spec["x-kubernetes-validations"] = [
        _rule("self.fingerprint == oldSelf.fingerprint", "spec.fingerprint is immutable", ".fingerprint"),
        _rule("self.storage.path == oldSelf.storage.path", "spec.storage.path is immutable", ".storage.path"),
    ]
    batch = _crd(
        "Batch",
        "batches",
        "bat",
        model_schema(BatchSpec),
        _status_schema(BatchStatus),
        [
            {"name": "Purpose", "type": "string", "jsonPath": ".spec.purpose"},
            {"name": "Experiments", "type": "integer", "jsonPath": ".status.counts.experiments"},
            {"name": "Points", "type": "integer", "jsonPath": ".status.counts.points"},
            {"name": "Reused", "type": "integer", "jsonPath": ".status.counts.reused"},
            {
                "name": "Ready",
                "type": "integer",
                "jsonPath": ".status.counts.ready",
                "description": "Points whose every stage is Ready; `datasweep batches` prints the same",
            },
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
            {"name": "Cost", "type": "string", "jsonPath": ".status.progress.cost"},
            {"name": "Saved", "type": "string", "jsonPath": ".status.progress.saved", "priority": 1},
        ],
    )
    return {
        "datasweep.io_experiments.yaml": experiment,
        "datasweep.io_artifacts.yaml": artifact,
        "datasweep.io_batches.yaml": batch,
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `python -m datasweep.api.crdgen` from the Pydantic models: do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", action="append", default=[], help="directory to write (repeatable)")
    parser.add_argument("--chart", action="append", default=[], help="chart crds/ directory (same files)")
    parser.add_argument("--check", action="store_true", help="fail when the files on disk differ")
    args = parser.parse_args(argv)
    stale = []
    for directory in [*args.out, *args.chart]:
        target = Path(directory)
        for name, crd in build_crds().items():
            text = render(crd)
            path = target / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                target.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print("stale CRDs (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
