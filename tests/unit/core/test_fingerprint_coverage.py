"""Every field that changes what a stage produces is in its fingerprint (issue 15, defect 1).

The fields are derived from the models themselves (the Experiment spec and every stage's params model), so a
new field fails here until it is either fingerprinted or listed as operational with a reason:
`SPEC_OPERATIONAL_FIELDS` in core/plan.py for Experiment fields, `OPERATIONAL_FIELDS` in each
api/stages/<kind>.py for stage params.
"""

from __future__ import annotations

import copy
import types
import typing
from datetime import datetime
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from datasweep.api.experiment import GRID_AXES, ExperimentSpec
from datasweep.api.stage_params import operational_reasons, params_model
from datasweep.core.plan import SPEC_OPERATIONAL_FIELDS, PlanInputs, naming_alias, plan_experiment

CREATED = datetime(2024, 12, 29)
INPUTS = PlanInputs({"Copa": "a" * 64, "CB": "a" * 64}, created=CREATED)
TRAINING_KINDS = ("fomaml", "moe-steer", "qa")


def base_spec() -> dict[str, Any]:
    return {
        "batch": "batch_20241229_coverage",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"backend": "transformers", "model": "tiny", "options": {}},
        "validation": {"model": "judge"},
        "training": [
            {"name": f"t{i}", "kind": kind, "baseModel": {"path": "models/tiny"}, "params": {}}
            for i, kind in enumerate(TRAINING_KINDS)
        ],
    }


def fingerprints(raw: dict[str, Any]) -> list[str]:
    plan = plan_experiment(ExperimentSpec.model_validate(raw), INPUTS)
    return [stage.fingerprint for stage in plan.stages]


# --- the Experiment's own fields -------------------------------------------------------------------------------

# Fields holding stage params: covered field by field below.
PARAMS_HOLDERS = {"generation.options", "training.params"}

