"""Issue 22, item 3: a sweep recovers from a wrong setting by re-applying the corrected Experiment.

- On the real node (real pods): a wrong `generation.baseURL` fails the Artifact; the user fixes the YAML and
  `kubectl apply`s it again, nothing deleted by hand: the Artifact takes the corrected URL, is relaunched by
  that apply, and Succeeds with rows from the corrected endpoint.
- On kwok (Jobs fail on request): the two-Experiments rule (the Artifact's first Experiment decides its worker
  details while it exists; then the one that applies), Ready Artifacts never touched, and `datasweep retry`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.core import naming
from datasweep.k8s import labels
from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, running_operator, wait_for
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, records


def events(control_plane: Any, namespace: str, name: str, reason: str) -> list[str]:
    found = get(control_plane, namespace, "events")["items"]
    return [e["message"] for e in found if e["involvedObject"].get("name") == name and e.get("reason") == reason]


def artifact_phase(control_plane: Any, namespace: str, name: str) -> str:
    return str((get(control_plane, namespace, "artifact", name).get("status") or {}).get("phase", ""))


@pytest.mark.realnode
def test_a_wrong_base_url_fixed_by_reapply_succeeds_on_the_real_node(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    wrong = f"http://{control_plane.node.ip}:1/v1"  # nothing listens there: the user's typo
    body = experiment("typo", purpose="typo", retries=0, generation={"baseURL": wrong})
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, body)
        failed = wait_for("the experiment failed", lambda: finished(control_plane, ns, "typo"), POD_TIMEOUT)
        assert condition(failed, "Failed")["status"] == "True", json.dumps(failed.get("status"), indent=1)
        (artifact,) = get(control_plane, ns, "artifacts")["items"]
        name = artifact["metadata"]["name"]
        assert artifact["status"]["phase"] == "Failed"
        assert artifact["spec"]["params"]["base_url"] == wrong
        # The fix: the same YAML with the right URL, applied again; no retry, no delete.
        fixed = copy.deepcopy(body)
        fixed["spec"]["generation"]["baseURL"] = openai_server.url
        assert "configured" in apply(control_plane, ns, fixed).stdout
        done = wait_for(
            "the corrected experiment succeeded",
            lambda: (obj := finished(control_plane, ns, "typo")) and condition(obj, "Succeeded")["status"] == "True",
            POD_TIMEOUT,
            explain=lambda: get(control_plane, ns, "artifact", name).get("status"),
        )
        assert done
    artifact = get(control_plane, ns, "artifact", name)
    assert artifact["status"]["phase"] == "Ready"
    assert artifact["status"]["attempts"] == 2  # the failed one and the one the correction launched
    assert artifact["spec"]["params"]["base_url"] == openai_server.url
    assert artifact["metadata"]["annotations"][labels.RETRY].startswith("corrected-")
    jobs = get(control_plane, ns, "jobs", selector=f"{labels.ARTIFACT}={name}")["items"]
    assert len(jobs) == 2
    path = data_root / artifact["spec"]["storage"]["path"]
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest.fingerprint == artifact["spec"]["fingerprint"]  # the same Artifact, the same fingerprint
    assert any("rephrased:" in json.dumps(row) for row in records(path))
    assert openai_server.counts["POST /v1/chat/completions"] > 0
    (updated,) = events(control_plane, ns, "typo", "DetailsUpdated")
    assert "params.base_url" in updated
    assert "1 Failed relaunched" in updated


def test_two_experiments_ready_artifacts_and_retry_on_kwok(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    url_a, url_b, url_fixed = "http://a.example/v1", "http://b.example/v1", "http://fixed.example/v1"
    # A point produced first, Ready: later applies must never touch it.
    with running_operator(ns, data_root, tmp_path):
        apply(
            control_plane, ns, experiment("early", purpose="early", generation={"baseURL": url_a, "temperature": 0.5})
        )
        early = wait_for("early finished", lambda: finished(control_plane, ns, "early"))
        assert condition(early, "Succeeded")["status"] == "True"
    (ready,) = get(control_plane, ns, "artifacts")["items"]
    ready_name = ready["metadata"]["name"]

    def untouched() -> bool:  # what a later Experiment may add is its consumer label, nothing else
        now = get(control_plane, ns, "artifact", ready_name)
        return (now["spec"], now["status"], now["metadata"].get("annotations")) == (
            ready["spec"],
            ready["status"],
            ready["metadata"].get("annotations"),
        )

    failing = {"jobDefaults": {"podAnnotations": {"datasweep.io/kwok-fail": "true"}}}
    first = experiment("first", purpose="first", retries=0, generation={"baseURL": url_a, "temperature": [0.5, 0.7]})
    with running_operator(ns, data_root, tmp_path, **failing):
        apply(control_plane, ns, first)
        assert (
            condition(wait_for("first finished", lambda: finished(control_plane, ns, "first")), "Failed")["status"]
            == "True"
        )
        (shared,) = [a for a in get(control_plane, ns, "artifacts")["items"] if a["metadata"]["name"] != ready_name]
        name = shared["metadata"]["name"]
        assert shared["status"]["phase"] == "Failed"
        ready_version = get(control_plane, ns, "artifact", ready_name)["metadata"]["resourceVersion"]  # consumed

        # A second Experiment shares the failed point with another URL: the first one decides, and says so.
        second = experiment("second", purpose="second", retries=0, generation={"baseURL": url_b, "temperature": 0.7})
        apply(control_plane, ns, second)
        conflict = wait_for(
            "the conflict Event", lambda: events(control_plane, ns, "second", "DetailsConflict"), POD_TIMEOUT
        )[0]
        assert "keep the worker details of Experiment first" in conflict
        assert "params.base_url" in conflict
        assert get(control_plane, ns, "artifact", name)["spec"]["params"]["base_url"] == url_a

        # The first one corrected: its failed point takes the URL and is relaunched; the Ready one is untouched.
        fixed = copy.deepcopy(first)
        fixed["spec"]["generation"]["baseURL"] = url_fixed
        apply(control_plane, ns, fixed)
        relaunched = wait_for(
            "the correction relaunched the failed point",
            lambda: (a := get(control_plane, ns, "artifact", name))["status"].get("attempts") == 2 and a,
            POD_TIMEOUT,
        )
        assert relaunched["spec"]["params"]["base_url"] == url_fixed
        assert url_fixed in relaunched["spec"]["worker"]["workerSpec"]
        assert relaunched["metadata"]["annotations"][labels.DETAILS_FROM] == "first"
        job = get(control_plane, ns, "job", naming.job_name(name, 1))  # the second attempt's Job
        assert url_fixed in job["spec"]["template"]["metadata"]["annotations"][labels.WORKER_SPEC]
        wait_for("it failed again (kwok)", lambda: artifact_phase(control_plane, ns, name) == "Failed", POD_TIMEOUT)
        ready_now = get(control_plane, ns, "artifact", ready_name)
        assert ready_now["metadata"]["resourceVersion"] == ready_version  # not even written
        assert ready_now["spec"]["params"]["base_url"] == url_a
        assert untouched()

        # `datasweep retry`: one annotation on the Experiment; the operator retries its failed point.
        result = CliRunner().invoke(cli, ["retry", "first", "--cluster", "-n", ns], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "asked the operator to retry 1 failed Artifact(s) of Experiment first" in result.stderr
        wait_for(
            "the retry ran a third attempt",
            lambda: get(control_plane, ns, "artifact", name)["status"].get("attempts") == 3,
            POD_TIMEOUT,
        )
        retry = wait_for("the Retry Event", lambda: events(control_plane, ns, "first", "Retry"))[0]
        assert "1 failed Artifact(s) retried" in retry
        assert name in retry

        # The deciding Experiment deleted: the second one's next apply decides.
        control_plane.kubectl("delete", "experiment", "first", "-n", ns)
        wait_for("failed again", lambda: artifact_phase(control_plane, ns, name) == "Failed", POD_TIMEOUT)
        second["spec"]["description"] = "take over"
        apply(control_plane, ns, second)
        taken = wait_for(
            "the second Experiment decides",
            lambda: (a := get(control_plane, ns, "artifact", name))["spec"]["params"]["base_url"] == url_b and a,
            POD_TIMEOUT,
        )
        assert taken["metadata"]["annotations"][labels.DETAILS_FROM] == "second"
    assert get(control_plane, ns, "artifact", ready_name)["metadata"]["resourceVersion"] == ready_version
    assert untouched()
