"""`datasweep why` and plan's WHY column on a local store (fake workers: fast)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, fake_model, fake_worker_command, generation

from conftest import Invoke
from datasweep import recipes

BATCH = "batch_20250101_why"


def spec(temperature: float, prompt: str = "Rephrase:\n{text}\nKeep the meaning.") -> dict[str, Any]:
    return {
        "batch": BATCH,
        "datasets": copa_dataset(),
        "generation": {**generation(None, temperature=temperature), "prompt": {"text": prompt}},
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }


def test_why_names_the_changed_temperature_and_who_made_a_hit(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    first = write_experiment("why-first", spec(0.7))
    invoke("run", first, "--root", root, "--worker-command", fake_worker_command())

    hit = invoke("why", first, "--root", root).stdout
    assert "Copa/temp07_topp10_gpt4o generate: hit" in hit
    assert f"made by experiment why-first for batch {BATCH}, completed " in hit
    (entry,) = json.loads(invoke("why", first, "--root", root, "-o", "json").stdout)["stages"]
    assert entry["status"] == "hit"
    assert entry["producedBy"]["experiment"] == "why-first"
    assert entry["producedBy"]["batch"] == BATCH
    assert entry["producedBy"]["completedAt"]

    second = write_experiment("why-second", spec(0.75))
    missed = invoke("why", second, "--root", root).stdout
    assert "Copa/temp075_topp10_gpt4o generate: MISS" in missed
    assert "nearest: copa-temp07-topp10-gpt4o-" in missed
    assert "1 field differs:\n    temperature 0.7 → 0.75\n" in missed
    assert "  request store: 0 of 10 requests stored, 0 of 5 rows fully; 10 to send\n" in missed  # fake workers
    (miss,) = json.loads(invoke("why", second, "--root", root, "-o", "json").stdout)["stages"]
    assert [d["field"] for d in miss["nearest"]["differences"]] == ["temperature"]

    wide = invoke("plan", second, "--root", root, "-o", "wide").stdout
    assert "WHY" in wide
    assert "temperature 0.7 → 0.75" in wide

    # a changed prompt line and a changed dataset file, against the same nearest Artifact
    third = write_experiment("why-third", spec(0.75, prompt="Rephrase:\n{text}\nKeep the meaning, please."))
    with (workspace / "raw" / "superglue" / "copa" / "copa_test.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "test-9", "text": "One more."}) + "\n")
    changed = invoke("why", third, "Copa/temp075_topp10_gpt4o", "--root", root).stdout
    assert "3 fields differ:\n    dataset sha256 changed: 1 file\n" in changed
    assert "    prompt: line 3 differs\n" in changed
    assert "    temperature 0.7 → 0.75\n" in changed
    assert "temperature 0.7 → 0.75 (+2 more)" not in changed  # the full list here; plan shows the summary
    wide = invoke("plan", third, "--root", root, "-o", "wide").stdout
    assert "dataset sha256 changed: 1 file (+2 more)" in wide


def test_why_of_an_experiment_by_name_and_of_an_unknown_one(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    invoke("run", write_experiment("why-a", spec(0.7)), "--root", root, "--worker-command", fake_worker_command())
    invoke("run", write_experiment("why-b", spec(0.9)), "--root", root, "--worker-command", fake_worker_command())
    made = invoke("why", "why-b", "--root", root).stdout
    assert "Copa/temp09_topp10_gpt4o generate: MISS" in made
    assert "temperature 0.7 → 0.9" in made
    unknown = invoke("why", "why-z", "--root", root, expect=2).output
    assert "'why-z' is neither an experiment file nor an experiment" in unknown
    assert "why-a, why-b" in unknown
    wrong_point = invoke("why", "why-b", "Copa/nothing", "--root", root, expect=2).output
    assert "'Copa/nothing': no point of experiment why-b" in wrong_point


def test_why_of_a_training_stage_names_its_parameter_and_its_data_hit(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    fake_model(workspace / "models" / "tiny")
    root = workspace / "root"

    def with_training(inner_lr: float) -> dict[str, Any]:
        stage = {
            "name": "meta",
            "kind": "fomaml",
            "baseModel": {"path": "models/tiny"},
            "params": {
                "task_key": "id",
                "prompt_template": "{text}",
                "response_template": " {id}",
                "inner_lr": inner_lr,
            },
        }
        return {**spec(0.7), "training": [stage]}

    first = write_experiment("why-train", with_training(0.01))
    invoke("run", first, "--root", root, "--worker-command", fake_worker_command())
    second = write_experiment("why-train-2", with_training(0.02))
    shown = invoke("why", second, "--root", root).stdout
    assert "Copa/temp07_topp10_gpt4o generate: hit " in shown
    assert "Copa/temp07_topp10_gpt4o meta: MISS" in shown
    assert "1 field differs:\n    inner_lr 0.01 → 0.02\n" in shown


def test_why_names_the_recipe_after_a_bump(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fix to result-deciding code bumps the kind's recipe: the point misses, and why says it was the recipe
    root = workspace / "root"
    first = write_experiment("why-recipe", spec(0.7))
    invoke("run", first, "--root", root, "--worker-command", fake_worker_command())
    bumped = dataclasses.replace(recipes.RECIPES["generate"], version=recipes.RECIPES["generate"].version + 1)
    monkeypatch.setitem(recipes.RECIPES, "generate", bumped)
    missed = invoke("why", first, "--root", root).stdout
    assert "Copa/temp07_topp10_gpt4o generate: MISS" in missed
    assert f"1 field differs:\n    recipe {bumped.version - 1} → {bumped.version}\n" in missed
    assert (
        f"recipe {bumped.version - 1} → {bumped.version}" in invoke("plan", first, "--root", root, "-o", "wide").stdout
    )


def test_why_still_explains_a_miss_whose_requests_cannot_be_counted(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    local = spec(0.7)
    local["generation"] = {"backend": "transformers", "model": "no-such-model-directory", "temperature": 0.7}
    missed = invoke("why", write_experiment("why-local", local), "--root", workspace / "root").stdout
    assert "generate: MISS" in missed
    assert "  request store: not counted: backend transformers needs a local model directory" in missed
