"""Files read as kubectl reads them (issue 25, item 5): sigs.k8s.io/yaml numbers and booleans, and error messages that
show the value received, suggest the field meant, and say a pattern's form in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from datasweep.api import kube_yaml
from datasweep.api._base import PATTERN_FORMS, describe_validation_error
from datasweep.api.experiment import parse_spec
from datasweep.api.params_file import load_params_mapping
from datasweep.api.worker import WorkerSpec, dump_worker_spec, parse_worker_spec

# Patterns checked by validators with their own messages (the CRD carries them for the API server).
VALIDATOR_PATTERNS = 3


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-5", 1e-5),
        ("1.0e-5", 1e-5),
        ("-2E+3", -2000.0),
        (".5", 0.5),
        ("1.", 1.0),
        (".inf", float("inf")),
        ("012", 10),  # octal, as Go's strconv.ParseInt(s, 0, 64)
        ("-012", -10),
        ("09", 9.0),  # not octal, so a float
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("+3", 3),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("on", True),
        ("Off", False),
        ("yes", True),
        ("NO", False),
        ("y", True),
        ("n", False),
        ("2024-12-29", "2024-12-29"),
        ("1:20", "1:20"),
        ("yess", "yess"),
    ],
)
def test_scalars_read_as_kubectl_reads_them(text: str, value: Any) -> None:
    # the expected values are sigs.k8s.io/yaml v1.6.0's YAMLToJSON of the same lines (go-yaml v2's resolver)
    assert kube_yaml.load(f"key: {text}") == {"key": value}


def test_dump_quotes_every_string_kubectl_or_a_yaml_reader_would_read_as_another_type() -> None:
    data = {
        "strings": ["1e-5", "on", "yes", "y", "n", "012", "09", "2024-12-29", "1_000", "true", "null", "", "0o17"],
        "numbers": [1e-5, 12, 0.0, -3],
        "flags": [True, False, None],
    }
    text = kube_yaml.dump(data)
    assert kube_yaml.load(text) == data
    assert yaml.safe_load(text) == data  # a YAML 1.1 reader (kubectl describe output, a test) reads the same


def test_worker_spec_round_trip_keeps_a_string_that_looks_like_a_number() -> None:
    spec = WorkerSpec(
        stage="fomaml",
        artifact="a",
        fingerprint="f" * 64,
        dataset="Copa",
        semantic_name="s",
        output_dir="/data/out",
        params={"learning_rate": 1e-5, "tag": "1e-5", "flag": "on"},
    )
    assert parse_worker_spec(dump_worker_spec(spec), "spec").params == spec.params
    text = "stage: fomaml\nartifact: a\nfingerprint: " + "f" * 64 + "\ndataset: C\nsemanticName: s\noutputDir: /o\n"
    assert parse_worker_spec(text + "params: {learning_rate: 1e-5}\n", "spec").params == {"learning_rate": 1e-5}


def test_params_files_and_overrides_are_read_with_the_same_rules(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("learning_rate: 1e-5\nsafe_field: on\nquoted: 'on'\n", encoding="utf-8")
    assert load_params_mapping(params, ["inner_lr=3e-4", "name=yes", "tag='yes'"]) == {
        "learning_rate": 1e-5,
        "safe_field": True,
        "quoted": "on",
        "inner_lr": 3e-4,
        "name": True,
        "tag": "yes",
    }


_BASE: dict[str, Any] = {
    "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
    "generation": {"model": "gpt-4o"},
}


def _error(spec: dict[str, Any]) -> str:
    base: dict[str, Any] = {"purpose": "rules", **_BASE}
    for key, value in spec.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    with pytest.raises(ValidationError) as caught:
        parse_spec(base)
    return describe_validation_error(caught.value, "spec")


def test_an_unquoted_on_for_a_string_field_says_to_quote_it() -> None:
    # kubectl apply sends `cacheVersion: on` as true, which the CRD refuses too: the local message says why
    message = _error(kube_yaml.load("cacheVersion: on"))
    assert "spec.cacheVersion: Input should be a valid string (got True: unquoted yes/no/on/off" in message
    assert "quote the word" in message
    assert parse_spec({**kube_yaml.load("cacheVersion: 'on'"), "purpose": "rules", **_BASE}).cache_version == "on"


def test_a_type_error_shows_the_value_received() -> None:
    message = _error({"generation": {"temperature": "hot"}})
    assert "spec.generation.temperature: Input should be a valid number or Input should be a valid list (got 'hot'" in (
        message
    )
    quoted = _error({"generation": {"maxTokens": "256"}})
    assert "(got '256', a string: write the number without quotes)" in quoted


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"generation": {"baseUrl": "http://vllm:8000/v1"}},
            "spec.generation.baseUrl: Extra inputs are not permitted ",
        ),
        ({"generation": {"baseUrl": "http://vllm:8000/v1"}}, "did you mean baseURL?"),
        ({"generation": {"temprature": 0.7}}, "did you mean temperature?"),
        ({"datasets": [{"name": "Copa", "source": {"path": "copa", "pcv": "raw"}}]}, "did you mean pvc?"),
        (
            {"training": [{"name": "steer", "kind": "moe_steer", "baseModel": {"path": "m"}}]},
            "spec.training[0].kind: Input should be 'fomaml', 'moe-steer' or 'qa' (got 'moe_steer'; did you mean "
            "'moe-steer'?)",
        ),
        ({"generation": {"backend": "openai_batch"}}, "did you mean 'openai-batch'?"),
    ],
)
def test_unknown_fields_and_near_misses_get_a_did_you_mean(spec: dict[str, Any], expected: str) -> None:
    assert expected in _error(spec)


def test_an_unknown_field_with_nothing_close_gets_no_guess() -> None:
    message = _error({"generation": {"zzzzzz": 1}})
    assert "spec.generation.zzzzzz: Extra inputs are not permitted (unknown field)" in message


def test_a_pattern_error_says_the_form_with_an_example_not_the_regex() -> None:
    message = _error({"batch": "batch_2024_x"})
    assert message == (
        "spec.batch: should be batch_<YYYYMMDD>_<purpose> with a lower-case purpose of letters, digits and '_', "
        "e.g. batch_20241229_temperature (got 'batch_2024_x')"
    )
    secret = _error({"generation": {"apiKeySecret": {"name": "OpenAI_Key"}}})
    assert "spec.generation.apiKeySecret.name: should be a DNS-1123 subdomain" in secret
    assert "^" not in secret


def _patterns(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["pattern"]} if isinstance(schema.get("pattern"), str) else set()
        return found.union(*(_patterns(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_patterns(value) for value in schema))
    return set()


def _models(root: type[BaseModel] = BaseModel) -> list[type[BaseModel]]:
    found = []
    for sub in root.__subclasses__():
        found += [sub, *_models(sub)]
    return found


def test_every_pattern_of_the_models_has_a_form_in_words() -> None:
    import datasweep.api.artifact
    import datasweep.api.batch
    import datasweep.api.stages  # noqa: F401 - registers every model

    patterns: set[str] = set()
    for model in _models():
        if model.__module__.startswith("datasweep.api"):
            patterns |= _patterns(model.model_json_schema(by_alias=True))
    without = sorted(patterns - set(PATTERN_FORMS))
    assert len(without) == VALIDATOR_PATTERNS, f"add these to PATTERN_FORMS (api/common.py): {without}"
