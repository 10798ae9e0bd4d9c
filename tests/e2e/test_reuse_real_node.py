"""Request-level reuse on the real node: generate pods share the volume's request store, so a dataset grown by
10% costs only the new rows' requests, counted at the OpenAI test server the pods call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, wait_for, write_dataset
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, with_server

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

ROWS = 10  # per split: 30 rephrase + 30 judge requests
GROWN = 11  # one more row per split: the dataset grown by 10%
CHAT = "POST /v1/chat/completions"


def test_a_grown_dataset_sends_only_the_new_rows_from_pods(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    write_dataset(data_root, rows=ROWS)
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, with_server(experiment("before", purpose="reuse", retries=0), openai_server))
        done = wait_for("the first Experiment", lambda: finished(control_plane, ns, "before"), POD_TIMEOUT)
        assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
        assert openai_server.counts[CHAT] == 2 * 3 * ROWS
        write_dataset(data_root, rows=GROWN)  # a new content hash: a new point
        apply(control_plane, ns, with_server(experiment("after", purpose="reuse", retries=0), openai_server))
        done = wait_for("the grown Experiment", lambda: finished(control_plane, ns, "after"), POD_TIMEOUT)
        assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
        wide = control_plane.kubectl("get", "experiment", "after", "-n", ns, "-o", "wide").stdout
        before = get(control_plane, ns, "experiment", "before")
    assert openai_server.counts[CHAT] - 2 * 3 * ROWS == 2 * 3 * (GROWN - ROWS)  # the 3 new rows' two requests
    manifests = [
        read_manifest(data_root / a["spec"]["storage"]["path"]) for a in get(control_plane, ns, "artifacts")["items"]
    ]
    saved = sorted(m.extra["savedByReuse"]["requests"] for m in manifests if m is not None)
    assert saved == [0, 2 * 3 * ROWS]
    assert (data_root / "_shared" / ".requests" / "v1").is_dir()

    # the grown point's Artifact says what the request store answered (its manifest, via the operator), the
    # Experiment sums it beside the Artifacts reused whole, and why says it
    grown = [a for a in get(control_plane, ns, "artifacts")["items"] if a["status"].get("firstExperiment") == "after"]
    (artifact,) = grown
    reuse = artifact["status"]["manifest"]["requestReuse"]
    requests = 2 * 3 * GROWN
    assert (reuse["requests"], reuse["stored"], reuse["toSend"]) == (requests, 2 * 3 * ROWS, 0)
    assert (reuse["rows"], reuse["rowsReused"]) == (3 * GROWN, 3 * ROWS)
    progress = done["status"]["progress"]
    assert (progress["requestsStored"], progress["rowsReused"]) == (2 * 3 * ROWS, 3 * ROWS)
    assert progress["savedUsd"] > 0  # gpt-4o at the price table's price, answered by the test server
    assert progress["saved"] == f"{2 * 3 * ROWS} requests, ${progress['savedUsd']:.4f}"
    assert progress["saved"] in wide  # the SAVED column
    assert before["status"]["progress"]["requestsStored"] == 0
    why = CliRunner().invoke(cli, ["why", "after", "--cluster", "-n", ns], catch_exceptions=False)
    assert why.exit_code == 0, why.output
    assert f"request store: {2 * 3 * ROWS} of {requests} requests stored" in why.output
