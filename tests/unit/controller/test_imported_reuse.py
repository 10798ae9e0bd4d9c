"""The operator's reuse of an imported seed-format directory (`datasweep import --cluster --source`), without a
cluster: the imported Artifact as the import writes it, its index entry, the plan the Experiment handler then
follows (no generate Artifact for the matching point, training nested under the imported path) and the counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from datasweep.api.experiment import ExperimentSpec
from datasweep.api.settings import OperatorSettings
from datasweep.cli.maintenance import imported_artifact_body, scan_seed_tree
from datasweep.controller import experiment as controller
from datasweep.controller.aggregate import Planned, summarize_experiment
from datasweep.controller.indices import artifact_index, artifact_info
from datasweep.k8s import labels
from datasweep.store.layout import dataset_files
from datasweep.testing.seed_tree import JUDGE, NAME, REPHRASE, seed_generated_dir

CREATED = datetime(2025, 1, 5, tzinfo=UTC)
IMPORTED_PATH = f"_shared/Copa/{NAME}"


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data volume: a Copa source and, beside it, seed 000's directory generated from it."""
    source = tmp_path / "raw" / "copa"
    source.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = [{"id": f"{split}-{i}", "text": f"The man broke his toe ({split} {i})."} for i in range(2)]
        (source / f"copa_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    seed_generated_dir(tmp_path, source)
    monkeypatch.setattr(controller, "settings", lambda: OperatorSettings(data_root=str(tmp_path)))
    monkeypatch.setattr(controller.client, "secret_has_key", lambda *_: True)
    return tmp_path


def imported_body(data_root: Path, source: bool = True) -> dict[str, Any]:
    """The Artifact `datasweep import --cluster [--source Copa=raw/copa]` creates, with the status it writes."""
    (item,) = scan_seed_tree(data_root)[0]
    artifact = item.artifact
    if source:
        sha256 = dataset_files(data_root / "raw" / "copa", "Copa").sha256
        artifact = artifact.model_copy(update={"source_sha256": sha256})
    body = imported_artifact_body(artifact)
    body["metadata"]["resourceVersion"] = "1"
    body["status"] = {"phase": artifact.phase, "firstBatch": artifact.first_batch}
    return body


def index_of(*bodies: dict[str, Any]) -> dict[Any, list[Any]]:
    """What Kopf's artifact index holds for these objects (key -> values)."""
    index: dict[Any, list[Any]] = {}
    for body in bodies:
        name = body["metadata"]["name"]
        for key, value in artifact_index(namespace="ns", name=name, body=body).items():
            index.setdefault(key, []).append(value)
    return index


def spec(**changes: Any) -> ExperimentSpec:
    training = {"task_key": "id", "prompt_template": "{text}", "response_template": " {text}"}
    return ExperimentSpec.model_validate(
        {
            "batch": "batch_20250105_reuse",
            "datasets": [{"name": "Copa", "source": {"path": "raw/copa"}}],
            "generation": {
                "model": "gpt-4o",
                "apiKeySecret": {"name": "openai", "key": "api-key"},
                "temperature": [0.7, 0.9],
                "topP": 1.0,
                "prompt": {"text": REPHRASE},
            },
            "validation": {"model": "gpt-4o", "temperature": 0.0, "prompt": {"text": JUDGE}},
            "training": [{"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/m"}, "params": training}],
            **changes,
        }
    )


def test_the_index_keeps_what_a_match_reads(data_root: Path) -> None:
    body = imported_body(data_root)
    assert body["metadata"]["labels"][labels.IMPORTED] == "true"
    info = artifact_info(body["metadata"]["name"], body)
    assert (info.imported, info.dataset, info.path) == (True, "Copa", IMPORTED_PATH)
    assert info.source_sha256 == body["metadata"]["annotations"][labels.SOURCE_SHA256]
    assert sorted(info.params) == sorted(body["spec"]["params"])  # the seed recorded only what a match reads
    body["spec"]["params"]["note"] = "a long note the seed kept " * 100
    assert "note" not in artifact_info(body["metadata"]["name"], body).params
    assert ("imported", "ns", "Copa") in index_of(body)
    # without --source: nothing to match, no entry
    assert ("imported", "ns", "Copa") not in index_of(imported_body(data_root, source=False))


