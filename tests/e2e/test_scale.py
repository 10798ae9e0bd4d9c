"""Issue 14 on the real control plane (kwok runs the Jobs): a 200-point sweep with parallelism 16 finishes,
never above 16 Jobs running, with counts that never go backwards; the same across an operator SIGKILL; and two
peered replicas where the active one is killed mid-sweep and the standby finishes with no duplicate Job."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.operator_harness import apply, experiment, get, operator_process, running_operator, wait_for
from tests.e2e.test_operator import succeeded

PARALLELISM = 16
# 20 temperatures x 10 top_p values = 200 points
SWEEP = {
    "temperature": [round(0.05 * i, 2) for i in range(20)],
    "topP": [round(0.1 * i, 1) for i in range(1, 11)],
}


class Watcher:
    """Samples the Jobs and the Experiment's counts while the sweep runs (kubectl, its own thread)."""

    def __init__(self, control_plane: Any, namespace: str, name: str, parallelism: int = PARALLELISM) -> None:
        self.plane, self.namespace, self.name = control_plane, namespace, name
        self.parallelism = parallelism
        self.peak_active = 0
        self.samples: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _active_jobs(self) -> int:
        out = self.plane.kubectl(
            "get",
            "jobs",
            "-n",
            self.namespace,
            "-l",
            "datasweep.io/artifact",
            "-o",
            'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.conditions[*].type}{"\\n"}{end}',
            check=False,
        ).stdout
        return sum(1 for line in out.splitlines() if line and "Complete" not in line and "Failed" not in line)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_active = max(self.peak_active, self._active_jobs())
            raw = self.plane.kubectl(
                "get", "experiment", self.name, "-n", self.namespace, "-o", "jsonpath={.status.counts}", check=False
            ).stdout
            if raw.strip():
                self.samples.append(json.loads(raw))
            self._stop.wait(0.5)

    @contextmanager
    def running(self) -> Iterator[Watcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def check(self) -> None:
        limit = self.parallelism
        assert self.peak_active <= limit, f"{self.peak_active} Jobs ran at once (parallelism {limit})"
        succeeded = [s.get("succeeded", 0) for s in self.samples]
        assert succeeded == sorted(succeeded), f"succeeded went backwards: {succeeded}"
        busiest = max(self.samples, key=lambda s: s.get("running", 0), default={})
        assert busiest.get("running", 0) <= limit, f"status counts {busiest} (Jobs at most {self.peak_active})"


def status_of(control_plane: Any, ns: str, name: str) -> Any:
    """The Experiment's status (counts, conditions, failures): what a timeout reports."""
    return get(control_plane, ns, "experiment", name).get("status")


def jobs(control_plane: Any, ns: str) -> list[dict[str, Any]]:
    return list(get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"])


def assert_one_job_per_artifact(control_plane: Any, ns: str, name: str, points: int) -> None:
    found = jobs(control_plane, ns)
    produced = [j["metadata"]["labels"]["datasweep.io/artifact"] for j in found]
    assert len(produced) == points
    assert len(set(produced)) == points, "an Artifact got two Jobs"
    labelled = get(control_plane, ns, "artifacts", selector=f"exp.datasweep.io/{name}")["items"]
    assert sorted(a["metadata"]["name"] for a in labelled) == sorted(produced)
    obj = get(control_plane, ns, "experiment", name)
    assert "points" not in obj["status"]
    assert obj["status"]["counts"]["succeeded"] == points


def batch_ready(control_plane: Any, ns: str) -> int:
    items = get(control_plane, ns, "batches")["items"]
    return int(((items[0].get("status") or {}).get("counts") or {}).get("ready", 0)) if items else 0


def test_200_point_sweep_finishes_within_parallelism(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    sweep = experiment("wide", purpose="wide", parallelism=PARALLELISM, generation=SWEEP)
    watcher = Watcher(control_plane, ns, "wide")
    with running_operator(ns, data_root, tmp_path), watcher.running():
        apply(control_plane, ns, sweep)
        wait_for(
            "200 points done",
            lambda: succeeded(control_plane, ns, "wide", 200),
            timeout=600,
            interval=2,
            explain=lambda: status_of(control_plane, ns, "wide"),
        )
        # The Batch follows its Experiment's status event, written coalesced (about a second later).
        wait_for("the Batch counts 200 ready", lambda: batch_ready(control_plane, ns) == 200, timeout=30)
    watcher.check()
    assert_one_job_per_artifact(control_plane, ns, "wide", 200)
    batch = get(control_plane, ns, "batches")["items"][0]
    assert batch["status"]["counts"]["ready"] == 200
    assert "points" not in batch["status"]


def test_200_point_sweep_survives_an_operator_sigkill(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    sweep = experiment("killed", purpose="killed", parallelism=PARALLELISM, generation=SWEEP)
    watcher = Watcher(control_plane, ns, "killed")
    with watcher.running():
        with operator_process(ns, data_root, tmp_path) as first:
            apply(control_plane, ns, sweep)
            wait_for("40 Jobs", lambda: len(jobs(control_plane, ns)) >= 40, timeout=300, interval=1)
            first.send_signal(signal.SIGKILL)
            first.wait()
        with operator_process(ns, data_root, tmp_path):
            wait_for(
                "200 points done",
                lambda: succeeded(control_plane, ns, "killed", 200),
                timeout=600,
                interval=2,
                explain=lambda: status_of(control_plane, ns, "killed"),
            )
    watcher.check()
    assert_one_job_per_artifact(control_plane, ns, "killed", 200)


def test_standby_replica_finishes_when_the_active_one_is_killed(
    control_plane: Any, ready_namespace: str, data_root: Path, tmp_path: Path
) -> None:
    ns = ready_namespace
    apply(
        control_plane,
        ns,
        {"apiVersion": "zalando.org/v1", "kind": "KopfPeering", "metadata": {"name": "datasweep"}},
    )
    points = 60
    sweep = experiment(
        "ha",
        purpose="ha",
        parallelism=PARALLELISM,
        generation={"temperature": SWEEP["temperature"][:6], "topP": SWEEP["topP"]},
    )
    peering = {"peering": "datasweep", "peeringLifetimeSeconds": 10}
    with (
        operator_process(ns, data_root, tmp_path, priority=200, **peering) as active,
        operator_process(ns, data_root, tmp_path, priority=100, **peering) as standby,
    ):
        wait_for(
            "both replicas in the peering object",
            lambda: len(get(control_plane, ns, "kopfpeering", "datasweep").get("status") or {}) >= 2,
            timeout=120,
        )
        apply(control_plane, ns, sweep)
        wait_for("a third of the Jobs", lambda: len(jobs(control_plane, ns)) >= points // 3, timeout=300, interval=1)
        active.send_signal(signal.SIGKILL)
        active.wait()
        killed_at = len(jobs(control_plane, ns))
        assert killed_at < points, "the sweep ended before the failover could be tested"
        wait_for(
            "the standby finishes",
            lambda: succeeded(control_plane, ns, "ha", points),
            timeout=600,
            interval=2,
            explain=lambda: status_of(control_plane, ns, "ha"),
        )
        assert standby.poll() is None
    assert_one_job_per_artifact(control_plane, ns, "ha", points)
