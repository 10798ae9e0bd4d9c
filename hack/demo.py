"""The demo: embedded control plane with kwok GPU nodes, the operator, the seed 000 experiments.

Starts a cluster (built from upstream source, cached), installs the CRDs and the chart's RBAC, runs the operator
in this process, applies experiments A (temperature) and B (top_p) and prints `kubectl get exp,bat,art`, then
stops everything.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO))

from tests.e2e.operator_harness import (  # noqa: E402
    apply,
    cluster_fixtures,
    condition,
    get,
    install_crds,
    running_operator,
    seed_experiments,
    wait_for,
    write_dataset,
)

from controlplane import ControlPlane, build  # noqa: E402

NAMESPACE = "research"
# KopfRunner (click's CliRunner) swaps sys.stdout while the operator runs: write to the terminal itself.
OUT = sys.__stdout__


def show(text: str) -> None:
    print(text, file=OUT, flush=True)


def say(message: str) -> None:
    show(f"\n\033[1m== {message}\033[0m")


def done(plane: ControlPlane, name: str, points: int) -> bool:
    obj = get(plane, NAMESPACE, "experiment", name)
    counts = (obj.get("status") or {}).get("counts", {})
    return counts.get("succeeded") == points and condition(obj, "Succeeded").get("status") == "True"


def main() -> int:
    say("building (or reusing) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl, helm")
    build()
    work = Path(tempfile.mkdtemp(prefix="datasweep-demo-"))
    data_root = work / "data"
    write_dataset(data_root, rows=5)
    say("starting the control plane on loopback with kwok GPU nodes")
    started = time.monotonic()
    with ControlPlane.start() as plane:
        print(f"ready in {time.monotonic() - started:.1f}s; KUBECONFIG={plane.kubeconfig}")
        print(plane.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout)
        import os

        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        say("installing the CRDs and a namespace with an API-key Secret and the data volume")
        install_crds(plane)
        plane.kubectl("create", "namespace", NAMESPACE)
        wait_for(
            "default service account", lambda: plane.kubectl("get", "sa", "default", "-n", NAMESPACE).returncode == 0
        )
        cluster_fixtures(plane, NAMESPACE, data_root)
        experiment_a, experiment_b = seed_experiments()
        with running_operator(NAMESPACE, data_root, work):
            say("experiment A: Copa, temperature 0.5/0.7/0.9, top_p 1.0 (batch_20241229_temperature)")
            apply(plane, NAMESPACE, experiment_a)
            wait_for("experiment A", lambda: done(plane, "copa-temperature", 3), timeout=180)
            say("experiment B: Copa, temperature 0.7, top_p 0.8/0.9/1.0 (batch_20241230_topp)")
            apply(plane, NAMESPACE, experiment_b)
            wait_for("experiment B", lambda: done(plane, "copa-topp", 3), timeout=180)
            time.sleep(1)
            say("kubectl get exp,bat,art")
            show(plane.kubectl("get", "exp,bat,art", "-n", NAMESPACE).stdout)
            experiments = get(plane, NAMESPACE, "experiments")["items"]
            points = sum(e["status"]["counts"]["points"] for e in experiments)
            artifacts = len(get(plane, NAMESPACE, "artifacts")["items"])
            jobs = len(get(plane, NAMESPACE, "jobs", selector="datasweep.io/artifact")["items"])
            # Status holds counts; an Experiment's points are the Artifacts labelled with its name.
            reused = [
                a["spec"]["semanticName"]
                for e in experiments
                for a in get(plane, NAMESPACE, "artifacts", selector=f"exp.datasweep.io/{e['metadata']['name']}")[
                    "items"
                ]
                if a["metadata"]["annotations"]["datasweep.io/first-experiment"] != e["metadata"]["name"]
            ]
            say("the shared volume: one directory per fingerprint, batch views as relative symlinks")
            for path in sorted(data_root.glob("batch_*/*/*")):
                show(f"{path.relative_to(data_root)} -> {path.readlink()}")
        say("stopping")
    print(f"demo finished: {points} points, {artifacts} artifacts, {jobs} Jobs; reused: {', '.join(reused) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
