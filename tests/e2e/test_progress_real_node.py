"""A running sweep shows where it is: real generate pods against a slow test server report their progress on
the volume, the operator copies it into the Artifact and sums it into the Experiment, `kubectl get exp` shows
PROGRESS and COST mid-run, and `datasweep watch --cluster` prints it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, wait_for
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, with_server

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

NAME = "copa-progress"
# One request at a time, 1.5 s each: 9 generate + 9 validate requests take about 27 s, long enough to see
# the sweep mid-run with the workers' 5 s reports and the operator's 1 s reads.
LATENCY_S = 1.5


def table_row(text: str) -> dict[str, str]:
    """`kubectl get` with one object: header cells -> row cells, cut where kubectl aligns each column (a cell may be
    empty, as BEST without an objective, or hold spaces, as BEST with one)."""
    header, row = text.rstrip().splitlines()[:2]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def watch_once(namespace: str) -> Any:
    return CliRunner().invoke(cli, ["watch", NAME, "--cluster", "-n", namespace, "--once"], catch_exceptions=False)


def test_kubectl_get_exp_and_watch_show_progress_and_cost_mid_run(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    slow_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    options = {"rephrase_fields": ["premise"], "concurrency": 1}
    server = slow_server
    body = with_server(experiment(NAME, purpose="progress", generation={"options": options}), server)
    with real_operator(ns, data_root, tmp_path, real_images, progressIntervalSeconds=1):
        apply(control_plane, ns, body)

        def mid_run() -> Any:
            obj = get(control_plane, ns, "experiment", NAME)
            progress = (obj.get("status") or {}).get("progress") or {}
            running = (obj["status"].get("counts") or {}).get("running")
            moving = progress.get("requestsDone", 0) > 0 and progress.get("costUsd", 0) > 0
            return obj if running == 1 and moving and progress.get("percent", 100) < 100 else None

        obj = wait_for(f"{NAME} mid-run with progress", mid_run, POD_TIMEOUT, interval=1.0)
        row = table_row(control_plane.kubectl("get", "exp", NAME, "-n", ns).stdout)
        watched = watch_once(ns)
        artifact_table = control_plane.kubectl("get", "art", "-n", ns).stdout.splitlines()
        artifact = get(control_plane, ns, "artifacts")["items"][0]

        done = wait_for(f"{NAME} finished", lambda: finished(control_plane, ns, NAME), POD_TIMEOUT)
        final_row = table_row(control_plane.kubectl("get", "exp", NAME, "-n", ns).stdout)
        final_watch = watch_once(ns)

    status = obj["status"]
    print(f"mid-run: kubectl get exp -> {row}; status.progress {status['progress']}; watch: {watched.output}")
    # The columns read the summed status: a percent below 100 and dollars above zero while the Job runs.
    assert re.fullmatch(r"\d{1,2}%", row["PROGRESS"]), row
    assert re.fullmatch(r"\$\d+\.\d{4}", row["COST"]), row
    assert row["COST"] != "$0.0000", row
    assert row["RUNNING"] == "1", row
    assert 0 < status["progress"]["requestsDone"] < status["progress"]["requestsTotal"] == 18, status
    # The Artifact carries the worker's report; PHASE and REASON columns are there.
    report = artifact["status"].get("progress") or {}
    assert report.get("unit") == "requests", artifact["status"]
    assert report.get("total") == 18, report
    header = artifact_table[0].split()
    assert {"READY", "PHASE", "REASON"} <= set(header), artifact_table
    assert re.search(r"\s(Running|Ready)\s", artifact_table[1]), artifact_table
    # `datasweep watch --cluster --once` prints the same, and exits 0 (no failure).
    assert watched.exit_code == 0, watched.output
    assert f"{NAME}: 1 points: 0 succeeded, 1 running, 0 pending, 0 failed; " in watched.output, watched.output
    assert " so far (" in watched.output
    assert "requests " in watched.output
    # At the end: 100%, the Job's whole cost, and watch says finished.
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    assert final_row["PROGRESS"] == "100%", final_row
    paid = done["status"]["usage"]["costUsd"]
    assert final_row["COST"] == f"${paid:.4f}", (final_row, paid)
    assert final_watch.exit_code == 0, final_watch.output
    assert final_watch.output.rstrip().endswith("finished"), final_watch.output
    assert "1 succeeded" in final_watch.output
