"""Issue 17, fault: the API server restarted mid-sweep (kwok runs the Jobs). The operator in this process loses
its watches and every request fails while the API server is down; it must reconnect and finish the sweep
with exactly one Job per Artifact and counts that never go backwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.operator_harness import apply, experiment, running_operator, wait_for
from tests.e2e.test_operator import succeeded
from tests.e2e.test_scale import Watcher, assert_one_job_per_artifact, jobs, status_of

PARALLELISM = 8
POINTS = 40
# 5 temperatures x 8 top_p values = 40 points
SWEEP = {"temperature": [0.1, 0.3, 0.5, 0.7, 0.9], "topP": [round(0.1 * i, 1) for i in range(3, 11)]}


def apiserver_pid(control_plane: Any) -> int:
    return int(next(p.pid for p in control_plane.processes if p.name == "kube-apiserver"))


def test_sweep_finishes_across_an_api_server_restart(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    sweep = experiment("restart", purpose="restart", parallelism=PARALLELISM, generation=SWEEP)
    watcher = Watcher(control_plane, ns, "restart", PARALLELISM)
    with running_operator(ns, data_root, tmp_path), watcher.running():
        apply(control_plane, ns, sweep)
        wait_for("10 Jobs", lambda: len(jobs(control_plane, ns)) >= 10, timeout=300, interval=0.5)
        before = apiserver_pid(control_plane)
        # Down long enough for the operator's watches and requests to fail, not only to be cut.
        control_plane.restart_apiserver(down_seconds=5)
        assert apiserver_pid(control_plane) != before
        restarted_at = len(jobs(control_plane, ns))
        assert restarted_at < POINTS, "the sweep ended before the API server restart could be tested"
        wait_for(
            f"{POINTS} points done after the restart",
            lambda: succeeded(control_plane, ns, "restart", POINTS),
            timeout=600,
            interval=2,
            explain=lambda: status_of(control_plane, ns, "restart"),
        )
    watcher.check()
    assert any(s.get("succeeded", 0) < POINTS for s in watcher.samples), "no sample saw the sweep unfinished"
    assert_one_job_per_artifact(control_plane, ns, "restart", POINTS)
