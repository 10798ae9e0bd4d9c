"""The demo: the embedded control plane, the operator, the seed 000 experiments, run for real where possible.

Starts a cluster (built from upstream source, cached) with kwok GPU nodes and, where the host can run
containers, a real node (containerd + kubelet). On the real node the generate Jobs run the worker image and
call the OpenAI-compatible test server; the demo reads the rows back from the volume, shows one tiny training
result (generate -> qa on the mixed dataset of datasweep.testing.datasets, in the trainer image when built:
`make images WITH_TRAINER=1`), then shows a `gpus: 4` training stage
scheduled onto a kwok GPU node. Where containers cannot run, it says so in one line and runs on kwok only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    job_logs,
    real_fixtures,
    real_node_settings,
    running_operator,
    seed_experiments,
    training_experiment,
    wait_for,
    write_dataset,
    write_mixed,
)

from controlplane import ControlPlane, build  # noqa: E402
from datasweep.testing import datasets  # noqa: E402

NAMESPACE = "research"
# KopfRunner (click's CliRunner) swaps sys.stdout while the operator runs: write to the terminal itself.
OUT = sys.__stdout__


def show(text: str) -> None:
    print(text, file=OUT, flush=True)


def say(message: str) -> None:
    show(f"\n\033[1m== {message}\033[0m")


def finished(plane: ControlPlane, name: str) -> Any:
    obj = get(plane, NAMESPACE, "experiment", name)
    ended = condition(obj, "Succeeded").get("status") == "True" or condition(obj, "Failed").get("status") == "True"
    return obj if ended else None


def check(obj: dict[str, Any]) -> None:
    if condition(obj, "Succeeded").get("status") != "True":
        raise SystemExit(f"experiment {obj['metadata']['name']} failed: {condition(obj, 'Failed').get('message')}")


def images_for_real_node(plane: ControlPlane) -> dict[str, str]:
    from images import IMAGES, ensure_images, image_id, is_current, tag_of

    tags = ensure_images(["operator", "worker"], quiet=True)
    # The trainer is built before (make images WITH_TRAINER=1), not rebuilt here (minutes); a stale one runs older
    # worker code than this operator writes specs for, so it is not used.
    if "trainer" in IMAGES and image_id(tag_of("trainer")) and not is_current("trainer"):
        say("the trainer image is older than this checkout: tiny training skipped (`make images WITH_TRAINER=1`)")
    elif "trainer" in IMAGES and image_id(tag_of("trainer")):
        tags["trainer"] = tag_of("trainer")
        # Once per image id and node slot; the trainer's 6 GB take minutes: say so before the silence.
        say("importing the images into the node's containerd (the trainer, 6 GB, takes minutes the first time)")
    plane.import_images(list(tags.values()))
    return tags


def rows_per_split(plane: ControlPlane, data_root: Path) -> None:
    show(f"{'artifact (point)':40} {'train':>6} {'valid':>6} {'test':>6}  first row (train)")
    for artifact in sorted(get(plane, NAMESPACE, "artifacts")["items"], key=lambda a: a["spec"]["semanticName"]):
        if artifact["spec"]["stage"] != "generate":
            continue
        directory = data_root / artifact["spec"]["storage"]["path"] / "Copa"
        counts, first = [], ""
        for split in ("train", "validation", "test"):
            lines = (directory / f"copa_{split}.jsonl").read_text().splitlines()
            counts.append(len(lines))
            if split == "train" and lines:
                first = json.dumps(json.loads(lines[0]))[:70]
        show(f"{artifact['spec']['semanticName']:40} {counts[0]:6} {counts[1]:6} {counts[2]:6}  {first}")


def real_demo(plane: ControlPlane, work: Path, data_root: Path) -> tuple[int, int]:
    from datasweep.store.manifest import read_manifest
    from datasweep.testing.openai_server import OpenAITestServer

    assert plane.node is not None
    say("building (or reusing) the operator and worker images; importing them into the node's containerd")
    images = images_for_real_node(plane)
    show(", ".join(images.values()))
    real_fixtures(plane, NAMESPACE, data_root)
    previous_umask = os.umask(0)  # this process is root; the pods (uid 10001) write where it creates folders
    try:
        with OpenAITestServer(host=plane.node.ip) as server:
            show(f"OpenAI-compatible test server for the pods: {server.url}")
            experiment_a, experiment_b = seed_experiments()
            for body in (experiment_a, experiment_b):
                body["spec"]["generation"]["baseURL"] = server.url
            with running_operator(NAMESPACE, data_root, work, **real_node_settings(images)):
                say("experiments A (temperature 0.5/0.7/0.9) and B (top_p 0.8/0.9/1.0): generate Jobs in pods")
                apply(plane, NAMESPACE, experiment_a, experiment_b)
                for name in ("copa-temperature", "copa-topp"):
                    check(wait_for(name, lambda name=name: finished(plane, name), timeout=600))
                say("kubectl get exp,bat,art")
                show(plane.kubectl("get", "exp,bat,art", "-n", NAMESPACE).stdout)
                say("pods ran on the real node")
                show(plane.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout)
                job = get(plane, NAMESPACE, "jobs", selector="datasweep.io/stage=generate")["items"][0]["metadata"]
                say(f"kubectl logs job/{job['name']} (the worker's progress)")
                show(job_logs(plane, NAMESPACE, job["name"]).strip()[-1500:])
                say("rows generated per split, read back from the volume")
                rows_per_split(plane, data_root)
                show(f"the test server answered {server.counts['POST /v1/chat/completions']} chat requests")
                if "trainer" in images:
                    say("a tiny training result: generate -> qa with a tiny BERT, in the trainer image")
                    train_in_pod(plane, data_root, server.url, read_manifest)
                else:
                    say("tiny training: skipped (no current trainer image; `make images WITH_TRAINER=1`, ~10 min)")
    finally:
        os.umask(previous_umask)
    return len(get(plane, NAMESPACE, "artifacts")["items"]), server.counts["POST /v1/chat/completions"]


def train_in_pod(plane: ControlPlane, data_root: Path, server_url: str, read_manifest: Any) -> None:
    """generate -> qa on the mixed dataset (every training kind can use it; tests/e2e trains all three kinds on
    it) with a tiny BERT: the generate pod in the worker image, the qa pod in the trainer image."""
    body = training_experiment("mixed-qa", "qa", data_root)
    body["spec"]["generation"]["baseURL"] = server_url
    started = time.monotonic()
    apply(plane, NAMESPACE, body)
    done = wait_for("mixed-qa", lambda: finished(plane, "mixed-qa"), timeout=900)
    artifact = get(plane, NAMESPACE, "artifacts", selector="datasweep.io/stage=qa")["items"][0]
    if condition(done, "Succeeded").get("status") != "True":
        show(f"training failed: {condition(artifact, 'Ready').get('message')}")
        return
    selector = "exp.datasweep.io/mixed-qa,datasweep.io/stage=generate"
    generate = get(plane, NAMESPACE, "artifacts", selector=selector)["items"][0]
    kept = read_manifest(data_root / generate["spec"]["storage"]["path"])
    data = kept.outputs.data if kept and kept.outputs else {}
    rows = {split: sum(f.rows or 0 for f in files) for split, files in data.items()}
    show(f"generate kept {rows} of 24/8/8 Mixed records (validation rejected every fourth)")
    path = data_root / artifact["spec"]["storage"]["path"]
    manifest = read_manifest(path)
    show(f"qa trained in a pod in {time.monotonic() - started:.0f}s (generate + train); {path.relative_to(data_root)}:")
    for entry in (manifest.files if manifest else [])[:8]:
        show(f"  {entry.path}")
    for name in ("eval_results.json", "metrics.json", "training_metadata.json"):
        if (path / name).is_file():
            show(f"  {name}: {(path / name).read_text()[:300]}")
            break


def kwok_gpu_stage(plane: ControlPlane, data_root: Path, work: Path) -> None:
    say("a `gpus: 4` training stage: scheduled onto a kwok GPU node (kwok completes it; nothing runs)")
    body = experiment(
        "meta",
        purpose="meta",
        datasets=[write_mixed(data_root)],
        generation={"options": {"rephrase_fields": datasets.MIXED_REPHRASE_FIELDS}},
        training=[datasets.chain_stage("fomaml", resources={"gpus": 4, "cpu": "8", "memory": "64Gi"})],
    )
    # kwok runs no worker: no manifest is expected (requireManifest false), as in the kwok-only demo.
    with running_operator(NAMESPACE, data_root, work, jobDefaults={"gpuNodeSelector": {"type": "kwok"}}):
        apply(plane, NAMESPACE, body)
        check(wait_for("meta", lambda: finished(plane, "meta"), timeout=300))
    show(plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", "datasweep.io/stage=fomaml", "-o", "wide").stdout)
    job = get(plane, NAMESPACE, "jobs", selector="datasweep.io/stage=fomaml")["items"][0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    show(f"limits {container['resources']['limits']}; command: {' '.join(container['command'][:4])} ...")


def kwok_demo(plane: ControlPlane, work: Path, data_root: Path) -> tuple[int, int]:
    cluster_fixtures(plane, NAMESPACE, data_root)
    experiment_a, experiment_b = seed_experiments()
    with running_operator(NAMESPACE, data_root, work):
        say("experiment A: Copa, temperature 0.5/0.7/0.9, top_p 1.0 (batch_20241229_temperature)")
        apply(plane, NAMESPACE, experiment_a)
        check(wait_for("experiment A", lambda: finished(plane, "copa-temperature"), timeout=180))
        say("experiment B: Copa, temperature 0.7, top_p 0.8/0.9/1.0 (batch_20241230_topp)")
        apply(plane, NAMESPACE, experiment_b)
        check(wait_for("experiment B", lambda: finished(plane, "copa-topp"), timeout=180))
        time.sleep(1)
        say("kubectl get exp,bat,art")
        show(plane.kubectl("get", "exp,bat,art", "-n", NAMESPACE).stdout)
    return len(get(plane, NAMESPACE, "artifacts")["items"]), 0


def main() -> int:
    say("building (or reusing) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kwok, kubectl")
    build()
    work = Path(tempfile.mkdtemp(prefix="datasweep-demo-"))
    data_root = work / "data"
    write_dataset(data_root, rows=5)
    say("starting the control plane on loopback: kwok GPU nodes and, where containers can run, a real node")
    started = time.monotonic()
    with ControlPlane.start() as plane:
        show(f"ready in {time.monotonic() - started:.1f}s; KUBECONFIG={plane.kubeconfig}")
        show(plane.kubectl("get", "nodes", "-L", "type,nvidia.com/gpu.product").stdout)
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        say("installing the CRDs and a namespace with an API-key Secret and the data volume")
        install_crds(plane)
        plane.kubectl("create", "namespace", NAMESPACE)
        wait_for("default service account", lambda: plane.kubectl("get", "sa", "default", "-n", NAMESPACE))
        if plane.node is not None:
            artifacts, requests = real_demo(plane, work, data_root)
        else:
            show(f"no real node ({plane.node_unavailable}): kwok completes the Jobs, no worker runs")
            artifacts, requests = kwok_demo(plane, work, data_root)
        kwok_gpu_stage(plane, data_root, work)
        say("the shared volume: one directory per fingerprint, batch views as relative symlinks")
        for path in sorted(data_root.glob("batch_*/*/*")):
            show(f"{path.relative_to(data_root)} -> {path.readlink()}")
        say("stopping")
        with contextlib.suppress(Exception):
            plane.kubectl("delete", "pv", f"{NAMESPACE}-datasweep-data", "--wait=false")
    mode = "real pods on the real node" if requests else "kwok only"
    print(f"demo finished ({mode}): {artifacts} artifacts, {requests} chat requests served to worker pods")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