# A changed value for every fingerprinted leaf of the Experiment spec, applied to base_spec().
SPEC_CHANGES: dict[str, Any] = {
    "datasets.name": lambda raw: raw["datasets"][0].update(name="CB"),
    "datasets.prepared": lambda raw: raw["datasets"][0].update(prepared=True),
    "generation.task": lambda raw: raw["generation"].update(task="code-scenarios"),
    "generation.model": lambda raw: raw["generation"].update(model="other"),
    "generation.temperature": lambda raw: raw["generation"].update(temperature=0.2),
    "generation.top_p": lambda raw: raw["generation"].update(topP=0.5),
    "generation.max_tokens": lambda raw: raw["generation"].update(maxTokens=99),
    "generation.frequency_penalty": lambda raw: raw["generation"].update(frequencyPenalty=0.5),
    "generation.presence_penalty": lambda raw: raw["generation"].update(presencePenalty=0.5),
    "generation.prompt.text": lambda raw: raw["generation"].update(prompt={"text": "Say {text} again"}),
    "generation.model_path.pvc": lambda raw: raw["generation"].update(modelPath={"pvc": "models", "path": "m"}),
    "generation.model_path.path": lambda raw: raw["generation"].update(modelPath={"path": "models/other"}),
    "validation.model": lambda raw: raw["validation"].update(model="other-judge"),
    "validation.temperature": lambda raw: raw["validation"].update(temperature=0.4),
    "validation.prompt.text": lambda raw: raw["validation"].update(prompt={"text": "{original} {rephrased}?"}),
    "training.kind": lambda raw: raw["training"][0].update(kind="qa"),
    "training.base_model.pvc": lambda raw: raw["training"][0]["baseModel"].update(pvc="models"),
    "training.base_model.path": lambda raw: raw["training"][0]["baseModel"].update(path="models/other"),
    "cache_version": lambda raw: raw.update(cacheVersion="2"),
}
# Changes that must change the generate fingerprint (the others change a training stage's).
GENERATE_LEVEL = ("datasets.", "generation.", "validation.", "cache_version")
# Experiment fields that are operational generate params (api/stages/generate.py OPERATIONAL_FIELDS).
# Fields the schema refuses to take a value for (ModelRef: Jobs run offline), so nothing to fingerprint.
REFUSED_FIELDS = {"generation.model_path.hub_id", "training.base_model.hub_id"}
VIA_OPERATIONAL_PARAMS = {"generation.backend": "backend", "generation.base_url": "base_url"}
# Operational changes, applied to base_spec(): none of them may change any fingerprint.
SPEC_OPERATIONAL_CHANGES: dict[str, Any] = {
    "batch": lambda raw: raw.update(batch="batch_20250101_other"),
    "purpose": lambda raw: raw.update(purpose="other"),
    "description": lambda raw: raw.update(description="words"),
    "parallelism": lambda raw: raw.update(parallelism=2),
    "queue_name": lambda raw: raw.update(queueName="gpu"),
    "max_points": lambda raw: raw.update(maxPoints=9),
    "retries": lambda raw: raw.update(retries=5),
    "force_regenerate": lambda raw: raw.update(forceRegenerate=True),
    "suspend": lambda raw: raw.update(suspend=True),
    # which combinations are planned; the base spec's one combination is planned whatever the seed
    "search.algorithm": lambda raw: raw.update(search={"algorithm": "random", "samples": 5}),
    "search.samples": lambda raw: raw.update(search={"samples": 3}),
    "search.seed": lambda raw: raw.update(search={"samples": 1, "seed": 99}),
    "objective.stage": lambda raw: raw.update(objective={"stage": "t2", "metric": "f1"}),
    "objective.metric": lambda raw: raw.update(objective={"stage": "t2", "metric": "em"}),
    "objective.goal": lambda raw: raw.update(objective={"stage": "t2", "metric": "f1", "goal": "minimize"}),
    "datasets.source": lambda raw: raw["datasets"][0].update(source={"pvc": "sources", "path": "elsewhere"}),
    "datasets.sha256": lambda raw: raw["datasets"][0].update(sha256="a" * 64),
    # these two become generate params that are operational there
    "generation.backend": lambda raw: raw["generation"].update(backend="openai"),
    "generation.base_url": lambda raw: raw["generation"].update(baseURL="http://other/v1"),
    "generation.api_key_secret": lambda raw: raw["generation"].update(apiKeySecret={"name": "k"}),
    "generation.prompt.config_map_key_ref": lambda raw: raw["generation"].update(
        prompt={"configMapKeyRef": {"name": "p", "key": "k"}}
    ),
    "validation.prompt.config_map_key_ref": lambda raw: raw["validation"].update(
        prompt={"configMapKeyRef": {"name": "p", "key": "k"}}
    ),
    "training.name": lambda raw: raw["training"][0].update(name="renamed"),
    "training.resources": lambda raw: raw["training"][0].update(resources={"gpus": 8, "nodes": 2}),
    "training.launcher": None,  # only 'job' is accepted today: nothing to change
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `Model`, `Model | None` or `list[Model]`, if any."""
    candidates = [annotation, *get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def spec_leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    leaves = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _model_of(info.annotation)
        if path in PARAMS_HOLDERS or path in SPEC_OPERATIONAL_FIELDS or nested is None:
            leaves.append(path)
        else:
            leaves.extend(spec_leaves(nested, f"{path}."))
    return leaves


def test_every_experiment_field_is_fingerprinted_or_operational_with_a_reason() -> None:
    unclassified = [
        leaf
        for leaf in spec_leaves(ExperimentSpec)
        if leaf not in PARAMS_HOLDERS
        and leaf not in SPEC_OPERATIONAL_FIELDS
        and leaf not in SPEC_CHANGES
        and leaf not in VIA_OPERATIONAL_PARAMS
        and leaf not in REFUSED_FIELDS
    ]
    assert not unclassified, (
        f"Experiment fields {unclassified} are neither fingerprinted (add a change to SPEC_CHANGES here) nor "
        "listed with a reason in core/plan.py SPEC_OPERATIONAL_FIELDS"
    )
    assert all(reason.strip() for reason in SPEC_OPERATIONAL_FIELDS.values())
    stale = set(SPEC_OPERATIONAL_FIELDS) - set(spec_leaves(ExperimentSpec))
    assert not stale, f"SPEC_OPERATIONAL_FIELDS lists fields the Experiment does not have: {sorted(stale)}"


@pytest.mark.parametrize("leaf", sorted(SPEC_CHANGES))
def test_a_fingerprinted_experiment_field_changes_the_fingerprint(leaf: str) -> None:
    changed = copy.deepcopy(base_spec())
    SPEC_CHANGES[leaf](changed)
    before, after = fingerprints(base_spec()), fingerprints(changed)
    if leaf.startswith(GENERATE_LEVEL):
        assert after[0] != before[0], f"spec.{leaf} does not change the generate fingerprint"
        assert set(after).isdisjoint(before), f"spec.{leaf}: the training stages must chain the new input"
    else:
        assert after[1] != before[1], f"spec.{leaf} does not change the training fingerprint"


@pytest.mark.parametrize("leaf", sorted([*SPEC_OPERATIONAL_FIELDS, *VIA_OPERATIONAL_PARAMS]))
def test_an_operational_experiment_field_never_changes_a_fingerprint(leaf: str) -> None:
    if leaf in VIA_OPERATIONAL_PARAMS:
        assert VIA_OPERATIONAL_PARAMS[leaf] in operational_reasons("generate")
    change = SPEC_OPERATIONAL_CHANGES[leaf]
    if change is None:
        pytest.skip(f"spec.{leaf} has a single accepted value")
    changed = copy.deepcopy(base_spec())
    change(changed)
    assert fingerprints(changed) == fingerprints(base_spec())


def test_generation_model_path_is_in_the_generate_fingerprint() -> None:
    # the defect: two Experiments that differ only in modelPath shared a fingerprint (and so did training)
    one, other = base_spec(), base_spec()
    one["generation"]["modelPath"] = {"path": "models/llama-a"}
    other["generation"]["modelPath"] = {"path": "models/llama-b"}
    assert set(fingerprints(one)).isdisjoint(fingerprints(other))


# --- every stage's params ----------------------------------------------------------------------------------------

# Changed values the generic rule below cannot derive (cross-field constraints).
PARAM_OVERRIDES: dict[tuple[str, str], Any] = {
    ("fomaml", "eval_k_shot"): 5,  # must be one of k_shots
    ("fomaml", "support_ratio"): 0.2,
    ("fomaml", "name"): "physics",  # tasks[].name: required, no default to derive from
    ("moe-steer", "safe_ratio"): 0.25,  # 16 * 0.25 is whole
    ("moe-steer", "batch_size"): 8,
    ("generate", "max_batch_requests"): 100,  # the defaults are the API's limits
    ("generate", "max_batch_bytes"): 4096,
    ("generate", "base_url"): "http://vllm:8000/v1",  # must be an http(s) URL
    ("generate", "api_key_env"): "OTHER_API_KEY",  # must be an environment variable name
    ("qa", "doc_stride"): 64,
    ("qa", "max_length"): 256,
}


# Fields that change the result only together with others: both sides of the comparison get these.
PARAM_CONTEXT: dict[tuple[str, str], dict[str, Any]] = {
    ("generate", "caps_per_split"): {"task": "code-scenarios", "max_scenario1": 2},
}

# A valid entry of each list-of-models field: every sub-field is changed within it, both sides hold the rest.
LIST_ENTRIES: dict[tuple[str, str], dict[str, Any]] = {
    ("fomaml", "tasks"): {
        "name": "biology",
        "support_files": ["meta_train/biology_support.parquet"],
        "query_files": ["meta_train/biology_query.parquet"],
    },
}


def _non_none(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def changed_value(kind: str, name: str, info: FieldInfo) -> Any:
    """A valid value different from the default, derived from the field's type."""
    if (kind, name) in PARAM_OVERRIDES:
        return PARAM_OVERRIDES[(kind, name)]
    default = info.get_default(call_default_factory=True)
    annotation = _non_none(info.annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        # a single-valued Literal (completion_window) has nothing to change to
        return next((value for value in get_args(annotation) if value != default), default)
    if annotation is bool:
        return not default
    if annotation is int:
        return 1 if default is None else default + 1
    if annotation is float:
        return 0.5 if default is None else (0.1 if default == 0 else default / 2)
    if annotation is str:
        return "x" if default is None else f"{default} x"
    if origin is list:
        item = get_args(annotation)[0]
        return [*(default if isinstance(default, list) else []), 3 if item is int else "extra"]
    raise AssertionError(f"{kind}.{name}: no rule to change a {annotation!r}; add it to PARAM_OVERRIDES")


def param_spec(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    raw = base_spec()
    if kind == "generate":
        generation = raw["generation"]
        for name, value in params.items():
            if name in GRID_AXES or name in ("task", "backend"):
                generation[naming_alias(name)] = value
            elif name == "base_url":
                generation["baseURL"] = value
            elif name == "cache_version":
                raw["cacheVersion"] = value  # the planner copies spec.cacheVersion into the params
            elif name == "prompt":
                generation["prompt"] = {"text": value}
            elif name == "validation" and value is None:
                raw["validation"] = None
            elif name == "validation":
                raw["validation"] = {"model": value.pop("model", "judge"), "temperature": value.pop("temperature", 0.0)}
                if "prompt" in value:
                    raw["validation"]["prompt"] = {"text": value.pop("prompt")}
                generation["options"]["validation"] = value
            else:
                generation["options"][name] = value
    else:
        raw["training"][TRAINING_KINDS.index(kind) if kind in TRAINING_KINDS else 0]["params"] = params
    return raw


def param_changes(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(dotted field, params with that one field changed) for every field of the kind's params model."""
    changes = []
    for name, info in params_model(kind).model_fields.items():
        nested = _model_of(info.annotation)
        if nested is not None and get_origin(_non_none(info.annotation)) is list:
            entry = LIST_ENTRIES[(kind, name)]
            changes.append((name, {name: [entry]}))
            for sub, sub_info in nested.model_fields.items():
                changed = dict(entry, **{sub: changed_value(kind, sub, sub_info)})
                PARAM_CONTEXT.setdefault((kind, f"{name}.{sub}"), {name: [entry]})
                changes.append((f"{name}.{sub}", {name: [changed]}))
        elif nested is not None and get_origin(_non_none(info.annotation)) is not dict:
            changes.append((name, {name: None}))  # e.g. validation: null skips the step
            for sub, sub_info in nested.model_fields.items():
                changes.append((f"{name}.{sub}", {name: {sub: changed_value(kind, sub, sub_info)}}))
        elif get_origin(_non_none(info.annotation)) is dict:
            changes.append((name, {name: {"changed": {"input_per_million": 1.0, "output_per_million": 2.0}}}))
        else:
            changes.append((name, {name: changed_value(kind, name, info)}))
    return changes


ALL_KINDS = ("generate", *TRAINING_KINDS)
CASES = [(kind, field, params) for kind in ALL_KINDS for field, params in param_changes(kind)]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_operational_fields_exist_and_have_reasons(kind: str) -> None:
    reasons = operational_reasons(kind)
    fields = set(params_model(kind).model_fields)
    assert set(reasons) <= fields, f"{kind}: OPERATIONAL_FIELDS lists unknown fields {sorted(set(reasons) - fields)}"
    assert all(isinstance(reason, str) and reason.strip() for reason in reasons.values())


# Operational params the planner sets from spec.cacheVersion: the fingerprint takes it from the spec itself.
FROM_CACHE_VERSION = {("generate", "cache_version")}


@pytest.mark.parametrize(("kind", "field", "params"), CASES, ids=[f"{k}.{f}" for k, f, _ in CASES])
def test_every_param_is_fingerprinted_unless_operational(kind: str, field: str, params: dict[str, Any]) -> None:
    stage = 0 if kind == "generate" else 1 + TRAINING_KINDS.index(kind)
    context = PARAM_CONTEXT.get((kind, field), {})
    before = fingerprints(param_spec(kind, copy.deepcopy(context)))[stage]
    after = fingerprints(param_spec(kind, {**copy.deepcopy(context), **copy.deepcopy(params)}))[stage]
    if (kind, field) in FROM_CACHE_VERSION:
        assert after != before, f"{kind}.{field} comes from spec.cacheVersion, which salts every fingerprint"
    elif field.split(".")[0] in operational_reasons(kind):
        assert after == before, f"{kind}.{field} is listed as operational but changes the fingerprint"
    else:
        assert after != before, (
            f"{kind}.{field} changes the result but not the fingerprint: fingerprint it, or list it in "
            f"api/stages OPERATIONAL_FIELDS with the reason it never changes the result"
        )


def test_caps_per_split_is_left_out_where_it_cannot_matter() -> None:
    # fingerprints made before the field existed stay valid for rephrase and uncapped code-scenarios
    plain = fingerprints(param_spec("generate", {}))[0]
    assert fingerprints(param_spec("generate", {"caps_per_split": True}))[0] == plain


def test_request_reuse_and_cache_version_reach_the_worker_params_without_changing_the_fingerprint() -> None:
    plain = plan_experiment(ExperimentSpec.model_validate(param_spec("generate", {})), INPUTS).points[0].generate
    raw = param_spec("generate", {})
    raw["generation"]["options"]["requestReuse"] = False
    off = plan_experiment(ExperimentSpec.model_validate(raw), INPUTS).points[0].generate
    assert (plain.params["request_reuse"], off.params["request_reuse"]) == (True, False)
    assert off.fingerprint == plain.fingerprint
    raw["cacheVersion"] = "7"
    salted = plan_experiment(ExperimentSpec.model_validate(raw), INPUTS).points[0].generate
    assert salted.params["cache_version"] == "7"
