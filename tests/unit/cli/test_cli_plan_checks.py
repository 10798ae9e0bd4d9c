"""`plan` catches what `run` would refuse (issue 25, items 5 and 6): each bad case fails `plan` with exit 2 and
the same message `run` then gives, before anything is claimed; and an experiment file means what kubectl reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import dedent, fake_model, fake_worker_command, generation

from conftest import Invoke


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": "checks",
        "datasets": [{"name": "Copa", "source": {"path": "raw/superglue/copa"}}],
        "generation": generation(None),
    }
    body.update(overrides)
    return body


def fomaml(path: str = "models/tiny") -> list[dict[str, Any]]:
    params = {"task_key": "id", "prompt_template": "{text}", "response_template": " {id}"}
    return [{"name": "meta", "kind": "fomaml", "baseModel": {"path": path}, "params": params}]


def steer(split: str) -> list[dict[str, Any]]:
    params = {"split": split, "safe_field": "text", "unsafe_field": "text"}
    return [{"name": "steer", "kind": "moe-steer", "baseModel": {"path": "models/tiny"}, "params": params}]


def no_api_key(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")


def model_without_config(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    (workspace / "models" / "empty").mkdir(parents=True)


def renamed_splits(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    """The dataset is named Copa, its files say copa2: the generate worker finds no split of Copa."""
    source = workspace / "raw" / "superglue" / "copa"
    for path in source.glob("copa_*.jsonl"):
        path.rename(source / path.name.replace("copa_", "copa2_"))


def nothing(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    pass


Setup = Callable[[pytest.MonkeyPatch, Path], None]
CASES: list[tuple[str, dict[str, Any], Setup, list[str]]] = [
    (
        "baseModel.path typo",
        spec(training=fomaml("models/tiyn")),
        nothing,
        ["spec.training[0].baseModel.path:", "models/tiyn is not a directory"],
    ),
    (
        "a model directory without config.json",
        spec(training=fomaml("models/empty")),
        model_without_config,
        ["spec.training[0].baseModel.path:", "holds no config.json", "found: nothing"],
    ),
    (
        "missing API key",
        spec(),
        no_api_key,
        ["spec.generation.apiKeySecret: the API key is missing: environment variable OPENAI_API_KEY is not set"],
    ),
    (
        "missing dataset split, the files found listed",
        spec(),
        renamed_splits,
        [
            "spec.datasets[0] (Copa):",
            "no split of dataset 'Copa' found; expected one of copa_train.jsonl",
            "found: copa2_test.jsonl, copa2_train.jsonl, copa2_validation.jsonl",
        ],
    ),
    (
        "missing split of a training stage",
        spec(training=steer("dev")),
        nothing,
        [
            "spec.training[0].params.split: no dev split in dataset Copa",
            "files found: copa_train.jsonl, copa_validation.jsonl, copa_test.jsonl",
        ],
    ),
    (
        "a local judge model that is not a directory",
        spec(
            generation={"backend": "transformers", "model": "tiny", "modelPath": {"path": "models/tiny"}},
            validation={"model": "judge", "temperature": 0.0},
        ),
        nothing,
        ["spec.generation: backend transformers: params.validation.model ('judge') must be a local directory"],
    ),
    (
        "missing dataset field (the id field)",
        spec(generation={**generation(None), "options": {"id_field": "uid"}}),
        nothing,
        ["spec.datasets[0] (Copa):", "copa_train.jsonl:1: missing id field 'uid' (params.id_field)"],
    ),
    (
        "missing dataset field (a training field)",
        spec(training=[{**fomaml()[0], "params": {**fomaml()[0]["params"], "task_key": "category"}}]),
        nothing,
        ["spec.training[0].params.task_key: field 'category' is not in the Copa records"],
    ),
]


def error_of(output: str) -> str:
    """What the command refused with (from `Error:`), without the line naming the store."""
    return output[output.index("Error:") :]


@pytest.mark.parametrize(("case", "body", "setup", "words"), CASES, ids=[c[0] for c in CASES])
def test_plan_refuses_first_with_the_message_run_gives(
    case: str,
    body: dict[str, Any],
    setup: Setup,
    words: list[str],
    workspace: Path,
    write_experiment: Callable[..., Path],
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_model(workspace / "models" / "tiny")
    setup(monkeypatch, workspace)
    path = write_experiment("checks", body)
    root = workspace / "root"
    planned = invoke("plan", path, "--root", root, expect=2)
    for word in words:
        assert word in planned.output, f"{case}: {planned.output}"
    assert not root.exists(), f"{case}: plan created something"
    ran = invoke("run", path, "--root", root, "--worker-command", fake_worker_command(), expect=2)
    assert error_of(ran.output) == error_of(planned.output), case
    assert not root.exists() or not any(root.iterdir()), f"{case}: run claimed something"


def test_a_rerun_of_finished_work_needs_no_api_key(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is checked for the generate stages that will send requests, not for those already complete."""
    path = write_experiment("checks", spec())
    root = workspace / "root"
    invoke("run", path, "--root", root, "--worker-command", fake_worker_command())
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "1 hits, 0 misses" in invoke("plan", path, "--root", root).output
    assert "1 points: 1 reused, 0 created" in invoke("run", path, "--root", root).output


def test_learning_rate_1e_5_as_kubectl_reads_it_plans_and_runs_locally(
    workspace: Path, invoke: Invoke, write_experiment: Callable[..., Path]
) -> None:
    """`1e-5` is a float as kubectl reads it (YAML 1.1 made it a string); a quoted `'on'` is a string."""
    fake_model(workspace / "models" / "tiny")
    path = workspace / "lr.yaml"
    path.write_text(
        dedent(
            """
            apiVersion: datasweep.io/v1alpha1
            kind: Experiment
            metadata: {name: lr-1e-5}
            spec:
              purpose: lr
              cacheVersion: 'on'
              datasets: [{name: Copa, source: {path: raw/superglue/copa}}]
              generation: {backend: openai, model: gpt-4o, temperature: 7e-1}
              training:
                - name: squad
                  kind: qa
                  baseModel: {path: models/tiny}
                  params: {learning_rate: 1e-5, id_field: id, question_field: text, context_field: text,
                           answers_field: text}
            """
        ),
        encoding="utf-8",
    )
    planned = json.loads(invoke("plan", path, "--root", workspace / "root", "-o", "json").stdout)
    assert [s["kind"] for s in planned["stages"]] == ["generate", "qa"]
    root = workspace / "root"
    invoke("run", path, "--root", root, "--worker-command", fake_worker_command())
    specs = {p.name.split("-")[-2]: yaml.safe_load(p.read_text()) for p in root.glob(".datasweep/specs/*.yaml")}
    qa = next(s for s in specs.values() if s["stage"] == "qa")
    assert qa["params"]["learning_rate"] == 1e-5
    generate = next(s for s in specs.values() if s["stage"] == "generate")
    assert generate["params"]["temperature"] == 0.7
    assert generate["params"]["cache_version"] == "on"


def test_the_cluster_name_rules_apply_locally(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    path = write_experiment("Err_Test", spec(), file_name="err.yaml")
    for command in ("plan", "run"):
        result = invoke(command, path, "--root", workspace / "root", expect=2)
        assert "metadata.name: 'Err_Test' is not a valid Kubernetes object name" in result.output
        assert "e.g. err-test" in result.output
