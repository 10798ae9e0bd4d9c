"""Training axes on the real control plane (kwok completes the Jobs): issue 23, item 1.

2 temperatures x learning_rate [1e-5, 3e-5] x num_train_epochs [1, 2] on a qa stage: 2 generate + 8 qa
Artifacts; a second Experiment with learning_rate [3e-5, 1e-4] reuses the 4 it shares and creates 4.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.k8s.labels import consumers_of
from tests.e2e.operator_harness import apply, condition, get, running_operator, training_experiment, wait_for


def sweep(name: str, data_root: Path, learning_rates: list[float]) -> dict[str, Any]:
    body = training_experiment(name, "qa", data_root)
    body["spec"]["generation"]["temperature"] = [0.5, 0.7]
    body["spec"]["objective"] = {"stage": "squad", "metric": "f1", "goal": "maximize"}
    stage = copy.deepcopy(body["spec"]["training"][0])
    stage["params"].update(learning_rate=learning_rates, num_train_epochs=[1, 2])
    body["spec"]["training"] = [stage]
    return body


def done(control_plane: Any, namespace: str, name: str) -> Any:
    obj = get(control_plane, namespace, "experiment", name)
    counts = (obj.get("status") or {}).get("counts", {})
    finished = counts.get("succeeded") == 2 and condition(obj, "Succeeded").get("status") == "True"
    return obj if finished and condition(obj, "Trained").get("status") == "True" else None


def batch_best(batch: dict[str, Any], best: dict[str, Any]) -> bool:
    """The Batch lists lr-low's best as its status says it now (an earlier best may linger a moment)."""
    return any(entry["summary"] == best["summary"] for entry in (batch.get("status") or {}).get("best") or [])


def best_over(obj: dict[str, Any], candidates: int) -> Any:
    best = (obj.get("status") or {}).get("best") or {}
    return best if best.get("candidates") == candidates else None


