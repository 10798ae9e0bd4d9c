"""Fan-out of an N-point sweep on the real control plane (issue 14), side by side with a bare client.

(a) a bare client (the operator's client layer, no operator) creates N Artifacts and N Jobs, 8 in flight;
(b) the operator (`datasweep operator`, its own process) from `kubectl apply` of an N-point Experiment until
    its N Artifacts and N Jobs exist;
(c) the same grid applied as a second Experiment (every point a cache hit) until it is Succeeded, counting
    the Jobs it creates (must be 0);
(d) the operator's RSS and CPU over 60 s of idling with the N Artifacts present.

(a) runs again after (c), in a fresh namespace: the ratios divide by the mean of both bare runs, so that a
machine whose load changes during the run (other tests, other clusters) skews them less. (b) starts once the
operator answers its liveness probe: its start-up (imports, login, watches) is not fan-out.

Targets: (b)/(a) <= 2.0, (c)/(a) <= 1.0, RSS <= 300 MB, idle CPU <= 2% of a core.

    python bench/bench_fanout.py [--points 1000] [--idle 60] [--qps 500]

`--points 10000` runs the large case (slow on a small machine: see docs/scale.md for what was measured);
`--points 10000 --idle-only` measures (d) alone, on 10,000 Ready Artifacts the bare client makes.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO))

from tests.e2e.operator_harness import (  # noqa: E402
    apply,
    cluster_fixtures,
    condition,
    experiment,
    get,
    install_crds,
    wait_for,
    write_dataset,
)

from controlplane import ControlPlane, build  # noqa: E402
from datasweep.k8s import client, labels  # noqa: E402

CONCURRENCY = 8


def grid(points: int) -> dict[str, Any]:
    """`points` distinct generation settings: temperatures x maxTokens."""
    temperatures = [round(0.01 * i, 2) for i in range(100)]
    tokens = list(range(64, 64 + max(1, points // 100)))
    if points < 100:
        temperatures = temperatures[:points]
        tokens = tokens[:1]
    assert len(temperatures) * len(tokens) == points, "use a multiple of 100 (or fewer than 100)"
    return {"temperature": temperatures, "maxTokens": tokens}


def count(plane: ControlPlane, namespace: str, kind: str, selector: str = "") -> int:
    args = ["get", kind, "-n", namespace, "-o", "name"]
    if selector:
        args += ["-l", selector]
    return len(plane.kubectl(*args).stdout.split())


def new_namespace(plane: ControlPlane, name: str, data_root: Path) -> str:
    plane.kubectl("create", "namespace", name)
    wait_for(
        "default service account",
        lambda: plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    cluster_fixtures(plane, name, data_root)
    return name


def bare_artifact(index: int, consumer: str | None = None) -> dict[str, Any]:
    """An Artifact as a bare client writes it: marked imported (no Job to run), or consumed by `consumer` (its
    label and first-experiment annotation, as the operator's Experiment handler writes them)."""
    metadata: dict[str, Any] = {"name": f"bare-{index:05d}", "labels": {"datasweep.io/imported": "true"}}
    if consumer is not None:
        metadata = {
            "name": f"bare-{index:05d}",
            "labels": labels.consumer_marks(consumer, "bench")["labels"],
            "annotations": {labels.FIRST_EXPERIMENT: consumer, labels.FIRST_BATCH: "bench"},
        }
    return {
        "apiVersion": "datasweep.io/v1alpha1",
        "kind": "Artifact",
        "metadata": metadata,
        "spec": {
            "stage": "generate",
            "dataset": "Copa",
            "fingerprint": f"{index:064x}",
            "semanticName": f"bare_{index}",
            "storage": {"path": f"_shared/Copa/bare_{index}"},
        },
    }


def bare_client(plane: ControlPlane, namespace: str, points: int) -> float:
    """(a): what the API server and the Job controller take for N Artifacts and N Jobs, no operator."""

    def job(index: int) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"bare-{index:05d}", "labels": {"bench": "bare"}},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "w", "image": "busybox"}],
                    }
                },
            },
        }

    def both(index: int) -> None:
        client.create_custom(namespace, bare_artifact(index))
        client.create_job(namespace, job(index))

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(both, range(points)))
    return time.monotonic() - started


