"""Issue 17's probe classes on the real control plane: nothing accepted silently, every answer names the field,
nothing else is created, and a good Experiment applied afterwards is processed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from datasweep.api.experiment import parse_spec
from datasweep.api.worker import dump_worker_spec
from datasweep.core.fingerprint import short
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment
from datasweep.core.worker_spec import worker_spec_for
from datasweep.k8s.labels import consumers_of
from datasweep.store.layout import dataset_files
from tests.e2e.operator_harness import (
    apply,
    cluster_fixtures,
    condition,
    experiment,
    get,
    running_operator,
    wait_for,
    write_dataset,
)
from tests.e2e.test_bad_input import edit

TRAINING = {"name": "meta", "kind": "qa", "baseModel": {"path": "models/tiny"}, "params": {}}
BIG_PROMPT = "Rephrase {text} " + "x" * 800_000  # 800 KB


def valid(name: str = "valid") -> dict[str, Any]:
    return experiment(name, purpose="bad_input")


def without_generation(obj: dict[str, Any]) -> dict[str, Any]:
    return edit("spec.generation", None, delete=True)(obj)


def with_training(**changes: Any) -> Any:
    return edit("spec.training", [{**TRAINING, **changes}])


def artifact(name: str = "handmade", **spec: Any) -> dict[str, Any]:
    body = {
        "stage": "generate",
        "dataset": "Copa",
        "fingerprint": "f" * 64,
        "semanticName": "temp07_topp10_gpt4o",
        "storage": {"path": "_shared/Copa/temp07_topp10_gpt4o"},
        **spec,
    }
    return {"apiVersion": "datasweep.io/v1alpha1", "kind": "Artifact", "metadata": {"name": name}, "spec": body}


# (what is wrong, the object to apply, words the rejection must contain)
REJECTED_AT_APPLY: list[tuple[str, dict[str, Any], str]] = [
    # silent coercion of typed fields
    ("judge temperature a string", edit("spec.validation.temperature", "0.7")(valid()), "spec.validation.temperature"),
    ("judge temperature a boolean", edit("spec.validation.temperature", True)(valid()), "spec.validation.temperature"),
    ("parallelism a string", edit("spec.parallelism", "4")(valid()), "spec.parallelism"),
    ("maxPoints a string", edit("spec.maxPoints", "10")(valid()), "spec.maxPoints"),
    ("forceRegenerate a string", edit("spec.forceRegenerate", "yes")(valid()), "spec.forceRegenerate"),
    ("cacheVersion a number", edit("spec.cacheVersion", 1)(valid()), "spec.cacheVersion"),
    ("option a string", edit("spec.generation.options", {"concurrency": "8"})(valid()), "options.concurrency"),
    ("option unknown", edit("spec.generation.options", {"concurency": 8})(valid()), "options.concurency"),
    (
        "a field name given as a list",
        with_training(params={"answers_field": ["answers", "spans"]})(valid()),
        "spec.training[0].params.answers_field",
    ),
    # paid defaults nobody asked for
    ("training without generation", without_generation(with_training()(valid())), "spec.generation is missing"),
    ("no generation at all", without_generation(valid()), "spec.generation is missing"),
    # values the API server would refuse later (Job creation) or that make no sense
    ("cpu not a quantity", with_training(resources={"cpu": "eight"})(valid()), "spec.training[0].resources.cpu"),
    ("memory not a quantity", with_training(resources={"memory": "64 GB"})(valid()), "resources.memory"),
    ("negative cpu", with_training(resources={"cpu": "-1"})(valid()), "spec.training[0].resources.cpu"),
    ("queueName with a space", edit("spec.queueName", "team queue")(valid()), "spec.queueName"),
    ("queueName starting with -", edit("spec.queueName", "-team")(valid()), "spec.queueName"),
    ("queueName of 64 characters", edit("spec.queueName", "q" * 64)(valid()), "spec.queueName"),
    (
        "baseURL not a URL",
        edit("spec.generation", {"backend": "openai-compatible", "baseURL": "not a url"})(valid()),
        "spec.generation.baseURL",
    ),
    (
        "baseURL without a scheme",
        edit("spec.generation", {"backend": "openai-compatible", "baseURL": "vllm:8000/v1"})(valid()),
        "spec.generation.baseURL",
    ),
    (
        "baseURL ftp",
        edit("spec.generation", {"backend": "openai-compatible", "baseURL": "ftp://vllm/v1"})(valid()),
        "spec.generation.baseURL",
    ),
    (
        "800 KB prompt",
        edit("spec.generation.prompt", {"text": BIG_PROMPT})(valid()),
        "spec.generation.prompt.text: Too long",
    ),
    (
        "800 KB system prompt",
        edit("spec.generation.options", {"system_prompt": BIG_PROMPT})(valid()),
        "spec.generation.options.system_prompt: Too long",
    ),
    ("judge model of 300 characters", edit("spec.validation.model", "m" * 300)(valid()), "spec.validation.model"),
    (
        "secret name not an object name",
        edit("spec.generation.apiKeySecret", {"name": "OpenAI Key", "key": "api-key"})(valid()),
        "spec.generation.apiKeySecret.name",
    ),
    (
        "secret key with a slash",
        edit("spec.generation.apiKeySecret", {"name": "openai", "key": "api/key"})(valid()),
        "spec.generation.apiKeySecret.key",
    ),
    (
        "dataset pvc not an object name",
        edit("spec.datasets", [{"name": "Copa", "source": {"pvc": "Raw_Data", "path": "copa"}}])(valid()),
        "spec.datasets[0].source.pvc",
    ),
    (
        "api key variable with a space",
        edit("spec.generation.options", {"api_key_env": "OPENAI KEY"})(valid()),
        "spec.generation.options.api_key_env",
    ),
    # escapes
    (
        "dataset path with ..",
        edit("spec.datasets", [{"name": "Copa", "source": {"path": "../../etc"}}])(valid()),
        "spec.datasets[0].source.path",
    ),
    (
        "absolute dataset path",
        edit("spec.datasets", [{"name": "Copa", "source": {"path": "/etc"}}])(valid()),
        "spec.datasets[0].source.path",
    ),
    (
        "dataset path ending in ..",
        edit("spec.datasets", [{"name": "Copa", "source": {"path": "superglue/copa/../.."}}])(valid()),
        "relative path inside the volume",
    ),
    ("model path with ..", with_training(baseModel={"path": "../models/tiny"})(valid()), "baseModel.path"),
    ("absolute model path", with_training(baseModel={"path": "/models/tiny"})(valid()), "baseModel.path"),
    (
        "generation modelPath with ..",
        edit("spec.generation", {"backend": "transformers", "modelPath": {"path": "../m"}})(valid()),
        "spec.generation.modelPath.path",
    ),
    # hand-made Artifacts
    ("artifact path with ..", artifact(storage={"path": "../../etc"}), "spec.storage.path"),
    ("artifact path absolute", artifact(storage={"path": "/etc"}), "spec.storage.path"),
    ("artifact cpu not a quantity", artifact(resources={"cpu": "all of them"}), "spec.resources.cpu"),
]


@pytest.mark.parametrize(("case", "obj", "words"), REJECTED_AT_APPLY, ids=[c[0] for c in REJECTED_AT_APPLY])
def test_refused_at_apply(control_plane: Any, namespace: str, crds: None, case: str, obj: Any, words: str) -> None:
    result = apply(control_plane, namespace, obj, check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert words in result.stderr, f"{case}: {result.stderr[:2000]}"
    for kind in ("experiments", "artifacts"):
        assert get(control_plane, namespace, kind)["items"] == [], case


def test_what_the_schema_must_keep_accepting(control_plane: Any, namespace: str, crds: None) -> None:
    """The positive side of the same rules: numbers as quantities, a URL, a label value, dots in a path."""
    good = valid("accepted")
    good["spec"]["datasets"] = [{"name": "Copa", "source": {"path": "superglue/copa..v2/./x"}}]
    good["spec"]["generation"] = {
        "backend": "openai-compatible",
        "baseURL": "http://vllm.models.svc:8000/v1",
        "model": ["a", "b"],
        "temperature": [0, 0.7],
        "options": {"concurrency": 8, "system_prompt": "Be brief."},
    }
    good["spec"]["queueName"] = "team-a.gpu_1"
    good["spec"]["training"] = [{**TRAINING, "resources": {"cpu": 8, "memory": "64Gi", "gpus": 1}}]
    result = apply(control_plane, namespace, good, check=False)
    assert result.returncode == 0, result.stderr
    hand = artifact("handmade-ok", resources={"cpu": "500m", "memory": 1073741824})
    assert apply(control_plane, namespace, hand, check=False).returncode == 0


def failed(control_plane: Any, ns: str, name: str) -> Any:
    obj = get(control_plane, ns, "experiment", name)
    return obj if condition(obj, "Failed").get("status") == "True" else None


def planned(control_plane: Any, ns: str, name: str) -> Any:
    obj = get(control_plane, ns, "experiment", name)
    return obj if condition(obj, "Planned").get("status") == "True" else None


AXIS_100 = [round(0.01 * i, 2) for i in range(100)]

# Only the operator can answer these: grid axes are untyped in the CRD (a value or a list), templates need
# the dataset's records, symlinks need the volume. (case, spec changes, reason, field)
ANSWERED_BY_THE_OPERATOR = [
    ("temperature a string", {"generation": {"temperature": "0.7"}}, "InvalidSpec", "spec.generation.temperature"),
    ("temperature a boolean", {"generation": {"temperature": True}}, "InvalidSpec", "spec.generation.temperature"),
    ("maxTokens a string", {"generation": {"maxTokens": "256"}}, "InvalidSpec", "spec.generation.maxTokens"),
    ("maxTokens a fraction", {"generation": {"maxTokens": 256.5}}, "InvalidSpec", "spec.generation.maxTokens"),
    ("topP a string", {"generation": {"topP": "1.0"}}, "InvalidSpec", "spec.generation.topP"),
    ("a string in a list", {"generation": {"temperature": [0.5, "0.7"]}}, "InvalidSpec", "spec.generation.temperature"),
    ("model a number", {"generation": {"model": 4}}, "InvalidSpec", "spec.generation.model"),
    # training params that may be grid axes are untyped too (issue 23)
    (
        "training param a string",
        {"training": [{**TRAINING, "params": {"learning_rate": "0.00002"}}]},
        "InvalidSpec",
        "spec.training[0].params.learning_rate",
    ),
    (
        "training param a boolean",
        {"training": [{**TRAINING, "params": {"num_train_epochs": True}}]},
        "InvalidSpec",
        "spec.training[0].params.num_train_epochs",
    ),
    (
        "a string in a training list",
        {"training": [{**TRAINING, "params": {"learning_rate": [1e-5, "fast"]}}]},
        "InvalidSpec",
        "spec.training[0].params.learning_rate",
    ),
    (
        "temperature out of range",
        {"generation": {"temperature": [0.5, 7]}},
        "InvalidSpec",
        "spec.generation.temperature",
    ),
    ("model name of 300 characters", {"generation": {"model": "m" * 300}}, "NameTooLong", "spec.generation.model"),
    (
        "a million combinations",
        {
            "generation": {
                "temperature": AXIS_100,
                "topP": [0.01 * i for i in range(1, 101)],
                "maxTokens": list(range(1, 101)),
            }
        },
        "TooManyPoints",
        "spec.maxPoints",
    ),
    (
        "unbalanced brace",
        {"generation": {"prompt": {"text": "Rephrase {text"}}},
        "InvalidTemplate",
        "spec.generation.prompt: not a valid template",
    ),
    (
        "stray closing brace",
        {"generation": {"prompt": {"text": "Rephrase } {text}"}}},
        "InvalidTemplate",
        "spec.generation.prompt: not a valid template",
    ),
    (
        "unknown record field",
        {"generation": {"prompt": {"text": "Rephrase {sentence}"}}},
        "FieldMismatch",  # core/shape.py answers first (issue 13); preflight renders the rest
        "spec.generation.prompt: template field 'sentence'",
    ),
    (
        "bad format spec",
        {"generation": {"prompt": {"text": "{text} ({premise:d})"}}},
        "InvalidTemplate",
        "spec.generation.prompt: cannot be rendered",
    ),
    (
        "unknown field in the judge's template",
        {"validation": {"prompt": {"text": "{original} vs {rephrased}: {verdict}"}}},
        "InvalidTemplate",
        "spec.validation.prompt: {verdict} is not a field",
    ),
    (
        "unknown field in a ConfigMap prompt",
        {"generation": {"prompt": {"configMapKeyRef": {"name": "prompts", "key": "bad"}}}},
        "FieldMismatch",
        "spec.generation.prompt: template field 'sentence'",
    ),
    (
        "dataset symlink out of the volume",
        {"datasets": [{"name": "Copa", "source": {"path": "escape"}}]},
        "PathOutsideVolume",
        "spec.datasets[0].source.path",
    ),
]


def test_answered_with_a_failed_condition_then_a_good_experiment_is_processed(
    control_plane: Any, namespace: str, crds: None, data_root: Path, tmp_path: Path
) -> None:
    cluster_fixtures(control_plane, namespace, data_root)
    outside = write_dataset(tmp_path / "outside", path="copa")
    (data_root / "escape").symlink_to(outside)
    control_plane.kubectl("create", "configmap", "prompts", "-n", namespace, "--from-literal=bad=Rephrase {sentence}")
    with running_operator(namespace, data_root, tmp_path):
        for index, (_case, spec, _reason, _field) in enumerate(ANSWERED_BY_THE_OPERATOR):
            apply(control_plane, namespace, experiment(f"bad-{index}", purpose="bad_input", **spec))
        answers = {
            index: wait_for(f"bad-{index} failed", lambda index=index: failed(control_plane, namespace, f"bad-{index}"))
            for index in range(len(ANSWERED_BY_THE_OPERATOR))
        }
        for kind in ("artifacts", "jobs", "batches"):
            assert get(control_plane, namespace, kind)["items"] == [], kind
        apply(control_plane, namespace, valid("good-after"))
        wait_for("the good Experiment planned", lambda: planned(control_plane, namespace, "good-after"))
        artifacts = wait_for("its Artifact", lambda: get(control_plane, namespace, "artifacts")["items"])
    for index, (case, _spec, reason, field) in enumerate(ANSWERED_BY_THE_OPERATOR):
        answer = condition(answers[index], "Failed")
        assert answer["reason"] == reason, f"{case}: {answer}"
        assert field in answer["message"], f"{case}: {answer['message']}"
        assert condition(answers[index], "Planned")["status"] == "False", case
    assert len(artifacts) == 1
    assert artifacts[0]["metadata"]["annotations"]["datasweep.io/first-experiment"] == "good-after"


def _planned_generate(obj: dict[str, Any], data_root: Path) -> StagePlan:
    """The generate stage the operator will plan for `obj` (the planner is pure: same inputs, same name)."""
    sha = dataset_files(data_root / "superglue/copa", "Copa").sha256
    plan = plan_experiment(parse_spec(obj["spec"]), PlanInputs({"Copa": sha}, created=datetime.now(UTC)))
    return plan.points[0].generate


def test_a_foreign_artifact_under_a_planned_name_is_not_reused(
    control_plane: Any, namespace: str, crds: None, data_root: Path, tmp_path: Path
) -> None:
    cluster_fixtures(control_plane, namespace, data_root)
    victim = valid("victim")
    stage = _planned_generate(victim, data_root)
    impostor = artifact(stage.artifact, semanticName=stage.semantic_name, storage={"path": "_shared/Copa/poisoned"})
    apply(control_plane, namespace, impostor)
    with running_operator(namespace, data_root, tmp_path):
        apply(control_plane, namespace, victim)
        answer = wait_for("victim failed", lambda: failed(control_plane, namespace, "victim"))
        events = wait_for(
            "a NameClash event",
            lambda: (
                get(control_plane, namespace, "events")["items"]
                and [e for e in get(control_plane, namespace, "events")["items"] if e.get("reason") == "NameClash"]
            ),
        )
        other = experiment("after", purpose="bad_input", generation={"temperature": 0.9})
        apply(control_plane, namespace, other)
        wait_for("the good Experiment planned", lambda: planned(control_plane, namespace, "after"))
    message = condition(answer, "Failed")["message"]
    assert condition(answer, "Failed")["reason"] == "NameClash"
    assert stage.fingerprint in message, message
    assert "f" * 64 in message, message
    assert stage.artifact in events[0]["message"]
    kept = get(control_plane, namespace, "artifact", stage.artifact)
    assert kept["spec"]["fingerprint"] == "f" * 64
    assert "victim" not in consumers_of(kept["metadata"], kept.get("status") or {})
    jobs = get(control_plane, namespace, "jobs", selector=f"datasweep.io/fingerprint={short(stage.fingerprint)}")
    assert jobs["items"] == []
    assert json.dumps(answer.get("status", {})).count("_shared/Copa/poisoned") == 0


def _artifact_phase(control_plane: Any, ns: str, name: str, phase: str) -> Any:
    obj = get(control_plane, ns, "artifact", name)
    return obj if (obj.get("status") or {}).get("phase") == phase else None


def test_hand_made_artifacts_that_cannot_be_produced_fail_with_a_reason(
    control_plane: Any, namespace: str, crds: None, data_root: Path, tmp_path: Path
) -> None:
    cluster_fixtures(control_plane, namespace, data_root)
    # A real planned Artifact's worker spec, so that only the wrong part of each case is wrong.
    good = _planned_generate(valid("template"), data_root)

    worker = {
        "workerSpec": dump_worker_spec(
            worker_spec_for(good, data_root="/data", relpath="_shared/Copa/x", batch="b", experiment="e")
        )
    }
    cases = {  # name: (spec changes, reason, words)
        "self-loop": ({"inputs": ["self-loop"], "worker": worker}, "InputCycle", "self-loop -> self-loop"),
        "loop-a": ({"inputs": ["loop-b"], "worker": worker}, "InputCycle", "loop-a -> loop-b -> loop-a"),
        "loop-b": ({"inputs": ["loop-a"], "worker": worker}, "InputCycle", "loop-b -> loop-a -> loop-b"),
        "dangling": ({"inputs": ["nowhere"], "worker": worker}, "InputMissing", "nowhere does not exist after"),
        "no-worker-spec": ({}, "InvalidWorkerSpec", "spec.worker.workerSpec"),
        "bad-worker-spec": ({"worker": {"workerSpec": "stage: generate\n"}}, "InvalidWorkerSpec", "fingerprint"),
    }
    with running_operator(namespace, data_root, tmp_path, inputWaitTimeoutSeconds=3):
        for name, (spec, _reason, _words) in cases.items():
            apply(control_plane, namespace, artifact(name, **spec))
        answers = {
            name: wait_for(
                f"{name} failed", lambda name=name: _artifact_phase(control_plane, namespace, name, "Failed")
            )
            for name in cases
        }
        assert get(control_plane, namespace, "jobs")["items"] == []
        apply(control_plane, namespace, valid("good-after"))
        wait_for("the good Experiment planned", lambda: planned(control_plane, namespace, "good-after"))
    for name, (_spec, reason, words) in cases.items():
        ready = condition(answers[name], "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason), f"{name}: {ready}"
        assert words in ready["message"], f"{name}: {ready['message']}"


def test_a_job_whose_pods_cannot_be_created_fails_its_artifact_saying_why(
    control_plane: Any, namespace: str, crds: None, data_root: Path, tmp_path: Path
) -> None:
    cluster_fixtures(control_plane, namespace, data_root)
    config = {"jobDefaults": {"serviceAccountName": "no-such-account"}, "podsNotCreatedTimeoutSeconds": 5}
    with running_operator(namespace, data_root, tmp_path, **config):
        apply(control_plane, namespace, valid("no-pods"))
        artifacts = wait_for("its Artifact", lambda: get(control_plane, namespace, "artifacts")["items"])
        name = artifacts[0]["metadata"]["name"]
        failing = wait_for(
            "PodsNotCreated",
            lambda: (
                (a := get(control_plane, namespace, "artifact", name))
                and condition(a, "Ready").get("reason") == "PodsNotCreated"
                and a
            ),
        )
        answer = wait_for("the Artifact failed", lambda: _artifact_phase(control_plane, namespace, name, "Failed"))
    assert 'serviceaccount "no-such-account" not found' in condition(failing, "Ready")["message"]
    ready = condition(answer, "Ready")
    assert ready["reason"] == "PodsNotCreated"
    assert "could not create its pods" in ready["message"]
    assert "no-such-account" in ready["message"]