def test_a_training_sweep_plans_one_artifact_per_combination_and_a_second_reuses_the_shared_ones(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, sweep("lr-low", data_root, [1e-5, 3e-5]))
        first = wait_for("the first sweep done", lambda: done(control_plane, ns, "lr-low"))
        # kwok runs no worker: record the metrics a qa worker's manifest would give (unit-tested from there)
        for artifact in get(control_plane, ns, "artifacts", selector="datasweep.io/stage=qa")["items"]:
            params, semantic = artifact["spec"]["params"], artifact["spec"]["semanticName"]
            f1 = params["learning_rate"] * 1e6 + params["num_train_epochs"] + ("temp07" in semantic)
            manifest = {"files": 1, "rows": 1, "bytes": 1, "sha256": "0" * 64, "metrics": {"f1": f1, "em": 1.0}}
            control_plane.kubectl(
                "patch",
                "artifact",
                artifact["metadata"]["name"],
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"manifest": manifest}}),
            )
        best = wait_for(
            "status.best over the 8 qa Artifacts",
            lambda: best_over(get(control_plane, ns, "experiment", "lr-low"), 8),
        )
        columns = control_plane.kubectl("get", "exp", "lr-low", "-n", ns).stdout
        listed = wait_for(
            "the Batch lists the best",
            lambda: next(
                (b["status"]["best"] for b in get(control_plane, ns, "batches")["items"] if batch_best(b, best)), None
            ),
        )
        apply(control_plane, ns, sweep("lr-high", data_root, [3e-5, 1e-4]))
        second = wait_for("the second sweep done", lambda: done(control_plane, ns, "lr-high"))

    winner = next(a for a in get(control_plane, ns, "artifacts")["items"] if a["metadata"]["name"] == best["artifact"])
    assert winner["spec"]["params"]["learning_rate"] == 3e-5
    assert winner["spec"]["params"]["num_train_epochs"] == 2
    assert "temp07" in winner["spec"]["semanticName"]
    assert best["value"] == 33.0
    assert best["params"] == {"temperature": 0.7, "learning_rate": 3e-5, "num_train_epochs": 2}
    assert best["candidates"] == 8
    assert listed == [{"experiment": "lr-low", "artifact": best["artifact"], "summary": best["summary"]}]
    assert "BEST" in columns
    assert best["summary"] in columns  # f1=33 (temperature=0.7, learning_rate=3e-05, num_train_epochs=2)

    assert first["status"]["counts"]["points"] == 2
    assert first["status"]["counts"]["artifacts"] == 10
    mine = get(control_plane, ns, "artifacts", selector="exp.datasweep.io/lr-low")["items"]
    generate = [a for a in mine if a["spec"]["stage"] == "generate"]
    qa = [a for a in mine if a["spec"]["stage"] == "qa"]
    assert (len(generate), len(qa)) == (2, 8)
    assert all(a["status"]["phase"] == "Ready" for a in mine)
    combinations = {
        (a["spec"]["inputs"][0], a["spec"]["params"]["learning_rate"], a["spec"]["params"]["num_train_epochs"])
        for a in qa
    }
    assert len(combinations) == 8
    semantic = sorted(
        a["spec"]["semanticName"] for a in qa if a["spec"]["inputs"][0] == generate[0]["metadata"]["name"]
    )
    assert [name.rsplit("_", 2)[1:] for name in semantic] == [
        ["lr1e-5", "ep1"],
        ["lr1e-5", "ep2"],
        ["lr3e-5", "ep1"],
        ["lr3e-5", "ep2"],
    ]

    # the second sweep: the same generate Artifacts, the 4 shared qa Artifacts reused, 4 created
    theirs = get(control_plane, ns, "artifacts", selector="exp.datasweep.io/lr-high")["items"]
    assert second["status"]["counts"]["artifacts"] == 10
    assert {a["metadata"]["name"] for a in theirs if a["spec"]["stage"] == "generate"} == {
        a["metadata"]["name"] for a in generate
    }
    shared = [
        a
        for a in theirs
        if a["spec"]["stage"] == "qa" and a["metadata"]["annotations"]["datasweep.io/first-experiment"] == "lr-low"
    ]
    created = [
        a
        for a in theirs
        if a["spec"]["stage"] == "qa" and a["metadata"]["annotations"]["datasweep.io/first-experiment"] == "lr-high"
    ]
    assert (len(shared), len(created)) == (4, 4)
    assert all(a["spec"]["params"]["learning_rate"] == 3e-5 for a in shared)
    assert all(sorted(consumers_of(a["metadata"], a["status"])) == ["lr-high", "lr-low"] for a in shared)
    assert {a["spec"]["params"]["learning_rate"] for a in created} == {1e-4}
    assert len(get(control_plane, ns, "artifacts")["items"]) == 2 + 12
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/stage=qa")["items"]
    assert len(jobs) == 12  # one Job per qa fingerprint, none for a reused one

    # `datasweep results --cluster`: the rows of what lr-low consumes, from the Artifacts' status alone
    rows = json.loads(cli_run(ns, "results", "lr-low", "-o", "json").stdout)
    assert len(rows) == 8
    assert {(r["temperature"], r["learning_rate"], r["num_train_epochs"]) for r in rows} == {
        (t, lr, n) for t in (0.5, 0.7) for lr in (1e-5, 3e-5) for n in (1, 2)
    }
    assert [r["artifact"] for r in rows if r.get("best")] == [best["artifact"]]
    assert {r["stage"] for r in rows} == {"squad"}  # the Experiment's entry name, not the kind
    assert max(r["f1"] for r in rows) == 33.0
    assert len(json.loads(cli_run(ns, "results", "lr-low", "--all", "-o", "json").stdout)) == 12
    table = cli_run(ns, "results", "lr-low").stdout
    assert "LEARNING_RATE" in table
    assert "NUM_TRAIN_EPOCHS" in table
    assert "BEST" in table


def cli_run(namespace: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--cluster", "-n", namespace], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result
