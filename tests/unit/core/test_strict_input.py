"""Bad input is refused with the field named, by the one validation path the operator and the CLI share
(issue 17): no lax coercion, no paid defaults, values the API server would refuse, escapes, templates,
huge grids."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from datasweep.api import crdgen
from datasweep.api._base import describe_validation_error
from datasweep.api.artifact import ArtifactSpec
from datasweep.api.common import Resources
from datasweep.api.experiment import ExperimentSpec, parse_spec
from datasweep.core import plan as plan_module
from datasweep.core.plan import PlanError, PlanInputs, plan_experiment
from datasweep.core.templates import template_problems
from datasweep.store.layout import resolve_inside, sample_records
from datasweep.store.records import Record

INPUTS = PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29))
TRAINING = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}}


def raw(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "purpose": "strict",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "model": "gpt-4o"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def refused(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_spec(spec)
    return describe_validation_error(info.value, "spec")


@pytest.mark.parametrize(
    ("generation", "field"),
    [
        ({"temperature": "0.7"}, "spec.generation.temperature"),
        ({"temperature": True}, "spec.generation.temperature"),
        ({"temperature": [0.5, "0.7"]}, "spec.generation.temperature"),
        ({"maxTokens": "256"}, "spec.generation.maxTokens"),
        ({"maxTokens": 256.5}, "spec.generation.maxTokens"),
        ({"topP": "1"}, "spec.generation.topP"),
        ({"model": 4}, "spec.generation.model"),
    ],
)
def test_grid_values_are_not_coerced(generation: dict[str, Any], field: str) -> None:
    assert field in refused(raw(generation=generation))


def test_typed_fields_are_not_coerced() -> None:
    assert "spec.validation.temperature" in refused(raw(validation={"temperature": "0.0"}))
    assert "spec.parallelism" in refused(raw(parallelism="4"))
    assert "spec.forceRegenerate" in refused(raw(forceRegenerate="yes"))
    assert "spec.cacheVersion" in refused(raw(cacheVersion=1))


def test_numbers_that_are_numbers_pass_and_ints_count_as_floats() -> None:
    spec = parse_spec(raw(generation={"temperature": [0, 1], "maxTokens": 512}))
    assert spec.generation.temperature == [0.0, 1.0]
    plan = plan_experiment(spec, INPUTS)
    assert [p.generate.params["temperature"] for p in plan.points] == [0.0, 1.0]


def test_training_params_are_validated_strictly() -> None:
    spec = parse_spec(raw(training=[{**TRAINING, "params": {"inner_lr": "1e-4"}}]))
    with pytest.raises(PlanError, match=r"spec\.training\[0\]\.params\.inner_lr"):
        plan_experiment(spec, INPUTS)


def test_generation_options_are_validated_strictly_and_named_where_written() -> None:
    spec = parse_spec(raw(generation={"options": {"concurrency": "8"}}))
    with pytest.raises(PlanError, match=r"spec\.generation\.options\.concurrency"):
        plan_experiment(spec, INPUTS)


def test_no_generation_section_is_refused_instead_of_a_paid_default() -> None:
    spec = raw(training=[TRAINING])
    del spec["generation"]
    message = refused(spec)
    assert "spec.generation is missing" in message
    assert "does not choose a (paid) model" in message
    rules = [r["rule"] for r in crdgen.experiment_spec_schema()["x-kubernetes-validations"]]
    assert any(r.startswith("has(self.generation) ||") for r in rules)
    prepared = raw(training=[TRAINING], datasets=[{"name": "Copa", "source": {"path": "copa"}, "prepared": True}])
    del prepared["generation"]
    assert parse_spec(prepared).datasets[0].prepared


@pytest.mark.parametrize("value", ["eight", "-1", "8 cores", "1.5.2", ""])
def test_cpu_and_memory_must_be_quantities(value: str) -> None:
    message = refused(raw(training=[{**TRAINING, "resources": {"cpu": value, "memory": value}}]))
    assert "spec.training[0].resources.cpu" in message
    assert "spec.training[0].resources.memory" in message
    assert "not a Kubernetes quantity" in message


def test_quantities_may_be_numbers_and_reach_the_pod_as_strings() -> None:
    from datasweep.api.settings import OperatorSettings
    from datasweep.k8s.builders import worker_job

    resources = Resources.model_validate({"cpu": 8, "memory": "64Gi"}, strict=True)
    assert resources.cpu == 8
    artifact = {
        "metadata": {"name": "copa-x-abc"},
        "spec": {
            "stage": "fomaml",
            "fingerprint": "a" * 64,
            "storage": {"path": "_shared/Copa/x"},
            "resources": resources.model_dump(by_alias=True, exclude_none=True),
        },
    }
    job = worker_job(artifact, attempt=0, settings=OperatorSettings(), queue_name=None)
    requests = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "8", "memory": "64Gi"}


@pytest.mark.parametrize("queue", ["team a", "-team", "team/a", "x" * 64])
def test_queue_name_must_be_a_label_value(queue: str) -> None:
    assert "spec.queueName" in refused(raw(queueName=queue))
    assert parse_spec(raw(queueName="team-a.gpu_1")).queue_name == "team-a.gpu_1"


@pytest.mark.parametrize("url", ["not a url", "vllm:8000/v1", "ftp://vllm/v1", "http://", "http://vllm :8000"])
def test_base_url_must_be_an_http_url_with_a_host(url: str) -> None:
    message = refused(raw(generation={"backend": "openai-compatible", "baseURL": url}))
    assert "spec.generation.baseURL" in message


def test_names_the_job_refers_to_are_object_names() -> None:
    assert "spec.generation.apiKeySecret.name" in refused(raw(generation={"apiKeySecret": {"name": "Open AI"}}))
    assert "spec.generation.apiKeySecret.key" in refused(
        raw(generation={"apiKeySecret": {"name": "openai", "key": "a/b"}})
    )
    assert "spec.datasets[0].source.pvc" in refused(
        raw(datasets=[{"name": "Copa", "source": {"pvc": "Raw_Data", "path": "copa"}}])
    )
    spec = parse_spec(raw(generation={"options": {"api_key_env": "OPENAI KEY"}}))
    with pytest.raises(PlanError, match=r"spec\.generation\.options\.api_key_env"):
        plan_experiment(spec, INPUTS)


def test_options_may_not_repeat_what_the_spec_sets() -> None:
    assert "options model" in refused(raw(generation={"options": {"model": "gpt-4o-mini"}}))


@pytest.mark.parametrize("path", ["../outside", "a/../../b", "/etc", "a/.."])
def test_volume_paths_stay_inside_their_volume(path: str) -> None:
    assert "spec.datasets[0].source.path" in refused(raw(datasets=[{"name": "Copa", "source": {"path": path}}]))
    message = refused(raw(training=[{**TRAINING, "baseModel": {"path": path}}]))
    assert "spec.training[0].baseModel.path" in message
    with pytest.raises(ValidationError, match="relative path inside the volume"):
        ArtifactSpec.model_validate(
            {
                "stage": "generate",
                "dataset": "Copa",
                "fingerprint": "a" * 64,
                "semanticName": "s",
                "storage": {"path": path},
            }
        )
    assert parse_spec(raw(datasets=[{"name": "Copa", "source": {"path": "a/..b/c.."}}]))


def test_resolve_inside_follows_symlinks(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "data").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", volume / "link")
    assert resolve_inside(volume, "data") == (volume / "data").resolve()
    assert resolve_inside(volume, "link") is None
    assert resolve_inside(volume, "../secret") is None


def test_a_model_name_too_long_for_a_directory_is_refused_at_plan() -> None:
    spec = parse_spec(raw(generation={"model": "m" * 300}))
    with pytest.raises(PlanError, match=r"spec\.generation\.model: .*255-byte") as info:
        plan_experiment(spec, INPUTS)
    assert info.value.reason == "NameTooLong"
    plan_experiment(parse_spec(raw(generation={"model": "m" * 150})), INPUTS)


def test_an_800kb_prompt_is_refused_with_its_field() -> None:
    prompt = "x {text} " + "y" * 800_000
    assert "spec.generation.prompt.text" in refused(raw(generation={"prompt": {"text": prompt}}))
    spec = parse_spec(raw(generation={"options": {"system_prompt": prompt}}))
    with pytest.raises(PlanError, match=r"spec\.generation\.options\.system_prompt: String should have at most"):
        plan_experiment(spec, INPUTS)
    big = PlanInputs({"Copa": "c" * 64}, generation_prompt=prompt, created=datetime(2024, 12, 29))
    with pytest.raises(PlanError, match=r"spec\.generation\.prompt"):
        plan_experiment(parse_spec(raw()), big)


def test_a_million_combinations_are_refused_before_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    def expand(_spec: ExperimentSpec) -> list[dict[str, Any]]:
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(plan_module, "grid", expand)
    axis = [round(0.01 * i, 2) for i in range(100)]
    spec = parse_spec(
        raw(
            generation={
                "temperature": axis,
                "topP": [round(0.01 * i, 2) for i in range(1, 101)],
                "maxTokens": list(range(1, 101)),
            }
        )
    )
    assert plan_module.grid_size(spec) == 1_000_000
    with pytest.raises(PlanError, match="1000000 points") as info:
        plan_experiment(spec, INPUTS)
    assert info.value.reason == "TooManyPoints"


SAMPLE = [Record("copa_train.jsonl:1", {"idx": 0, "premise": "p", "label": 1}, 1)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"prompt": "Rephrase: {text}"}, None),
        ({"prompt": "{premise} -> {text} ({field}) {{literal}}"}, None),
        ({"prompt": "Rephrase: {text"}, "spec.generation.prompt: not a valid template"),
        ({"prompt": "Rephrase: text}"}, "spec.generation.prompt: not a valid template"),
        ({"prompt": "Rephrase: {sentence}"}, "spec.generation.prompt: {sentence} is not a field"),
        ({"prompt": "Rephrase: {0}"}, "positional field"),
        ({"prompt": "Rephrase: {idx:d}"}, "spec.generation.prompt: cannot be rendered"),
        (
            {"prompt": "{text}", "validation": {"prompt": "{original} {verdict}"}},
            "spec.validation.prompt: {verdict} is not a field",
        ),
        ({"task": "code-scenarios", "prompt": "{code}", "scenario2_prompt": "{klass}"}, "scenario2_prompt"),
    ],
)
def test_templates_are_rendered_against_the_first_records(params: dict[str, Any], expected: str | None) -> None:
    problems = template_problems(params, SAMPLE)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert expected in problems[0], problems


def test_sample_records_reads_the_first_records_of_each_split(tmp_path: Path) -> None:
    train = tmp_path / "copa_train.jsonl"
    train.write_text("".join(json.dumps({"idx": i}) + "\n" for i in range(10)) + "not json\n")
    test = tmp_path / "copa_test.jsonl"
    test.write_text("{broken\n" + json.dumps({"idx": 99}) + "\n")
    records = sample_records([train, test, tmp_path / "missing.jsonl"])
    assert [r.data["idx"] for r in records] == [0, 1, 2, 99]


def test_the_crd_mirrors_what_the_schema_can_say() -> None:
    spec = crdgen.experiment_spec_schema()
    props = spec["properties"]
    cpu = props["training"]["items"]["properties"]["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "pattern" in cpu
    assert "type" not in cpu
    assert props["queueName"]["pattern"]
    assert props["queueName"]["maxLength"] == 63
    base_url = props["generation"]["properties"]["baseURL"]
    assert base_url["pattern"].startswith("^https?://")
    assert "isURL(self)" in base_url["x-kubernetes-validations"][0]["rule"]
    path = props["datasets"]["items"]["properties"]["source"]["properties"]["path"]
    assert "matches" in path["x-kubernetes-validations"][0]["rule"]
    assert props["validation"]["properties"]["model"]["maxLength"] == 256
