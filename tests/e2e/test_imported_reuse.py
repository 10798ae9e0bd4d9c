"""Issue 15 (seed 000) on the cluster: a seed-format directory imported with `datasweep import --cluster --source`
is reused by the Experiment point whose recorded parameters, prompt hashes and dataset hash match; the operator
creates no generate Artifact or Job for that point, its training stage nests under (and reads) the imported
directory, the imported Artifact gains the point's consumer labels and the Experiment counts it as reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from datasweep.cli.main import cli
from datasweep.k8s import labels
from datasweep.testing.seed_tree import JUDGE, NAME, REPHRASE, seed_generated_dir
from tests.e2e.operator_harness import apply, experiment, get, running_operator, wait_for

IMPORTED_PATH = f"_shared/Copa/{NAME}"
BATCH = "batch_20250105_reuse"


def cli_run(*args: str | Path) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def reuse_experiment() -> dict[str, Any]:
    """Two points: temperature 0.7 is what the seed generated (same model, prompts, judge, data), 0.9 is not."""
    training = {"task_key": "label", "prompt_template": "{premise}", "response_template": " {label}"}
    return experiment(
        "reuse",
        batch=BATCH,
        purpose="reuse",
        generation={"temperature": [0.7, 0.9], "topP": 1.0, "prompt": {"text": REPHRASE}},
        validation={"model": "gpt-4o", "temperature": 0.0, "prompt": {"text": JUDGE}},
        training=[{"name": "meta", "kind": "fomaml", "baseModel": {"path": "models/tiny"}, "params": training}],
    )


def done(control_plane: Any, namespace: str) -> Any:
    obj = get(control_plane, namespace, "experiment", "reuse")
    return obj if (obj.get("status") or {}).get("counts", {}).get("succeeded") == 2 else None


def test_an_imported_directory_is_reused_by_the_matching_point(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    source = data_root / "superglue" / "copa"
    seed_generated_dir(data_root, source)  # the seed's tree on the data volume, generated from the source
    cli_run("import", data_root, "--cluster", "-n", ns, "--source", f"Copa={source}")
    (imported,) = get(control_plane, ns, "artifacts")["items"]
    name = imported["metadata"]["name"]
    assert imported["metadata"]["annotations"][labels.SOURCE_SHA256]
    assert imported["status"]["phase"] == "Ready"

    # plan on the cluster shows the hit as imported, with what matched
    experiment_file = tmp_path / "reuse.yaml"
    experiment_file.write_text(yaml.safe_dump(reuse_experiment()), encoding="utf-8")
    plan = cli_run("plan", experiment_file, "--cluster", "-n", ns, "--data-dir", data_root, "-o", "json").stdout
    stages = {(s["semanticName"], s["stage"]): s for s in json.loads(plan)["stages"]}
    assert stages[(NAME, "generate")]["imported"]["artifact"] == name
    assert stages[("temp09_topp10_gpt4o", "generate")]["imported"] is None

    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, reuse_experiment())
        finished = wait_for(
            "experiment done",
            lambda: done(control_plane, ns),
            explain=lambda: get(control_plane, ns, "experiment", "reuse").get("status"),
        )
    assert finished["status"]["counts"] == {
        "points": 2,
        "artifacts": 4,
        "reused": 1,
        "created": 1,
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
    }

    # No generate Artifact or Job for the matching point: one generate Job, the other point's
    artifacts = {a["metadata"]["name"]: a for a in get(control_plane, ns, "artifacts")["items"]}
    generated = [a for a in artifacts.values() if a["spec"]["stage"] == "generate" and a["metadata"]["name"] != name]
    assert [a["spec"]["semanticName"] for a in generated] == ["temp09_topp10_gpt4o"]
    generate_jobs = get(control_plane, ns, "jobs", selector=f"{labels.STAGE}=generate")["items"]
    assert [j["metadata"]["labels"][labels.ARTIFACT] for j in generate_jobs] == [generated[0]["metadata"]["name"]]

    # The imported Artifact gained this Experiment's consumer labels, as a cache hit does
    reused = artifacts[name]
    marks = labels.consumer_marks("reuse", "batch-20250105-reuse")["labels"]
    assert marks.items() <= reused["metadata"]["labels"].items()
    assert labels.consumers_of(reused["metadata"], reused["status"]) == ["reuse"]
    assert reused["status"]["phase"] == "Ready"
    assert reused["status"]["firstBatch"] == "batch_20241229_temperature"

    # Its training stage nests under the imported directory and its Job reads it
    (training,) = [a for a in artifacts.values() if a["spec"].get("inputs") == [name]]
    assert training["spec"]["storage"]["path"].startswith(f"{IMPORTED_PATH}/train/fomaml-")
    assert training["status"]["phase"] == "Ready"
    worker = yaml.safe_load(training["spec"]["worker"]["workerSpec"])
    assert worker["inputs"] == {"data": f"/data/{IMPORTED_PATH}"}
    training_jobs = get(control_plane, ns, "jobs", selector=f"{labels.ARTIFACT}={training['metadata']['name']}")
    assert len(training_jobs["items"]) == 1

    # The batch view links the imported directory; an Event names the point, the directory and what matched
    link = data_root / BATCH / "Copa" / NAME
    assert str(link.readlink()) == f"../../{IMPORTED_PATH}"
    events = get(control_plane, ns, "events")["items"]
    hits = [e["message"] for e in events if e.get("reason") == "CacheHit"]
    assert any(
        f"reuses imported directory {IMPORTED_PATH} (Artifact {name}; matched gen_model=gpt-4o, gen_temperature=0.7"
        in m
        and "gen_prompt_hash, val_prompt_hash, dataset sha256)" in m
        for m in hits
    ), hits
