"""Suspend mid-generation on the real node (pods run the generate worker against the OpenAI test server):
`spec.suspend: true` stops the requests within 10 s (the Job is suspended, its pod gets SIGTERM and the worker
drains its journal), and `suspend: false` finishes the Artifact with the same Job, paying again for no request
beyond those in flight at the stop.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, wait_for, write_dataset
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, records, with_server

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

ROWS = 10  # per split: 30 rephrase + 30 judge requests
CONCURRENCY = 2
LATENCY_S = 0.5  # per request: ~15 s of requests, long enough to be suspended mid-run
STOPPED_WITHIN_S = 10.0
CHAT = "POST /v1/chat/completions"


def the_artifact(control_plane: Any, ns: str) -> dict[str, Any] | None:
    items = get(control_plane, ns, "artifacts")["items"]
    return items[0] if items else None


def test_suspend_mid_generation_stops_requests_and_resume_pays_nothing_twice(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    slow_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    write_dataset(data_root, rows=ROWS)
    options = {"rephrase_fields": ["premise"], "concurrency": CONCURRENCY}
    body = with_server(
        experiment("pausable", purpose="pausable", retries=0, generation={"options": options}), slow_server
    )
    total = 2 * 3 * ROWS
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, body)
        wait_for("requests mid-generation", lambda: slow_server.counts[CHAT] >= 6, POD_TIMEOUT)
        body["spec"]["suspend"] = True
        suspended_at = time.monotonic()
        apply(control_plane, ns, body)
        artifact = wait_for(
            "the Artifact Suspended",
            lambda: (a := the_artifact(control_plane, ns)) and a["status"].get("phase") == "Suspended" and a,
            60,
        )
        job = artifact["status"]["suspendedJob"]
        time.sleep(STOPPED_WITHIN_S + 5)
        late = [t - suspended_at for t in slow_server.state.chat_arrivals if t > suspended_at + STOPPED_WITHIN_S]
        assert not late, f"requests {late} s after the suspend"
        paused = slow_server.counts[CHAT]
        assert paused < total, "the sweep finished before it was suspended: nothing was tested"
        exp = get(control_plane, ns, "experiment", "pausable")
        assert condition(exp, "Suspended")["status"] == "True"
        assert condition(exp, "Succeeded")["reason"] == "Suspended"
        suspended_job = get(control_plane, ns, "job", job)
        assert suspended_job["spec"]["suspend"] is True
        assert not suspended_job["status"].get("active")
        assert not any(
            c["type"] == "Failed" and c["status"] == "True" for c in suspended_job["status"].get("conditions") or []
        )

        body["spec"]["suspend"] = False
        apply(control_plane, ns, body)
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "pausable"), POD_TIMEOUT)
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    artifact = get(control_plane, ns, "artifact", artifact["metadata"]["name"])
    assert artifact["status"]["phase"] == "Ready"
    assert (artifact["status"]["job"], artifact["status"]["attempts"]) == (job, 1)  # the same Job, no failure
    assert len(get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]) == 1
    assert len(records(data_root / artifact["spec"]["storage"]["path"])) == 3 * ROWS
    sent = Counter(json.dumps(b["messages"], sort_keys=True) for b in slow_server.chat_log)
    assert len(sent) == total
    twice = sum(count - 1 for count in sent.values())
    assert twice <= CONCURRENCY, f"{twice} requests paid twice; at most the {CONCURRENCY} in flight at the stop"