def test_the_matching_point_reads_the_imported_directory_and_counts_as_reused(data_root: Path) -> None:
    body = imported_body(data_root)
    imported = body["metadata"]["name"]
    plan = controller.plan_for("ns", spec(), CREATED)
    planned_generate = {p.values["temperature"]: p.generate.artifact for p in plan.points}

    reused_plan, reused = controller._reuse_imported("ns", plan, index_of(body))
    first, second = reused_plan.points
    assert first.values["temperature"] == 0.7
    assert first.generate.artifact == imported  # its planned generate Artifact is never created
    assert first.training[0].inputs == (imported,)
    assert second.generate.artifact == planned_generate[0.9]  # not recorded so: generated
    planned, match, _ = reused[imported]
    assert planned.artifact == planned_generate[0.7]
    assert match.path == IMPORTED_PATH
    assert match.matched[1] == "gen_temperature=0.7"
    assert match.matched[-1] == "dataset sha256"

    paths = {imported: IMPORTED_PATH}
    train_path = controller._storage_path(first.training[0], paths)
    assert train_path.startswith(f"{IMPORTED_PATH}/train/fomaml-")
    details = controller._worker_details(spec(), first.training[0], train_path, paths, batch="b", experiment="e")
    assert yaml.safe_load(details["workerSpec"])["inputs"] == {"data": f"/data/{IMPORTED_PATH}"}

    # The Experiment's counts once the consumer labels are on the imported Artifact and all else is Ready.
    body["metadata"]["labels"].update(labels.consumer_marks("reuse", "batch-20250105-reuse")["labels"])
    mine = {"metadata": {"annotations": {labels.FIRST_EXPERIMENT: "reuse"}}, "status": {"phase": "Ready"}}
    infos = [artifact_info(imported, body)] + [
        artifact_info(stage.artifact, {**mine, "spec": {"stage": stage.stage, "inputs": list(stage.inputs)}})
        for stage in reused_plan.stages
        if stage.artifact != imported
    ]
    counts = summarize_experiment(
        "reuse",
        Planned(
            points=2,
            stages=2,
            generate=frozenset(p.generate.artifact for p in reused_plan.points),
            artifacts=frozenset(s.artifact for s in reused_plan.stages),
            batch_object="batch-20250105-reuse",
            generation=1,
        ),
        infos,
        20,
    )["counts"]
    assert counts == {
        "points": 2,
        "artifacts": 4,
        "reused": 1,
        "created": 1,
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
    }


def test_no_reuse_without_a_match_or_with_an_artifact_of_its_own(data_root: Path) -> None:
    body = imported_body(data_root)
    plan = controller.plan_for("ns", spec(), CREATED)
    for index in (
        index_of(imported_body(data_root, source=False)),  # imported without --source
        index_of({**body, "status": {"phase": "Pending"}}),  # not Ready
    ):
        assert controller._reuse_imported("ns", plan, index) == (plan, {})
    other_judge = spec(validation={"model": "gpt-4o", "temperature": 0.0, "prompt": {"text": JUDGE + "!"}})
    other_plan = controller.plan_for("ns", other_judge, CREATED)
    assert controller._reuse_imported("ns", other_plan, index_of(body)) == (other_plan, {})
    # the point's own Artifact exists (made before the import): it stays the point's
    own = plan.points[0].generate.artifact
    own_body = {"metadata": {"name": own}, "spec": {"stage": "generate"}, "status": {"phase": "Ready"}}
    assert controller._reuse_imported("ns", plan, index_of(body, own_body)) == (plan, {})
    # its data gone from the volume (the manifest the import wrote): not reused
    (data_root / IMPORTED_PATH / "manifest.json").unlink()
    assert controller._reuse_imported("ns", plan, index_of(body)) == (plan, {})