def api_requests(plane: ControlPlane) -> collections.Counter[str]:
    """kube-apiserver's own count of the requests it answered so far, by verb and resource (its /metrics)."""
    tally: collections.Counter[str] = collections.Counter()
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            if fields.get("verb") in ("WATCH", "CONNECT"):
                continue  # long-running: counted when they end, not per event
            resource = fields.get("resource", "") + (f"/{fields['subresource']}" if fields.get("subresource") else "")
            tally[f"{fields.get('verb')} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
    return tally


def print_requests(what: str, before: collections.Counter[str], after: collections.Counter[str], n: int) -> None:
    """The requests the API server answered during one phase, per point: where its time went."""
    spent = after - before
    top = ", ".join(f"{key} {count / n:.2f}" for key, count in spent.most_common(8))
    print(f"    API requests during {what}: {sum(spent.values()) / n:.2f} per point ({top})", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def operator_process(
    namespace: str, work: Path, data_root: Path, points: int, qps: float, liveness: str, creates: int = CONCURRENCY
) -> subprocess.Popen[bytes]:
    config = work / "operator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataRoot": str(data_root),
                "maxPoints": points,
                "apiQps": qps,
                "apiBurst": int(qps * 2),
                "maxJobsPerNamespace": 0,
                "createConcurrency": creates,
                # kwok runs no worker, so no manifest appears (as in tests/e2e/operator_harness.py): without
                # this every Job "fails" with NoManifest and (c) never sees a Succeeded Experiment.
                "requireManifest": False,
            }
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"))
    log = (work / "operator.log").open("wb")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "datasweep", "operator", "--namespace", namespace),
            *("--config", str(config), "--liveness", liveness),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def succeeded(plane: ControlPlane, namespace: str, name: str) -> bool:
    obj = get(plane, namespace, "experiment", name)
    return condition(obj, "Succeeded").get("status") == "True"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(d): the operator's RSS (MB) after `seconds` of idling, and its CPU meanwhile (% of a core)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return rss_mb(pid), (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100


def stop(operator: subprocess.Popen[bytes]) -> None:
    operator.send_signal(signal.SIGTERM)
    try:
        operator.wait(30)
    except subprocess.TimeoutExpired:
        operator.kill()


