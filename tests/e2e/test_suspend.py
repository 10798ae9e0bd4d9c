"""Suspend, resume and delete on the real control plane, with kwok pods that run for minutes (no real pods; the
real node's workers and the test server's request count: test_suspend_real_node.py).

Seed 000's two Experiments share one Artifact. Deleting A stops the Jobs only A was waiting for and keeps the
shared one running for B; suspending B (`datasweep suspend`) stops the rest, as suspended Jobs (not failed, not
deleted); resuming B (`datasweep resume`) restarts B's three, the same Jobs, while A's stay stopped. Nothing is
deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from datasweep.cli import main
from tests.e2e.operator_harness import apply, condition, get, running_operator, seed_experiments, wait_for

LONG_PODS = {"jobDefaults": {"podAnnotations": {"datasweep.io/kwok-duration": "600s"}}}


def cli(command: str, experiment: str, ns: str) -> Any:
    result = CliRunner().invoke(main.cli, [command, experiment, "--cluster", "-n", ns], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def phases(control_plane: Any, ns: str) -> dict[str, str]:
    return {
        a["spec"]["semanticName"]: (a.get("status") or {}).get("phase", "Pending")
        for a in get(control_plane, ns, "artifacts")["items"]
    }


def suspended_jobs(control_plane: Any, ns: str) -> dict[str, bool]:
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    return {j["metadata"]["labels"]["datasweep.io/artifact"]: bool(j["spec"].get("suspend")) for j in jobs}


def test_delete_suspend_and_resume_follow_who_consumes_each_artifact(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    a, b = seed_experiments()
    shared = "temp07_topp10_gpt4o"
    only_a = {"temp05_topp10_gpt4o", "temp09_topp10_gpt4o"}
    only_b = {"temp07_topp08_gpt4o", "temp07_topp09_gpt4o"}
    with running_operator(ns, data_root, tmp_path, **LONG_PODS):
        apply(control_plane, ns, a, b)
        wait_for(
            "all five Artifacts Running",
            lambda: len(p := phases(control_plane, ns)) == 5 and set(p.values()) == {"Running"},
            explain=lambda: phases(control_plane, ns),
        )
        names = {x["spec"]["semanticName"]: x["metadata"]["name"] for x in get(control_plane, ns, "artifacts")["items"]}

        control_plane.kubectl("delete", "experiment", "copa-temperature", "-n", ns, "--wait=true")
        wait_for(
            "A's own Artifacts Suspended",
            lambda: {s for s, p in phases(control_plane, ns).items() if p == "Suspended"} == only_a,
            explain=lambda: phases(control_plane, ns),
        )
        jobs = suspended_jobs(control_plane, ns)
        assert {s for s in names if jobs[names[s]]} == only_a
        assert phases(control_plane, ns)[shared] == "Running"  # B still waits for it
        artifact = get(control_plane, ns, "artifact", names["temp05_topp10_gpt4o"])
        assert condition(artifact, "Ready")["reason"] == "Suspended"
        assert "deleted: copa-temperature" in condition(artifact, "Ready")["message"]
        assert artifact["status"]["attempts"] == 1

        suspended = cli("suspend", "copa-topp", ns)  # spec.suspend, as `kubectl apply` of it would set
        assert "experiment copa-topp suspended" in suspended.output
        wait_for(
            "every Artifact Suspended",
            lambda: set(phases(control_plane, ns).values()) == {"Suspended"},
            explain=lambda: phases(control_plane, ns),
        )
        assert all(suspended_jobs(control_plane, ns).values())
        exp_b = wait_for(
            "B says Suspended",
            lambda: (
                (e := get(control_plane, ns, "experiment", "copa-topp"))
                and condition(e, "Succeeded").get("reason") == "Suspended"
                and e
            ),
        )
        assert condition(exp_b, "Suspended")["status"] == "True"
        assert "datasweep resume copa-topp" in condition(exp_b, "Suspended")["message"]

        assert "experiment copa-topp resumed" in cli("resume", "copa-topp", ns).output
        wait_for(
            "B's three Running again",
            lambda: {s for s, p in phases(control_plane, ns).items() if p == "Running"} == {shared, *only_b},
            explain=lambda: phases(control_plane, ns),
        )
        jobs = suspended_jobs(control_plane, ns)
        assert {s for s in names if jobs[names[s]]} == only_a  # A's stay stopped: nobody runs for them
        # The Experiment's status is written by its own handler, after (or before) the Artifacts start again.
        exp_b = wait_for(
            "B's Suspended condition False",
            lambda: (
                (e := get(control_plane, ns, "experiment", "copa-topp"))
                and condition(e, "Suspended").get("status") == "False"
                and e
            ),
        )
        assert condition(exp_b, "Suspended")["status"] == "False"
    artifacts = get(control_plane, ns, "artifacts")["items"]
    assert len(artifacts) == 5  # nothing deleted
    assert all(x["status"]["attempts"] == 1 for x in artifacts)  # a suspension is no failed attempt
    assert len(get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]) == 5  # the same Jobs
