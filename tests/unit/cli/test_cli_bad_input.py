"""`datasweep plan` and `datasweep run` refuse bad input as the operator does (issue 17): exit 2, the field
named, nothing created under the store root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import generation

from conftest import Invoke


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": "bad_input",
        "datasets": [{"name": "Copa", "source": {"path": "raw/superglue/copa"}}],
        "generation": generation(None),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


TRAINING = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}}

CASES = [
    ("temperature a string", spec(generation={"temperature": "0.7"}), "spec.generation.temperature"),
    ("temperature a boolean", spec(generation={"temperature": True}), "spec.generation.temperature"),
    ("maxTokens a string", spec(generation={"maxTokens": "256"}), "spec.generation.maxTokens"),
    ("no generation", {k: v for k, v in spec(training=[TRAINING]).items() if k != "generation"}, "spec.generation"),
    ("dataset path with ..", spec(datasets=[{"name": "Copa", "source": {"path": "../copa"}}]), "source.path"),
    ("absolute dataset path", spec(datasets=[{"name": "Copa", "source": {"path": "/etc"}}]), "source.path"),
    ("bad queue", spec(queueName="my queue"), "spec.queueName"),
    ("bad cpu", spec(training=[{**TRAINING, "resources": {"cpu": "lots"}}]), "resources.cpu"),
    (
        "unbalanced brace",
        spec(generation={"prompt": {"text": "Rephrase {text"}}),
        "spec.generation.prompt: not a valid template",
    ),
    (
        "unknown record field",
        spec(generation={"prompt": {"text": "Rephrase {sentence}"}}),
        "spec.generation.prompt: template field 'sentence'",
    ),
    (
        "unknown field in the judge's template",
        spec(validation={"model": "gpt-4o", "prompt": {"text": "{original} vs {rephrased}: {label}"}}),
        "spec.validation.prompt: {label} is not a field",
    ),
    ("model name too long", spec(generation={"model": "m" * 300}), "spec.generation.model"),
    (
        "a million combinations",
        spec(
            generation={
                "temperature": [i / 100 for i in range(100)],
                "topP": [i / 100 for i in range(1, 101)],
                "maxTokens": list(range(1, 101)),
            }
        ),
        "1000000 points",
    ),
]


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize(("case", "body", "words"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_exit_2_naming_the_field(
    command: str,
    case: str,
    body: dict[str, Any],
    words: str,
    workspace: Path,
    write_experiment: Callable[..., Path],
    invoke: Invoke,
) -> None:
    path = write_experiment("bad", body)
    root = workspace / "root"
    result = invoke(command, path, "--root", root, expect=2)
    assert words in result.output, f"{case}: {result.output}"
    assert not root.exists() or not any(root.iterdir()), f"{case}: something was created"