def idle_only(plane: ControlPlane, work: Path, data_root: Path, n: int, qps: float, idle: float) -> int:
    """(d) alone, for an N whose full fan-out does not fit this machine: N Ready Artifacts made by the bare
    client as the operator would have left them, then the operator started on them: its start-up (every
    Artifact goes through its handler once), then RSS and CPU while idle."""
    ns = new_namespace(plane, "bench-idle", data_root)
    ready = {"phase": "Ready", "firstExperiment": "idle", "firstBatch": "bench", "attempts": 1}

    def make(index: int) -> None:
        client.create_custom(ns, bare_artifact(index, consumer="idle"))
        client.patch_status("Artifact", ns, f"bare-{index:05d}", ready)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(make, range(n)))
    print(f"bare client: {n} Ready Artifacts in {time.monotonic() - started:.1f}s", flush=True)
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = operator_process(ns, work, data_root, n, qps, liveness)
    try:
        started = time.monotonic()
        wait_for("the operator's liveness probe", lambda: live(liveness), timeout=300)
        # Start-up is over when a 10 s window costs less than 2% of a core.
        while True:
            cpu0, t0 = cpu_seconds(operator.pid), time.monotonic()
            time.sleep(10)
            if (cpu_seconds(operator.pid) - cpu0) / (time.monotonic() - t0) < 0.02:
                break
        settled = time.monotonic() - started - 10
        print(f"operator start-up over {n} Artifacts: {settled:.0f}s, RSS {rss_mb(operator.pid):.0f} MB", flush=True)
        rss, idle_cpu = idle_usage(operator.pid, idle)
    finally:
        stop(operator)
    print(f"\nN = {n} Artifacts, idle only (made by the bare client: the full fan-out is not run at this N)")
    print(f"{'measure':<22}{'value':>10}{'target':>10}  ok")
    for name, value, target in (("RSS MB", rss, 300.0), ("idle CPU %", idle_cpu, 2.0)):
        print(f"{name:<22}{value:>10.2f}{target:>10.2f}  {'yes' if value <= target else 'NO'}")
    print(f"operator log: {work / 'operator.log'}")
    return 0 if rss <= 300 and idle_cpu <= 2.0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idling measured in (d)")
    parser.add_argument("--qps", type=float, default=500.0, help="the operator's apiQps for this run")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--creates", type=int, default=CONCURRENCY, help="the operator's createConcurrency (the bare client keeps 8)"
    )
    parser.add_argument(
        "--idle-only", action="store_true", help="(d) alone, on N Ready Artifacts made by the bare client"
    )
    args = parser.parse_args()
    n = args.points
    build()
    work = Path(tempfile.mkdtemp(prefix="datasweep-bench-fanout-"))
    data_root = work / "data"
    write_dataset(data_root)
    # No real node: every Job here runs on kwok, and a kubelet would only take CPU from the control plane.
    with ControlPlane.start(real_node=False) as plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        client.reset()
        install_crds(plane)
        if args.idle_only:
            return idle_only(plane, work, data_root, n, args.qps, args.idle)

        bare_ns = new_namespace(plane, "bench-bare", data_root)
        before = api_requests(plane)
        t_a = bare_client(plane, bare_ns, n)
        print(f"(a) bare client: {n} Artifacts + {n} Jobs in {t_a:.1f}s", flush=True)
        print_requests("(a)", before, api_requests(plane), n)

        ns = new_namespace(plane, "bench-operator", data_root)
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = operator_process(ns, work, data_root, n, args.qps, liveness, args.creates)
        try:
            # The operator's start-up (imports, login, CRD discovery, first LISTs) is not fan-out.
            wait_for("the operator's liveness probe", lambda: live(liveness), timeout=300)
            time.sleep(1)
            first = experiment("fanout-a", purpose="fanout", parallelism=1024, maxPoints=n, generation=grid(n))
            before, operator_cpu = api_requests(plane), cpu_seconds(operator.pid)
            started = time.monotonic()
            apply(plane, ns, first)
            wait_for(
                f"{n} Artifacts and {n} Jobs",
                lambda: count(plane, ns, "artifacts") >= n and count(plane, ns, "jobs", "datasweep.io/artifact") >= n,
                timeout=args.timeout,
                interval=1,
            )
            t_b = time.monotonic() - started
            print(f"(b) operator: {n} Artifacts + {n} Jobs exist {t_b:.1f}s after apply", flush=True)
            print_requests("(b)", before, api_requests(plane), n)
            print(f"    operator CPU during (b): {cpu_seconds(operator.pid) - operator_cpu:.1f}s", flush=True)
            wait_for("the first Experiment done", lambda: succeeded(plane, ns, "fanout-a"), timeout=args.timeout)

            jobs_before = count(plane, ns, "jobs", "datasweep.io/artifact")
            second = experiment("fanout-b", purpose="fanout", parallelism=1024, maxPoints=n, generation=grid(n))
            started = time.monotonic()
            apply(plane, ns, second)
            wait_for("the second Experiment done", lambda: succeeded(plane, ns, "fanout-b"), timeout=args.timeout)
            t_c = time.monotonic() - started
            new_jobs = count(plane, ns, "jobs", "datasweep.io/artifact") - jobs_before
            print(f"(c) re-apply, all hits: Succeeded in {t_c:.1f}s, {new_jobs} new Jobs", flush=True)

            t_a2 = bare_client(plane, new_namespace(plane, "bench-bare-again", data_root), n)
            print(f"(a) again: {t_a2:.1f}s; the ratios divide by the mean, {(t_a + t_a2) / 2:.1f}s", flush=True)
            t_a = (t_a + t_a2) / 2

            time.sleep(5)  # the last coalesced status writes
            rss, idle_cpu = idle_usage(operator.pid, args.idle)
            print(f"(d) idle with {count(plane, ns, 'artifacts')} Artifacts: RSS {rss:.0f} MB, CPU {idle_cpu:.2f}%")
        finally:
            stop(operator)

    rows = [
        ("(b)/(a) fan-out", t_b / t_a, 2.0),
        ("(c)/(a) all hits", t_c / t_a, 1.0),
        ("RSS MB", rss, 300.0),
        ("idle CPU %", idle_cpu, 2.0),
        ("new Jobs on re-apply", float(new_jobs), 0.0),
    ]
    print(
        f"\nN = {n} points (operator apiQps {args.qps:g}, createConcurrency {args.creates}; bare client {CONCURRENCY})"
    )
    print(f"{'measure':<22}{'value':>10}{'target':>10}  ok")
    for name, value, target in rows:
        print(f"{name:<22}{value:>10.2f}{target:>10.2f}  {'yes' if value <= target else 'NO'}")
    print(f"operator log: {work / 'operator.log'}")
    return 0 if all(value <= target for _, value, target in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
