"""Fan-out of an N-point sweep on the real control plane (issue 14), side by side with a bare client.

(a) a bare client (the operator's client layer, no operator) creates N Artifacts and N Jobs, 8 in flight: the
    objects the operator would write, built by its planner and builders;
(b) the operator (`datasweep operator`, its own process) from `kubectl apply` of an N-point Experiment until
    its N Artifacts and N Jobs exist;
(c) the same grid applied as a second Experiment (every point a cache hit) until it is Succeeded, counting
    the Jobs it creates (must be 0);
(d) the operator's RSS and CPU over 60 s of idling with the N Artifacts present.
During (a) and (b) it prints the API requests per point (kube-apiserver's /metrics) and each component's CPU.

(a) runs again after (c), in a fresh namespace: the ratios divide by the mean of both bare runs, so that a
machine whose load changes during the run (other tests, other clusters) skews them less. (b) starts once the
operator answers its liveness probe: its start-up (imports, login, watches) is not fan-out.

Targets: (b)/(a) <= 2.0, (c)/(a) <= 1.0, RSS <= 300 MB, idle CPU <= 2% of a core.

    python bench/bench_fanout.py [--points 1000] [--idle 60] [--qps 500]

`--points 10000` runs the large case (slow on a small machine: see docs/scale.md for what was measured);
`--points 10000 --idle-only` measures (d) alone, on 10,000 Ready Artifacts the bare client makes;
`--points 1000 --kill-after 300` SIGKILLs the operator once 300 Jobs exist and checks the sweep still finishes
with one Job per Artifact; `--points 1000 --kills 3 --kill-after 20s` SIGKILLs it three times in the first 20 s
after the apply (each time once the restarted operator is live again). Either exits non-zero when the sweep does
not finish, an Artifact is not Ready, or an Artifact has more than one Job.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
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
    install_crds,
    wait_for,
    write_dataset,
)

from controlplane import ControlPlane, build  # noqa: E402
from datasweep.api.experiment import parse_spec  # noqa: E402
from datasweep.api.settings import CONFIG_ENV  # noqa: E402
from datasweep.controller import experiment as experiment_handler  # noqa: E402
from datasweep.controller import setup  # noqa: E402
from datasweep.k8s import builders, client, labels  # noqa: E402
from datasweep.store import layout  # noqa: E402

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


def sweep(name: str, points: int) -> dict[str, Any]:
    """The bench's N-point Experiment (every point's Job may run at once)."""
    return experiment(name, purpose="fanout", parallelism=1024, maxPoints=points, generation=grid(points))


def count(plane: ControlPlane, namespace: str, kind: str, selector: str = "") -> int:
    args = ["get", kind, "-n", namespace, "-o", "name"]
    if selector:
        args += ["-l", selector]
    return len(plane.kubectl(*args).stdout.split())


class Creations:
    """Counts the Artifacts and our Jobs created in a namespace from two watches, so that waiting for (b) costs the
    API server one event per object: polling with `kubectl get` (a process and a LIST of every object, every
    second) cost a large share of this 2-core machine during (b), and (a) has no such poller."""

    def __init__(self, namespace: str) -> None:
        self.names: dict[str, set[str]] = {"artifacts": set(), "jobs": set()}
        self._changed = threading.Condition()
        custom = client.custom()
        artifacts = functools.partial(
            custom.list_namespaced_custom_object, "datasweep.io", "v1alpha1", namespace, "artifacts"
        )
        jobs = functools.partial(client.batch_api().list_namespaced_job, namespace, label_selector=labels.ARTIFACT)
        for kind, lister in (("artifacts", artifacts), ("jobs", jobs)):
            threading.Thread(target=self._follow, args=(kind, lister), daemon=True).start()

    def _follow(self, kind: str, lister: Any) -> None:
        from kubernetes import watch

        version = ""
        stream = watch.Watch().stream  # type: ignore[no-untyped-call,unused-ignore]
        try:
            while True:  # a watch the API server ends is resumed from the last version seen
                for event in stream(lister, resource_version=version, timeout_seconds=300):  # type: ignore[no-untyped-call,unused-ignore]
                    obj = event["object"]
                    metadata = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
                    version = metadata["resource_version" if "resource_version" in metadata else "resourceVersion"]
                    with self._changed:
                        self.names[kind].add(metadata["name"])
                        self._changed.notify_all()
        except Exception:  # the control plane stopped at the end of the run
            return

    def wait(self, artifacts: int, jobs: int, timeout: float) -> None:
        with self._changed:
            wanted = {"artifacts": artifacts, "jobs": jobs}
            if not self._changed.wait_for(lambda: all(len(self.names[k]) >= n for k, n in wanted.items()), timeout):
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {wanted}: {self.counts()}")

    def counts(self) -> dict[str, int]:
        with self._changed:
            return {kind: len(names) for kind, names in self.names.items()}


def new_namespace(plane: ControlPlane, name: str, data_root: Path) -> str:
    plane.kubectl("create", "namespace", name)
    wait_for(
        "default service account",
        lambda: plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    cluster_fixtures(plane, name, data_root)
    return name


def bare_objects(namespace: str, points: int, consumer: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The Artifact and Job of each point of the bench's N-point Experiment, built by the operator's own planner
    and builders (no storage claim on the volume, no owner reference): the bare client writes the same objects
    the operator writes, so that (a) and (b) differ only by the operator."""
    spec = parse_spec(sweep(consumer, points)["spec"])
    plan = experiment_handler.plan_for(namespace, spec, datetime.now(UTC))
    config = setup.settings()
    objects = []
    for point in plan.points:
        stage = point.generate
        path = layout.shared_relpath(stage.dataset, f"{stage.semantic_name}_{stage.short_fingerprint}")
        artifact = experiment_handler.planned_artifact(spec, stage, path, plan, {}, consumer, None)
        objects.append((artifact, builders.worker_job(artifact, attempt=0, settings=config, queue_name=None)))
    return objects


