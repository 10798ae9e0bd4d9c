"""Issue 22, converging on the real node (real pods), each from a user's mistake, no object deleted by the test
but the one the mistake is about:

- an image that cannot be pulled (a tag absent from the node, which pulls nothing: ErrImageNeverPull): the
  Artifact's Ready condition names the image within 2 minutes, the Experiment and Batch say Stalled, and after
  podStuckTimeoutSeconds the Artifact fails with that reason and its Job is deleted;
- a Job deleted by hand mid-run: the resync relaunches it (Event JobDeleted, attempt 2), which resumes and ends
  Succeeded;
- bad input (the endpoint refuses the API key: the worker exits 2): Failed after one attempt, retries unspent,
  the condition says BadInput with the worker's message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datasweep.testing.openai_server import Fault, OpenAITestServer, ServerBehavior
from tests.e2e.operator_harness import apply, condition, experiment, get, wait_for
from tests.e2e.test_fault_real_node import LATENCY_S, artifact_of, running_pod  # noqa: F401 (slow_server reads it)
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, with_server

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

FAST_RESYNC = {"resyncPeriodSeconds": 2, "podStuckReportSeconds": 5}


def events(control_plane: Any, ns: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in get(control_plane, ns, "events")["items"] if e.get("reason") == reason]


def test_an_image_that_cannot_be_pulled_is_named_then_fails_the_artifact(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    absent = "localhost/datasweep-worker:absent-from-the-node"
    images = {"worker": absent, "trainer": absent}  # pulled with pullPolicy Never (real_node_settings)
    with real_operator(ns, data_root, tmp_path, images, podStuckTimeoutSeconds=60, **FAST_RESYNC):
        apply(control_plane, ns, with_server(experiment("pull", purpose="pull", retries=2), openai_server))

        def named() -> Any:
            artifact = artifact_of(control_plane, ns)
            ready = condition(artifact or {}, "Ready")
            return ready.get("reason") == "ErrImageNeverPull" and absent in ready.get("message", "") and artifact

        artifact = wait_for(
            "a condition naming the image", named, 120.0, explain=lambda: artifact_of(control_plane, ns)
        )
        assert artifact["status"]["phase"] == "Running"  # not failed yet: it may still come
        job = artifact["status"]["job"]

        def stalled() -> Any:
            exp = get(control_plane, ns, "experiment", "pull")
            return condition(exp, "Stalled").get("status") == "True" and exp

        exp = wait_for("the Experiment says Stalled", stalled, 60.0)
        assert absent in condition(exp, "Stalled")["message"], condition(exp, "Stalled")
        batch = get(control_plane, ns, "batches")["items"][0]
        wait_for(
            "the Batch says Stalled",
            lambda: (
                condition(get(control_plane, ns, "batch", batch["metadata"]["name"]), "Stalled").get("status") == "True"
            ),
            60.0,
        )
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "pull"), 120.0)
    assert condition(done, "Failed")["status"] == "True", json.dumps(done.get("status"), indent=1)
    artifact = get(control_plane, ns, "artifact", artifact["metadata"]["name"])
    ready = condition(artifact, "Ready")
    assert (artifact["status"]["phase"], ready["reason"]) == ("Failed", "ErrImageNeverPull")
    assert absent in ready["message"]
    assert "podStuckTimeoutSeconds" in ready["message"]
    assert artifact["status"]["attempts"] == 1  # no retry: another attempt would wait the same way
    jobs = lambda: [j["metadata"]["name"] for j in get(control_plane, ns, "jobs")["items"]]  # noqa: E731
    wait_for("the stuck Job deleted", lambda: job not in jobs(), 60.0, explain=jobs)


def test_a_job_deleted_mid_run_is_relaunched_and_the_sweep_succeeds(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    slow_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    options = {"rephrase_fields": ["premise"], "concurrency": 1}
    body = experiment("deleted", purpose="deleted", retries=0, generation={"options": options})
    chat = "POST /v1/chat/completions"
    with real_operator(ns, data_root, tmp_path, real_images, **FAST_RESYNC):
        apply(control_plane, ns, with_server(body, slow_server))
        artifact = wait_for(
            "the Artifact's Job",
            lambda: (a := artifact_of(control_plane, ns)) and a.get("status", {}).get("job") and a,
            POD_TIMEOUT,
        )
        name, first_job = artifact["metadata"]["name"], artifact["status"]["job"]
        wait_for("the first pod running", lambda: running_pod(control_plane, ns, first_job), POD_TIMEOUT)
        wait_for("2 answered requests", lambda: slow_server.counts[chat] >= 2, POD_TIMEOUT)
        control_plane.kubectl("delete", "job", first_job, "-n", ns, "--wait=false")
        relaunched = wait_for(
            "a relaunched Job",
            lambda: (a := artifact_of(control_plane, ns)) and a["status"].get("job") != first_job and a,
            120.0,
            explain=lambda: (artifact_of(control_plane, ns) or {}).get("status"),
        )
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "deleted"), POD_TIMEOUT)
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    artifact = get(control_plane, ns, "artifact", name)
    assert artifact["status"]["phase"] == "Ready"
    assert artifact["status"]["attempts"] == 2  # retries: 0, yet relaunched: a deleted Job is no failed attempt
    assert artifact["status"]["job"] == relaunched["status"]["job"]
    assert any(first_job in message for message in events(control_plane, ns, "JobDeleted"))


def test_bad_input_fails_after_one_attempt(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
) -> None:
    ns = real_namespace
    refused = ServerBehavior(chat_faults=[Fault(401, message="Incorrect API key provided") for _ in range(50)])
    with (
        OpenAITestServer(refused, host=control_plane.node.ip) as server,
        real_operator(ns, data_root, tmp_path, real_images, retryBackoffSeconds=1),
    ):
        apply(control_plane, ns, with_server(experiment("refused", purpose="refused", retries=2), server))
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "refused"), POD_TIMEOUT)
    assert condition(done, "Failed")["status"] == "True", json.dumps(done.get("status"), indent=1)
    artifact = get(control_plane, ns, "artifacts")["items"][0]
    assert artifact["status"]["phase"] == "Failed"
    assert artifact["status"]["attempts"] == 1, artifact["status"]  # retries: 2, unspent
    ready = condition(artifact, "Ready")
    assert ready["reason"] == "BadInput", ready
    assert "refused" in ready["message"], ready["message"]  # the worker's own last line
    assert "not retried" in ready["message"]
    jobs = get(control_plane, ns, "jobs", selector=f"datasweep.io/artifact={artifact['metadata']['name']}")["items"]
    assert len(jobs) == 1
    failed = next(c for c in jobs[0]["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy", failed  # the Job itself stopped at exit code 2
