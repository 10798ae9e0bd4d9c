"""The cost of one resync walk (controller/resync.py) over N Artifacts, on Kopf's own index class filled by the
operator's own index functions from synthetic bodies: no cluster, no I/O (the walk does none).

Worst case: every Artifact Running with its Job in flight (each is looked up in three indices), plus some
with a pod that cannot start. Prints the median of the walks, per walk and per Artifact, and the share of one
core that walking every `resyncPeriodSeconds` costs.

    python bench/bench_resync.py [--artifacts 10000] [--walks 20] [--period 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kopf._core.engines.indexing import Index  # noqa: E402

from datasweep.api.settings import OperatorSettings  # noqa: E402
from datasweep.controller.indices import artifact_index, job_end_index, job_index, pod_index  # noqa: E402
from datasweep.controller.resync import Resync  # noqa: E402
from datasweep.core import naming  # noqa: E402
from datasweep.k8s import labels  # noqa: E402

NS = "bench"


def artifact_body(i: int, phase: str) -> dict[str, Any]:
    name = f"gen-copa-temp{i:05d}-0123456789ab"
    return {
        "metadata": {
            "name": name,
            "resourceVersion": str(1000 + i),
            "annotations": {labels.FIRST_EXPERIMENT: "sweep", labels.FIRST_BATCH: "batch_20261207_bench"},
            "labels": {labels.experiment_key("sweep"): "true", labels.batch_key("batch-20261207-bench"): "true"},
        },
        "spec": {"stage": "generate", "fingerprint": "f" * 64, "storage": {"path": f"_shared/Copa/{name}"}},
        "status": {"phase": phase, "attempts": 1, "job": naming.job_name(name, 0)},
    }


def fill(n: int, stuck: int) -> tuple[Index[Any, Any], ...]:
    artifacts: Index[Any, Any] = Index()
    jobs: Index[Any, Any] = Index()
    ends: Index[Any, Any] = Index()
    pods: Index[Any, Any] = Index()
    for i in range(n):
        body = artifact_body(i, "Running")
        name = body["metadata"]["name"]
        artifacts._replace((NS, name), artifact_index(namespace=NS, name=name, body=body))
        job = naming.job_name(name, 0)
        jobs._replace((NS, job), job_index(namespace=NS, name=job, labels={labels.ARTIFACT: name}))
        ended = job_end_index(namespace=NS, name=job, status={})
        if ended:
            ends._replace((NS, job), ended)
        if i < stuck:
            pod = {
                "metadata": {
                    "name": f"{job}-x",
                    "labels": {"job-name": job},
                    "creationTimestamp": "2026-12-07T06:00:00Z",
                },
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [{"image": "w:absent", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}],
                },
            }
            pods._replace((NS, f"{job}-x"), pod_index(namespace=NS, body=pod))
    return artifacts, jobs, ends, pods


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=int, default=10_000)
    parser.add_argument("--walks", type=int, default=20)
    parser.add_argument("--period", type=float, default=30.0, help="resyncPeriodSeconds, for the CPU share")
    args = parser.parse_args()
    started = time.perf_counter()
    indices = fill(args.artifacts, stuck=args.artifacts // 100)
    print(f"indices of {args.artifacts} Running Artifacts filled in {time.perf_counter() - started:.1f}s", flush=True)
    # Reported long ago and far from the limit: the walk decides, acts on none (the decision cost, no writes).
    config = OperatorSettings(pod_stuck_report_seconds=1e9, pod_stuck_timeout_seconds=1e9)
    resync = Resync(*indices, config)
    times = []
    for _ in range(args.walks):
        t0 = time.perf_counter()
        due = resync.walk(time.time())
        times.append(time.perf_counter() - t0)
        assert due == [], due
    median = statistics.median(times)
    print(
        f"walk over {args.artifacts} Artifacts: median {median * 1000:.1f} ms ({median / args.artifacts * 1e6:.2f} us "
        f"per Artifact), max {max(times) * 1000:.1f} ms over {args.walks} walks; every {args.period:.0f}s that is "
        f"{median / args.period * 100:.3f}% of a core"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