def bare_client(plane: ControlPlane, namespace: str, points: int) -> float:
    """(a): what the API server and the Job controller take for N Artifacts and N Jobs, no operator."""
    objects = bare_objects(namespace, points, "bare")

    def both(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
        client.create_custom(namespace, pair[0])
        client.create_job(namespace, pair[1])

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(both, objects))
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


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok")


def control_plane_cpu() -> collections.Counter[str]:
    """CPU seconds used so far by each control-plane component (every process of this machine by that name)."""
    used: collections.Counter[str] = collections.Counter()  # float values: Counter's typing says int
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            command, fields = stat.read_text().split("(", 1)[1].rsplit(")", 1)
        except OSError:
            continue  # gone meanwhile
        if command.startswith(CONTROL_PLANE):
            ticks = fields.split()
            used[command] += (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")  # type: ignore[assignment]
    return used


def snapshot(plane: ControlPlane) -> tuple[collections.Counter[str], collections.Counter[str]]:
    return api_requests(plane), control_plane_cpu()


def print_work(what: str, before: tuple[collections.Counter[str], ...], plane: ControlPlane, n: int) -> None:
    """What the API server answered during one phase, per point, and the CPU each component spent: where the
    time went."""
    requests, cpu = (after - earlier for after, earlier in zip(snapshot(plane), before, strict=True))
    top = ", ".join(f"{key} {count / n:.2f}" for key, count in requests.most_common(8))
    print(f"    API requests during {what}: {sum(requests.values()) / n:.2f} per point ({top})", flush=True)
    print(f"    CPU seconds during {what}: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.most_common()), flush=True)


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


def write_config(work: Path, data_root: Path, points: int, qps: float, creates: int) -> Path:
    """The operator's settings; the bench process reads them too, to build the bare client's objects."""
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
    os.environ[CONFIG_ENV] = str(config)
    setup.settings.cache_clear()
    return config


def operator_process(
    namespace: str, work: Path, config: Path, liveness: str, log_name: str = "operator.log"
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"))
    log = (work / log_name).open("wb")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "datasweep", "operator", "--namespace", namespace),
            *("--config", str(config), "--liveness", liveness),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def succeeded(namespace: str, name: str) -> bool:
    """A GET from this process: a `kubectl` process twice a second would take CPU from what (c) measures."""
    obj = client.get_custom("Experiment", namespace, name) or {}
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


def idle_only(plane: ControlPlane, work: Path, config: Path, data_root: Path, n: int, idle: float) -> int:
    """(d) alone, for an N whose full fan-out does not fit this machine: N Ready Artifacts made by the bare
    client as the operator would have left them, then the operator started on them: its start-up (every
    Artifact goes through its handler once), then RSS and CPU while idle."""
    ns = new_namespace(plane, "bench-idle", data_root)

    def make(artifact: dict[str, Any]) -> None:
        client.create_custom(ns, artifact)
        name, annotations = artifact["metadata"]["name"], artifact["metadata"]["annotations"]
        ready = {
            "phase": "Ready",
            "firstExperiment": "idle",
            "firstBatch": annotations[labels.FIRST_BATCH],
            "attempts": 1,
            "job": f"{name}-0",
            "startedAt": "2026-12-01T00:00:00Z",
            "completedAt": "2026-12-01T00:01:00Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Produced",
                    "message": f"Job {name}-0 completed",
                    "lastTransitionTime": "2026-12-01T00:01:00Z",
                }
            ],
        }
        client.patch_status("Artifact", ns, name, ready)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(make, (artifact for artifact, _ in bare_objects(ns, n, "idle"))))
    print(f"bare client: {n} Ready Artifacts in {time.monotonic() - started:.1f}s", flush=True)
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = operator_process(ns, work, config, liveness)
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


