"""`datasweep why`'s pure part: the field-by-field difference, the nearest Artifact and how both read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from datasweep.api.experiment import ExperimentSpec
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment
from datasweep.core.why import Candidate, Side, diff, line_change, nearest, summary

INPUTS = PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29))


def planned(**generation: Any) -> StagePlan:
    raw: dict[str, Any] = {
        "batch": "batch_20241229_temperature",
        "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
        "generation": {"apiKeySecret": {"name": "openai"}, "temperature": 0.7, "topP": 1.0, **generation},
        "validation": {"model": "gpt-4o", "prompt": {"text": "Judge:\n{rephrased}\nAnswer yes or no."}},
    }
    return plan_experiment(ExperimentSpec.model_validate(raw), INPUTS).points[0].generate


def side(stage: StagePlan, files: dict[str, str] | None = None) -> Side:
    return Side(stage.canonical, stage.params, files or {})


def test_a_changed_temperature_is_the_one_difference_of_the_real_canonical_params() -> None:
    found = diff(side(planned(temperature=0.7)), side(planned(temperature=0.75)))
    assert [d.render() for d in found] == ["temperature 0.7 → 0.75"]


def test_a_changed_prompt_line_is_named_from_the_texts_behind_the_hashes() -> None:
    old = planned(prompt={"text": "Rephrase this.\nKeep the meaning.\n{premise}\n"})
    new = planned(prompt={"text": "Rephrase this.\nKeep the meaning.\n{premise} please\n"})
    assert [d.render() for d in diff(side(old), side(new))] == ["prompt: line 3 differs"]
    # without the texts (an Artifact recorded only its canonical params) the hashes are what is known
    (only,) = diff(Side(old.canonical), Side(new.canonical))
    assert only.render().startswith("prompt: text changed (sha256 ")


def test_nested_prompt_keys_are_dotted_paths() -> None:
    old = {"params": {"validation": {"prompt": "Judge\nthis", "temperature": 0.0}}}
    new = {"params": {"validation": {"prompt": "Judge\nthat", "temperature": 0.2}}}
    assert [d.render() for d in diff(Side(old), Side(new))] == [
        "validation.prompt: line 2 differs",
        "validation.temperature 0.0 → 0.2",
    ]


def test_dataset_content_counts_the_changed_files() -> None:
    old, new = planned(), planned()
    old_canonical = {**old.canonical, "dataset": {"name": "Copa", "sha256": "a" * 64}}
    files = {"copa_train.jsonl": "1", "copa_validation.jsonl": "2", "copa_test.jsonl": "3"}
    changed = {**files, "copa_train.jsonl": "x", "copa_test.jsonl": "y"}
    (only,) = diff(Side(old_canonical, old.params, files), Side(new.canonical, new.params, changed))
    assert only.render() == "dataset sha256 changed: 2 files"
    (unknown,) = diff(Side(old_canonical), Side(new.canonical))
    assert unknown.render() == "dataset sha256 changed"


def test_recipe_versions_added_and_removed_keys() -> None:
    old = {"stage": "generate", "recipe": 3, "params": {"temperature": 0.7, "max_scenario1": 5}}
    new = {"stage": "generate", "recipe": 4, "params": {"temperature": 0.7, "top_k": 40}}
    assert [d.render() for d in diff(Side(old), Side(new))] == [
        "recipe 3 → 4",
        "max_scenario1 removed (was 5)",
        "top_k added: 40",
    ]
    assert summary(diff(Side(old), Side(new))) == "recipe 3 → 4 (+2 more)"
    # an Artifact made before recipe versions existed
    assert [d.render() for d in diff(Side({"recipe": None}), Side({"recipe": 4}))] == ["recipe null → 4"]
    assert [d.render() for d in diff(Side({}), Side({"recipe": 4}))] == ["recipe added: 4"]


def test_a_training_stage_names_its_changed_input_by_short_fingerprints() -> None:
    old = {"stage": "qa", "inputs": ["a" * 64], "params": {"learning_rate": 3e-5}}
    new = {"stage": "qa", "inputs": ["b" * 64], "params": {"learning_rate": 1e-5}}
    assert [d.render() for d in diff(Side(old), Side(new))] == [
        f"inputs [{'a' * 12}] → [{'b' * 12}]",
        "learning_rate 3e-05 → 1e-05",
    ]


def test_effective_params_are_compared_when_a_side_has_no_canonical_ones() -> None:
    old = Side(None, {"temperature": 0.7, "prompt": "a\nb"})
    new = Side({"stage": "generate"}, {"temperature": 0.9, "prompt": "a\nc"})
    assert [d.render() for d in diff(old, new)] == ["prompt: line 2 differs", "temperature 0.7 → 0.9"]
    assert diff(Side(None), new) == []


def test_numbers_compare_by_value_as_the_api_server_returns_them() -> None:
    # an Artifact object's 1.0 comes back from the API server as 1; true stays no number
    old = Side({"params": {"top_p": 1, "temperature": 0.7, "stop": [1], "validate": True}})
    new = Side({"params": {"top_p": 1.0, "temperature": 0.7, "stop": [1.0], "validate": 1}})
    assert [d.render() for d in diff(old, new)] == ["validate true → 1"]
    assert nearest(new, [Candidate("api", old)]).differences == diff(old, new)  # type: ignore[union-attr]


def test_line_change_wording() -> None:
    assert line_change("a\nb\nc", "a\nb\nc\nd") == "line 4 differs"
    assert line_change("a\nb", "x\ny") == "lines 1, 2 differ"
    assert line_change("1\n2\n3\n4\n5", "a\nb\nc\nd\ne") == "lines 1, 2, 3 and 2 more differ"
    assert line_change("a\n", "a") == "whitespace differs"


def test_nearest_is_the_fewest_differing_fields_then_ready_then_newest() -> None:
    target = side(planned(temperature=0.75, topP=0.9))
    one_off = Candidate("one-off", side(planned(temperature=0.7, topP=0.9)), created="2024-12-01T00:00:00+00:00")
    two_off = Candidate("two-off", side(planned(temperature=0.5, topP=1.0)), created="2024-12-30T00:00:00+00:00")
    assert nearest(target, [two_off, one_off]).candidate.name == "one-off"  # type: ignore[union-attr]
    older = Candidate("older", side(planned(temperature=0.7, topP=0.9)), created="2024-11-01T00:00:00+00:00")
    assert nearest(target, [older, one_off]).candidate.name == "one-off"  # type: ignore[union-attr]
    failed = Candidate("failed", one_off.side, ready=False, created="2025-01-01T00:00:00+00:00")
    assert nearest(target, [failed, older]).candidate.name == "older"  # type: ignore[union-attr]
    same = Candidate("same", target)
    assert nearest(target, [same]) is None  # an equal one is a hit, never "nearest"
    assert nearest(target, []) is None
