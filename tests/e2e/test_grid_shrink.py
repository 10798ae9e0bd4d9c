"""A smaller grid on the real control plane (kwok completes the Jobs): an Experiment consumes its current plan only.

Re-applied without a learning rate (while no operator runs: the next one converges when it starts), an
Experiment releases the Artifacts of that value (they lose its consumer label, keep their data), `datasweep
results --cluster` leaves them out and `--all` shows them marked, and another Experiment that plans them
consumes them. A point that leaves the plan before it ran never gets a Job. With `spec.search` the sample is
what is planned: the same spec plans the same Artifacts, another seed another sample that reuses the overlap.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from datasweep.api.experiment import parse_spec
from datasweep.cli.main import cli
from datasweep.core.plan import search_sample
from datasweep.k8s import labels
from tests.e2e.operator_harness import apply, condition, get, running_operator, training_experiment, wait_for


def sweep(name: str, data_root: Path, learning_rates: list[float], **spec: Any) -> dict[str, Any]:
    """2 temperatures x the learning rates, one epoch, on a qa stage."""
    body = training_experiment(name, "qa", data_root, **spec)
    body["spec"]["generation"]["temperature"] = [0.5, 0.7]
    stage = copy.deepcopy(body["spec"]["training"][0])
    stage["params"].update(learning_rate=learning_rates)
    body["spec"]["training"] = [stage]
    return body


def planned(control_plane: Any, namespace: str, name: str, artifacts: int) -> Any:
    """The Experiment once its latest spec is planned, its consumer labels converged and its points done."""
    obj = get(control_plane, namespace, "experiment", name)
    status = obj.get("status") or {}
    record = status.get("planned") or {}
    if record.get("generation") != obj["metadata"]["generation"] or record.get("artifacts") != artifacts:
        return None
    mine = get(control_plane, namespace, "artifacts", selector=labels.experiment_key(name))["items"]
    if labels.plan_digest(a["metadata"]["name"] for a in mine) != record["digest"]:
        return None
    done = condition(obj, "Succeeded").get("status") == "True" and condition(obj, "Trained").get("status") == "True"
    return obj if done else None


def qa_by_rate(control_plane: Any, namespace: str) -> dict[float, list[dict[str, Any]]]:
    found: dict[float, list[dict[str, Any]]] = {}
    for artifact in get(control_plane, namespace, "artifacts", selector="datasweep.io/stage=qa")["items"]:
        found.setdefault(artifact["spec"]["params"]["learning_rate"], []).append(artifact)
    return found


def consumers(artifact: dict[str, Any]) -> list[str]:
    return labels.consumers_of(artifact["metadata"], artifact.get("status") or {})


def cli_run(namespace: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--cluster", "-n", namespace], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def events(control_plane: Any, namespace: str, name: str, reason: str) -> list[str]:
    selector = f"involvedObject.name={name},reason={reason}"
    listed = control_plane.kubectl("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json")
    return [str(e.get("message", "")) for e in json.loads(listed.stdout)["items"]]


def test_a_value_removed_from_the_grid_is_no_longer_consumed_and_its_data_is_kept(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, sweep("lr-shrink", data_root, [1e-5, 3e-5]))
        wait_for("the whole grid done", lambda: planned(control_plane, ns, "lr-shrink", 2 + 4))
        before = {a["metadata"]["name"] for a in get(control_plane, ns, "artifacts")["items"]}
    # applied while no operator runs: the next one converges to it when it starts
    apply(control_plane, ns, sweep("lr-shrink", data_root, [3e-5]))
    with running_operator(ns, data_root, tmp_path):
        shrunk = wait_for("the smaller grid planned", lambda: planned(control_plane, ns, "lr-shrink", 2 + 2))
        left_events = wait_for("the LeftPlan Event", lambda: events(control_plane, ns, "lr-shrink", "LeftPlan"))
        after = {a["metadata"]["name"] for a in get(control_plane, ns, "artifacts")["items"]}
        by_rate = qa_by_rate(control_plane, ns)
        results = json.loads(cli_run(ns, "results", "lr-shrink", "-o", "json").stdout)
        everything = json.loads(cli_run(ns, "results", "lr-shrink", "--all", "-o", "json").stdout)
        table = cli_run(ns, "results", "lr-shrink", "--all").stdout

        # another Experiment that plans the old value consumes those Artifacts (Ready: reused, no new Job)
        apply(control_plane, ns, sweep("lr-keep", data_root, [1e-5]))
        wait_for("the second Experiment done", lambda: planned(control_plane, ns, "lr-keep", 2 + 2))
        kept = qa_by_rate(control_plane, ns)[1e-5]
        keep_rows = json.loads(cli_run(ns, "results", "lr-keep", "-o", "json").stdout)
        shrink_rows = json.loads(cli_run(ns, "results", "lr-shrink", "-o", "json").stdout)

    assert after == before  # nothing deleted
    assert shrunk["status"]["counts"]["artifacts"] == 4
    old, current = by_rate[1e-5], by_rate[3e-5]
    assert (len(old), len(current)) == (2, 2)
    for artifact in old:
        meta = artifact["metadata"]
        assert labels.experiment_key("lr-shrink") not in meta["labels"]
        assert meta["labels"][labels.left_key("lr-shrink")] == "true"
        assert meta["annotations"][labels.FIRST_EXPERIMENT] == "lr-shrink"  # who made it stays recorded
        assert consumers(artifact) == []
        assert not any(k.startswith(labels.BATCH_PREFIX) for k in meta["labels"])  # no longer in the Batch view
        assert artifact["status"]["phase"] == "Ready"  # its data is kept
    assert all(consumers(a) == ["lr-shrink"] for a in current)
    assert left_events
    assert left_events[0].startswith("2 Artifact(s) left the plan")
    assert shrunk["status"]["planned"]["digest"] == labels.plan_digest(
        a["metadata"]["name"]
        for a in get(control_plane, ns, "artifacts", selector=labels.experiment_key("lr-shrink"))["items"]
    )

    # results: the current rows by default, the old ones too with --all, marked
    assert sorted((r["temperature"], r["learning_rate"]) for r in results) == [(0.5, 3e-5), (0.7, 3e-5)]
    assert not any(r.get("leftGrid") for r in results)
    assert sorted((r["temperature"], r["learning_rate"], bool(r.get("leftGrid"))) for r in everything) == [
        (0.5, 1e-5, True),
        (0.5, 3e-5, False),
        (0.7, 1e-5, True),
        (0.7, 3e-5, False),
    ]
    assert "left the grid" in table

    # the second Experiment consumes the old value's Artifacts; the first still does not
    assert sorted(a["metadata"]["name"] for a in kept) == sorted(a["metadata"]["name"] for a in old)
    assert all(consumers(a) == ["lr-keep"] for a in kept)
    assert all(labels.left_key("lr-shrink") in a["metadata"]["labels"] for a in kept)
    assert sorted(r["learning_rate"] for r in keep_rows) == [1e-5, 1e-5]
    assert sorted(r["learning_rate"] for r in shrink_rows) == [3e-5, 3e-5]
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/stage=qa")["items"]
    assert len(jobs) == 4  # one per qa fingerprint: none for a reuse


def test_a_point_that_leaves_the_plan_before_it_ran_never_gets_a_job(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, sweep("lr-never", data_root, [1e-4, 3e-4], suspend=True))
        wait_for("the suspended plan", lambda: len(qa_by_rate(control_plane, ns)) == 2)
        apply(control_plane, ns, sweep("lr-never", data_root, [1e-4], suspend=False))
        wait_for("the smaller grid done", lambda: planned(control_plane, ns, "lr-never", 2 + 2))
        dropped = wait_for(
            "the dropped Artifacts stopped for leaving the plan",
            lambda: [
                a
                for a in qa_by_rate(control_plane, ns)[3e-4]
                if "left the plan of lr-never" in condition(a, "Ready").get("message", "")
            ],
        )

    assert len(dropped) == 2
    assert all(a["status"]["phase"] == "Suspended" for a in dropped)
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/stage=qa")["items"]
    started = {j["metadata"]["labels"][labels.ARTIFACT] for j in jobs}
    assert started == {a["metadata"]["name"] for a in qa_by_rate(control_plane, ns)[1e-4]}


def sampled(name: str, data_root: Path, seed: int) -> dict[str, Any]:
    """2 temperatures x 3 learning rates = 6 combinations, 3 of them sampled."""
    body = sweep(name, data_root, [1e-5, 3e-5, 1e-4])
    body["spec"]["search"] = {"algorithm": "random", "samples": 3, "seed": seed}
    return body


def combinations(control_plane: Any, namespace: str, selector: str) -> set[tuple[float, float]]:
    """(temperature, learning_rate) of the qa Artifacts `selector` finds."""
    generate = {
        a["metadata"]["name"]: a["spec"]["params"]["temperature"]
        for a in get(control_plane, namespace, "artifacts", selector="datasweep.io/stage=generate")["items"]
    }
    found = get(control_plane, namespace, "artifacts", selector=f"datasweep.io/stage=qa,{selector}".rstrip(","))
    return {(generate[a["spec"]["inputs"][0]], a["spec"]["params"]["learning_rate"]) for a in found["items"]}


def test_a_random_search_plans_its_sample_and_another_seed_reuses_the_overlap(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    draws = {seed: search_sample(parse_spec(sampled("lr-search", data_root, seed)["spec"])) for seed in range(20)}
    first = draws[0]
    assert first is not None
    assert (first.total, first.taken) == (6, 3)
    # a second seed whose sample overlaps the first one's and differs from it (as the planner draws them)
    seed = next(s for s, d in draws.items() if d is not None and 0 < len(d.combinations & first.combinations) < 3)
    second = draws[seed]
    assert second is not None
    mine = labels.experiment_key("lr-search")
    with running_operator(ns, data_root, tmp_path):
        apply(control_plane, ns, sampled("lr-search", data_root, 0))
        wait_for("the sample done", lambda: planned(control_plane, ns, "lr-search", len(first.points) + 3))
        sample = combinations(control_plane, ns, mine)
        points = get(control_plane, ns, "artifacts", selector=f"datasweep.io/stage=generate,{mine}")["items"]
        everything = {a["metadata"]["name"] for a in get(control_plane, ns, "artifacts")["items"]}

        again = sampled("lr-search", data_root, 0)
        again["spec"]["description"] = "the same sample, planned again"  # a spec change: the handler plans again
        apply(control_plane, ns, again)
        wait_for("the same spec planned again", lambda: planned(control_plane, ns, "lr-search", len(first.points) + 3))
        replanned = {a["metadata"]["name"] for a in get(control_plane, ns, "artifacts")["items"]}

        apply(control_plane, ns, sampled("lr-search", data_root, seed))
        wait_for("the other sample done", lambda: planned(control_plane, ns, "lr-search", len(second.points) + 3))
        resampled = combinations(control_plane, ns, mine)
        every_qa = combinations(control_plane, ns, "")
        gone = combinations(control_plane, ns, labels.left_key("lr-search"))
        jobs = get(control_plane, ns, "jobs", selector="datasweep.io/stage=qa")["items"]

    assert len(sample) == 3  # exactly the samples, as Artifacts
    assert len(points) == len(first.points)  # and the points they need
    assert replanned == everything  # the same spec planned the same Artifacts: nothing new
    assert len(resampled) == 3
    assert resampled != sample
    assert len(sample & resampled) == len(first.combinations & second.combinations)  # the overlap, as drawn
    assert every_qa == sample | resampled  # the overlap reused, not made twice
    assert len(jobs) == len(sample | resampled)  # one Job per qa Artifact: none for a reuse
    assert gone == sample - resampled  # what the new sample dropped is no longer consumed
