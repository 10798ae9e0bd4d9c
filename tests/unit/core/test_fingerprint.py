"""Fingerprints: what changes them and what never does (SPEC section 2)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.fingerprint import canonical_json, fingerprint, short
from datasweep.core.plan import PlanInputs, plan_experiment

DATASET_HASH = "a" * 64
CREATED = datetime(2024, 12, 29)


def spec(**generation: Any) -> dict[str, Any]:
    return {
        "purpose": "temperature_study",
        "datasets": [{"name": "Copa", "source": {"path": "superglue/copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": 0.7, **generation},
        "validation": {"model": "gpt-4o"},
        "training": [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}, "params": {}}],
    }


def fingerprints(raw: dict[str, Any]) -> list[str]:
    plan = plan_experiment(ExperimentSpec.model_validate(raw), PlanInputs({"Copa": DATASET_HASH}, created=CREATED))
    return [stage.fingerprint for stage in plan.stages]


def test_float_spellings_and_key_order_are_one_value() -> None:
    assert canonical_json({"b": 1.0, "a": 0.7}) == canonical_json({"a": float("0.70"), "b": 1.0})
    assert fingerprint({"t": 0.7}) == fingerprint({"t": float("7e-1")})
    assert fingerprint({"s": "e\u0301"}) == fingerprint({"s": "\u00e9"})  # NFC
    assert len(fingerprint({})) == 64
    assert short(fingerprint({})) == fingerprint({})[:12]


def test_int_and_float_of_a_float_field_are_one_value() -> None:
    assert fingerprints(spec(topP=1)) == fingerprints(spec(topP=1.0))
    assert fingerprints(spec(temperature=0.70)) == fingerprints(spec(temperature=7e-1))


def test_defaults_written_out_or_left_out_do_not_matter() -> None:
    explicit = spec(topP=1.0, maxTokens=256, frequencyPenalty=0.0, presencePenalty=0.0, model="gpt-4o")
    explicit["cacheVersion"] = "1"
    explicit["training"][0]["params"] = {}
    assert fingerprints(explicit) == fingerprints(spec())


NEVER_IN_FINGERPRINT: list[tuple[str, Any]] = [
    ("batch", "batch_20250101_other"),
    ("purpose", "another_purpose"),
    ("description", "words"),
    ("parallelism", 3),
    ("queueName", "gpu-queue"),
    ("retries", 7),
]


@pytest.mark.parametrize(("field", "value"), NEVER_IN_FINGERPRINT)
def test_bookkeeping_fields_never_change_fingerprints(field: str, value: Any) -> None:
    changed = spec()
    changed[field] = value
    assert fingerprints(changed) == fingerprints(spec())


def test_resources_never_change_fingerprints() -> None:
    changed = spec()
    changed["training"][0]["resources"] = {"gpus": 8, "nodes": 2, "cpu": "16", "memory": "128Gi"}
    changed["generation"]["options"] = {"concurrency": 3}
    assert fingerprints(changed) == fingerprints(spec())


def test_cache_version_salts_every_stage() -> None:
    salted = spec()
    salted["cacheVersion"] = "2"
    assert set(fingerprints(salted)).isdisjoint(fingerprints(spec()))


def test_training_fingerprint_chains_the_input_fingerprint() -> None:
    base, warmer = fingerprints(spec()), fingerprints(spec(temperature=0.9))
    assert base[0] != warmer[0]
    assert base[1] != warmer[1]  # same training params, different input data


DATA_AFFECTING = st.sampled_from(
    [
        ("temperature", st.floats(0, 2, allow_nan=False).filter(lambda x: x != 0.7)),
        ("topP", st.floats(0.01, 1, allow_nan=False).filter(lambda x: x != 1.0)),
        ("maxTokens", st.integers(1, 4096).filter(lambda x: x != 256)),
        ("frequencyPenalty", st.floats(-2, 2, allow_nan=False).filter(lambda x: x != 0.0)),
        ("presencePenalty", st.floats(-2, 2, allow_nan=False).filter(lambda x: x != 0.0)),
        ("model", st.sampled_from(["gpt-4o-mini", "gpt-3.5-turbo", "llama-3"])),
    ]
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_data_affecting_change_changes_the_fingerprint(data: st.DataObject) -> None:
    field, strategy = data.draw(DATA_AFFECTING)
    value = data.draw(strategy)
    assert fingerprints(spec(**{field: value}))[0] != fingerprints(spec())[0]


@settings(max_examples=30, deadline=None)
@given(prompt=st.text(min_size=1, max_size=50).filter(lambda t: t != "Rephrase: {text}"))
def test_prompt_text_is_hashed_into_the_fingerprint(prompt: str) -> None:
    base = spec(prompt={"text": "Rephrase: {text}"})
    other = copy.deepcopy(base)
    other["generation"]["prompt"]["text"] = prompt
    assert fingerprints(other)[0] != fingerprints(base)[0]


def test_dataset_content_and_validation_change_the_fingerprint() -> None:
    raw = ExperimentSpec.model_validate(spec())
    one = plan_experiment(raw, PlanInputs({"Copa": DATASET_HASH}, created=CREATED)).stages[0].fingerprint
    other = plan_experiment(raw, PlanInputs({"Copa": "b" * 64}, created=CREATED)).stages[0].fingerprint
    assert one != other
    judged_warmer = spec()
    judged_warmer["validation"]["temperature"] = 0.3
    assert fingerprints(judged_warmer)[0] != fingerprints(spec())[0]