def kill_points(kill_after: str, kills: int) -> tuple[str, list[float]]:
    """`--kill-after 300`: once 300 Jobs exist; `--kill-after 20s`: within 20 s of the apply. `kills` kills, spread
    evenly up to that point: ("jobs" or "seconds", the thresholds). In seconds the kills sit mid-slot (20 s, 3 kills:
    3.3, 10, 16.7 s): each restart takes seconds before the next kill can hit a running operator."""
    unit = "seconds" if kill_after.endswith("s") else "jobs"
    limit = float(kill_after.rstrip("s"))
    if unit == "seconds":
        return unit, [limit * (i + 0.5) / kills for i in range(kills)]
    return unit, [limit * (i + 1) / kills for i in range(kills)]


def killed_midway(
    plane: ControlPlane, work: Path, data_root: Path, config: Path, n: int, kill_after: str, kills: int, timeout: float
) -> int:
    """An N-point sweep whose operator is SIGKILLed `kills` times (once K of its Jobs exist, or within K seconds),
    each time started again: it must finish with every Artifact Ready and exactly one Job per Artifact, its
    succeeded count never going down."""
    ns = new_namespace(plane, "bench-kill", data_root)
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = operator_process(ns, work, config, liveness)
    wait_for("the operator's liveness probe", lambda: live(liveness), timeout=300)
    creations = Creations(ns)
    time.sleep(1)  # the watches are open
    started = time.monotonic()
    apply(plane, ns, sweep("fanout-kill", n))
    unit, thresholds = kill_points(kill_after, kills)
    limit = float(kill_after.rstrip("s"))
    logs = [work / "operator.log"]
    for number, threshold in enumerate(thresholds, 1):
        if unit == "jobs":
            creations.wait(0, int(threshold), timeout)
        else:
            time.sleep(max(0.0, started + threshold - time.monotonic()))
        operator.kill()
        operator.wait(30)
        at = time.monotonic() - started
        late = (
            f" (later than the {kill_after} asked: the restart before it was slow)"
            if unit == "seconds" and at > limit
            else ""
        )
        print(
            f"operator SIGKILLed ({number}/{kills}) {at:.1f}s after apply{late}, with {creations.counts()}", flush=True
        )
        logs.append(work / f"operator-after-kill-{number}.log")
        operator = operator_process(ns, work, config, liveness, logs[-1].name)
        if number < kills:  # the next kill hits an operator that runs, not one still importing
            wait_for("the operator's liveness probe", lambda: live(liveness), timeout=300)
    samples: list[int] = []

    def done() -> bool:
        status = (client.get_custom("Experiment", ns, "fanout-kill") or {}).get("status") or {}
        samples.append(int((status.get("counts") or {}).get("succeeded", 0)))
        return condition({"status": status}, "Succeeded").get("status") == "True"

    finished = True
    try:
        wait_for("the sweep done after the restarts", done, timeout=timeout, interval=2)
    except AssertionError as exc:  # timed out: say what is left, then fail
        finished = False
        print(f"NOT FINISHED: {exc}", flush=True)
    finally:
        stop(operator)
    took = time.monotonic() - started
    jobs = client.batch_api().list_namespaced_job(ns, label_selector=labels.ARTIFACT).items
    per_artifact = collections.Counter(job.metadata.labels[labels.ARTIFACT] for job in jobs)
    duplicates = sum(count > 1 for count in per_artifact.values())
    backwards = sum(later < earlier for earlier, later in itertools.pairwise(samples))
    phases = collections.Counter(
        (a.get("status") or {}).get("phase", "Pending") for a in client.list_custom("Artifact", ns)
    )
    when = f"once {kill_after} Jobs existed" if unit == "jobs" else f"within {kill_after} of the apply"
    print(
        f"\nN = {n} points, operator SIGKILLed {kills} time(s) {when} and started again each time: "
        + (f"Succeeded {took:.1f}s after apply; " if finished else f"NOT Succeeded after {took:.1f}s; ")
        + f"Artifacts by phase {dict(phases)}; {len(jobs)} Jobs for {len(per_artifact)} Artifacts, {duplicates} "
        f"Artifacts with more than one Job; succeeded count went down {backwards} times in {len(samples)} samples"
    )
    print("operator logs: " + ", ".join(str(log) for log in logs))
    ok = finished and phases.get("Ready", 0) == n and len(jobs) == n and not duplicates and not backwards
    return 0 if ok else 1


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
    parser.add_argument(
        "--kill-after",
        default="",
        metavar="K",
        help="instead of (a)-(d): SIGKILL the operator once K Jobs exist (K) or within K seconds of the apply (Ks), "
        "start it again, check the sweep finishes with one Job per Artifact",
    )
    parser.add_argument("--kills", type=int, default=1, help="with --kill-after: how many times, spread evenly")
    args = parser.parse_args()
    n = args.points
    build()
    work = Path(tempfile.mkdtemp(prefix="datasweep-bench-fanout-"))
    data_root = work / "data"
    write_dataset(data_root)
    config = write_config(work, data_root, n, args.qps, args.creates)
    # No real node: every Job here runs on kwok, and a kubelet would only take CPU from the control plane.
    with ControlPlane.start(real_node=False) as plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        client.reset()
        install_crds(plane)
        if args.idle_only:
            return idle_only(plane, work, config, data_root, n, args.idle)
        if args.kill_after:
            return killed_midway(plane, work, data_root, config, n, args.kill_after, args.kills, args.timeout)

        bare_ns = new_namespace(plane, "bench-bare", data_root)
        before = snapshot(plane)
        t_a = bare_client(plane, bare_ns, n)
        print(f"(a) bare client: {n} Artifacts + {n} Jobs in {t_a:.1f}s", flush=True)
        print_work("(a)", before, plane, n)

        ns = new_namespace(plane, "bench-operator", data_root)
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = operator_process(ns, work, config, liveness)
        try:
            # The operator's start-up (imports, login, CRD discovery, first LISTs) is not fan-out.
            wait_for("the operator's liveness probe", lambda: live(liveness), timeout=300)
            time.sleep(1)
            first = sweep("fanout-a", n)
            creations = Creations(ns)
            time.sleep(1)  # the watches are open
            before, operator_cpu = snapshot(plane), cpu_seconds(operator.pid)
            started = time.monotonic()
            apply(plane, ns, first)
            creations.wait(n, n, args.timeout)
            t_b = time.monotonic() - started
            print(f"(b) operator: {n} Artifacts + {n} Jobs exist {t_b:.1f}s after apply", flush=True)
            print_work("(b)", before, plane, n)
            print(f"    operator CPU during (b): {cpu_seconds(operator.pid) - operator_cpu:.1f}s", flush=True)
            wait_for("the first Experiment done", lambda: succeeded(ns, "fanout-a"), timeout=args.timeout)

            jobs_before = count(plane, ns, "jobs", "datasweep.io/artifact")
            second = sweep("fanout-b", n)
            started = time.monotonic()
            apply(plane, ns, second)
            wait_for("the second Experiment done", lambda: succeeded(ns, "fanout-b"), timeout=args.timeout)
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
