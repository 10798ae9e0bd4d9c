"""Bad input gets a clear answer at the earliest point, and nothing else in the namespace changes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from datasweep.testing.real_configs import LLAMA_3_1_8B
from tests.e2e.operator_harness import apply, cluster_fixtures, condition, experiment, get, running_operator, wait_for


def edit(path: str, value: Any, delete: bool = False) -> Any:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        *parents, last = path.split(".")
        target = obj
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if delete:
            target.pop(last, None)
        else:
            target[last] = value
        return obj

    return change


TRAINING = {"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}, "params": {}}
COPA_FOMAML = {"task_key": "label", "prompt_template": "{premise}", "response_template": " {text}"}

# (what is wrong, change to a valid Experiment, words the rejection must contain)
REJECTED_AT_APPLY = [
    ("no datasets", edit("spec.datasets", None, delete=True), "spec.datasets: Required value"),
    ("empty datasets", edit("spec.datasets", []), "spec.datasets"),
    (
        "bad dataset name",
        edit("spec.datasets", [{"name": "my copa", "source": {"path": "x"}}]),
        "spec.datasets[0].name",
    ),
    ("unknown backend", edit("spec.generation.backend", "anthropic"), "spec.generation.backend: Unsupported value"),
    ("compatible without URL", edit("spec.generation.backend", "openai-compatible"), "needs generation.baseURL"),
    ("openai without key", edit("spec.generation.apiKeySecret", None, delete=True), "needs generation.apiKeySecret"),
    (
        "two prompt sources",
        edit("spec.generation.prompt", {"text": "x {text}", "configMapKeyRef": {"name": "p", "key": "k"}}),
        "set prompt.text or prompt.configMapKeyRef, not both",
    ),
    ("no purpose nor batch", edit("spec.purpose", None, delete=True), "set spec.purpose"),
    (
        "duplicate datasets",
        edit("spec.datasets", [{"name": "Copa", "source": {"path": "a"}}, {"name": "Copa", "source": {"path": "b"}}]),
        "dataset names must be unique",
    ),
    (
        "unknown stage kind",
        edit("spec.training", [{**TRAINING, "kind": "dpo"}]),
        "spec.training[0].kind: Unsupported value",
    ),
    ("bad stage name", edit("spec.training", [{**TRAINING, "name": "Meta_Stage"}]), "spec.training[0].name"),
    (
        "a qa param on a fomaml stage",
        edit("spec.training", [{**TRAINING, "params": {"answers_field": "answers"}}]),
        "params of a fomaml stage accept only",
    ),
    (
        "a param no stage knows",
        edit("spec.training", [{**TRAINING, "params": {"learning_rate_typo": 1}}]),
        'unknown field "spec.training[0].params.learning_rate_typo"',
    ),
    (
        "a hub id (Jobs run offline)",
        edit("spec.training", [{**TRAINING, "baseModel": {"hubId": "org/m"}}]),
        "baseModel.hubId is not supported: every Job runs offline",
    ),
    (
        "qa on two GPUs (not rank-aware)",
        edit("spec.training", [{"name": "squad", "kind": "qa", "baseModel": {"path": "m"}, "resources": {"gpus": 2}}]),
        "moe-steer and qa run as one process on one GPU",
    ),
    ("parallelism zero", edit("spec.parallelism", 0), "spec.parallelism"),
    ("malformed batch", edit("spec.batch", "my-batch"), "spec.batch"),
    ("unknown field", edit("spec.temperature", 0.7), 'unknown field "spec.temperature"'),
    ("name not DNS", edit("metadata.name", "Copa_Temp"), "metadata.name"),
]


def valid() -> dict[str, Any]:
    return experiment("valid", purpose="bad_input")


@pytest.mark.parametrize(("case", "change", "message"), REJECTED_AT_APPLY, ids=[c[0] for c in REJECTED_AT_APPLY])
def test_rejected_at_apply(
    control_plane: Any, namespace: str, crds: None, case: str, change: Any, message: str
) -> None:
    result = apply(control_plane, namespace, change(valid()), check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert message in result.stderr, f"{case}: {result.stderr}"
    assert get(control_plane, namespace, "experiments")["items"] == []


def failed_with(control_plane: Any, ns: str, name: str) -> Any:
    obj = get(control_plane, ns, "experiment", name)
    return obj if condition(obj, "Failed").get("status") == "True" else None


# Grid axes take a value or a list: structural schemas have no such union, so the operator checks them.
ANSWERED_BY_THE_OPERATOR = [
    ("temperature a word", {"generation": {"temperature": "hot"}}, "InvalidSpec", "spec.generation.temperature"),
    ("empty temperature grid", {"generation": {"temperature": []}}, "EmptyGrid", "spec.generation.temperature"),
    ("empty model grid", {"generation": {"model": []}}, "EmptyGrid", "spec.generation.model"),
    (
        "missing secret",
        {"generation": {"apiKeySecret": {"name": "nope", "key": "api-key"}}},
        "MissingSecret",
        "spec.generation.apiKeySecret",
    ),
    (
        "missing dataset",
        {"datasets": [{"name": "Copa", "source": {"path": "not/there"}}]},
        "DatasetNotFound",
        "spec.datasets[0].source",
    ),
    (
        "grid too large",
        {"generation": {"temperature": [0.1, 0.2, 0.3]}, "maxPoints": 2},
        "TooManyPoints",
        "spec.maxPoints",
    ),
    (
        "rephrase field not in the records",
        {"generation": {"options": {"rephrase_fields": ["sentence"]}}},
        "FieldMismatch",
        "spec.generation.options.rephrase_fields",
    ),
    (
        "training field not in the records",
        {"training": [{**TRAINING, "params": {"task_key": "category", "prompt_template": "{premise}"}}]},
        "FieldMismatch",
        "spec.training[0].params.task_key",
    ),
    # training params that may be grid axes are untyped in the CRD (issue 23): CEL cannot see them
    (
        "a qa grid axis on a fomaml stage",
        {"training": [{**TRAINING, "params": {"null_margin": [0.1, 0.2]}}]},
        "InvalidSpec",
        "spec.training[0].params.null_margin",
    ),
    (
        "empty learning-rate grid",
        {"training": [{**TRAINING, "params": {"outer_lr": []}}]},
        "EmptyGrid",
        "spec.training[0].params.outer_lr",
    ),
    (
        "missing prompt",
        {"generation": {"prompt": {"configMapKeyRef": {"name": "prompts", "key": "rephrase"}}}},
        "PromptNotFound",
        "spec.generation.prompt.configMapKeyRef",
    ),
    (
        "a stage that cannot fit its GPU (Llama-3.1-8B's config.json, full fine-tune in float32)",
        {"training": [{**TRAINING, "baseModel": {"path": "models/llama-3.1-8b-config"}, "params": COPA_FOMAML}]},
        "InsufficientGPUMemory",
        "spec.training[0] meta (fomaml) needs about",
    ),
]


def test_answered_with_a_failed_condition(
    control_plane: Any,
    namespace: str,
    crds: None,
    data_root: Path,
    tmp_path: Path,
) -> None:
    cluster_fixtures(control_plane, namespace, data_root)
    config = data_root / "models" / "llama-3.1-8b-config" / "config.json"  # the config alone: no weights
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(LLAMA_3_1_8B), encoding="utf-8")
    with running_operator(namespace, data_root, tmp_path):
        for index, (_case, spec, _reason, _field) in enumerate(ANSWERED_BY_THE_OPERATOR):
            apply(control_plane, namespace, experiment(f"bad-{index}", purpose="bad_input", **spec))
        answers = {
            index: wait_for(
                f"bad-{index} failed", lambda index=index: failed_with(control_plane, namespace, f"bad-{index}")
            )
            for index in range(len(ANSWERED_BY_THE_OPERATOR))
        }
    for index, (case, _spec, reason, field) in enumerate(ANSWERED_BY_THE_OPERATOR):
        failed = condition(answers[index], "Failed")
        assert failed["reason"] == reason, case
        assert field in failed["message"], f"{case}: {failed['message']}"
        assert condition(answers[index], "Planned")["status"] == "False"
    assert get(control_plane, namespace, "artifacts")["items"] == []
    assert get(control_plane, namespace, "jobs")["items"] == []
    assert get(control_plane, namespace, "batches")["items"] == []
