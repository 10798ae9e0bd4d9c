"""Pods that do the work: the operator's Jobs run the real workers in containers from our images, on the
real node of the test control plane (containerd + kubelet, hack/realnode.py), and write to a volume this test
reads back. Generate Jobs call the OpenAI-compatible test server on the node's bridge address.

Where the host cannot run containers (no root, no runc) these tests skip with that reason (conftest
`real_images`); on our machines they run. Tests marked `trainer` need the trainer image (torch, ~6 GB):
`make e2e-real`, not `make test` (see README, CI budget).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from datasweep import __version__
from datasweep.k8s import builders
from datasweep.recipes import recipe_version
from datasweep.store.manifest import read_manifest
from datasweep.store.provenance import Provenance
from datasweep.store.requests import RequestStore, StoredAnswer
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import (
    REPO,
    apply,
    condition,
    experiment,
    get,
    job_logs,
    real_node_settings,
    running_operator,
    seed_experiments,
    training_experiment,
    wait_for,
    write_mixed,
)

# `realnode`: selects these tests (`pytest -m realnode`); `make test` runs them all but the `trainer` ones.
pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

CHART = REPO / "charts" / "datasweep"
POD_TIMEOUT = 300.0  # a cold pod start on a busy 2-core machine takes seconds; many run one after another


@contextlib.contextmanager
def real_operator(namespace: str, data_root: Path, tmp_path: Path, images: dict[str, str], **config: Any) -> Any:
    """The operator in this process (root) sharing the volume with pods that run as uid 10001: the directories
    it creates must be writable by them, as they are when the operator runs as 10001 in its own pod."""
    previous = os.umask(0)
    try:
        with running_operator(namespace, data_root, tmp_path, **real_node_settings(images, **config)) as runner:
            yield runner
    finally:
        os.umask(previous)


def with_server(body: dict[str, Any], server: OpenAITestServer) -> dict[str, Any]:
    body["spec"]["generation"]["baseURL"] = server.url
    return body


def finished(control_plane: Any, namespace: str, name: str) -> Any:
    obj = get(control_plane, namespace, "experiment", name)
    done = condition(obj, "Succeeded").get("status") == "True" or condition(obj, "Failed").get("status") == "True"
    return obj if done else None


def artifact_warnings(control_plane: Any, namespace: str) -> list[str]:
    """The Warning Events on Artifacts (a failed attempt, a pod failure), as `<artifact>: <reason> <message>`."""
    events = get(control_plane, namespace, "events")["items"]
    return [
        f"{e['involvedObject']['name']}: {e.get('reason')} {e.get('message')}"
        for e in events
        if e.get("type") == "Warning" and e["involvedObject"].get("kind") == "Artifact"
    ]


def records(directory: Path, dataset: str = "Copa") -> list[dict[str, Any]]:
    """The kept records of a generate artifact, every split (<dataset>/<dataset>_<split>.jsonl)."""
    rows = []
    for split in ("train", "validation", "test"):
        path = directory / dataset / f"{dataset.lower()}_{split}.jsonl"
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_seed_experiments_generate_real_rows_in_pods(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    experiment_a, experiment_b = (with_server(e, openai_server) for e in seed_experiments())
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, experiment_a, experiment_b)
        for name in ("copa-temperature", "copa-topp"):
            done = wait_for(f"{name} finished", lambda name=name: finished(control_plane, ns, name), POD_TIMEOUT)
            assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    artifacts = get(control_plane, ns, "artifacts")["items"]
    assert len(artifacts) == 5
    for artifact in artifacts:
        path = data_root / artifact["spec"]["storage"]["path"]
        manifest = read_manifest(path)
        assert manifest is not None, f"{path}: no manifest although the Artifact is {artifact['status']['phase']}"
        assert artifact["status"]["phase"] == "Ready"
        assert manifest.fingerprint == artifact["spec"]["fingerprint"]
        assert artifact["status"]["manifest"]["sha256"] == manifest.summary().sha256
        rows = records(path)
        # write_dataset: 3 rows per split, 3 splits; each row rephrased by the test server.
        assert len(rows) >= 9, f"{path}: {len(rows)} records"
        assert any("rephrased:" in json.dumps(row) for row in rows)
        # Written by the pod (uid 10001), not by this process.
        assert (path / "manifest.json").stat().st_uid == 10001
        # Provenance (issue 25): the worker's record, and the image digest the pod ran
        provenance = Provenance.model_validate(artifact["status"]["provenance"])
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", provenance.image_digest or ""), artifact["status"]["provenance"]
        assert provenance.image is not None
        assert provenance.image.rsplit("/", 1)[-1] == real_images["worker"]
        assert (provenance.datasweep_version, provenance.recipe) == (__version__, recipe_version("generate"))
        assert provenance.models == manifest.provenance.models
        assert sum(provenance.models.values()) >= 9
    assert openai_server.counts["POST /v1/chat/completions"] >= 5 * 9
    assert not (warned := artifact_warnings(control_plane, ns)), f"an attempt failed: {warned}"
    jobs = get(control_plane, ns, "jobs", selector="datasweep.io/artifact")["items"]
    assert len(jobs) == 5
    pods = get(control_plane, ns, "pods", selector="datasweep.io/artifact")["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {"datasweep-node"}
    assert {p["status"]["containerStatuses"][0]["image"].rsplit("/", 1)[-1] for p in pods} == {real_images["worker"]}
    image_ids = {p["status"]["containerStatuses"][0]["imageID"] for p in pods}
    assert image_ids == {a["status"]["provenance"]["imageId"] for a in artifacts}
    # `kubectl logs` shows the worker's progress.
    logs = job_logs(control_plane, ns, jobs[0]["metadata"]["name"])
    assert "requests" in logs, logs
    assert "done:" in logs, logs


def _drop_env(name: str) -> Any:
    original = builders.worker_job

    def worker_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        job = original(*args, **kwargs)
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container["env"] if e["name"] != name]
        return job

    return worker_job


def _mount(volume: str, path: str) -> Any:
    original = builders.worker_job

    def worker_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        job = original(*args, **kwargs)
        for mount in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]:
            if mount["name"] == volume:
                mount["mountPath"] = path
        return job

    return worker_job


def _command(command: list[str]) -> Any:
    original = builders.worker_job

    def worker_job(*args: Any, **kwargs: Any) -> dict[str, Any]:
        job = original(*args, **kwargs)
        job["spec"]["template"]["spec"]["containers"][0]["command"] = command
        return job

    return worker_job


@pytest.mark.parametrize(
    "break_",
    ["mount-path", "missing-api-key-env", "wrong-command"],
)
def test_a_broken_worker_contract_fails_the_artifact_naming_the_pod(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
    monkeypatch: pytest.MonkeyPatch,
    break_: str,
) -> None:
    """What the operator's Job promises the worker (the volume at /data, the API key in the env, the command
    line) is what the worker needs: break any one and the pod fails, and the Artifact says which pod and why."""
    if break_ == "mount-path":
        # Only the Job's mount moves: the worker spec still says /data (patching builders.DATA_MOUNT would move
        # both, a consistent contract that works).
        monkeypatch.setattr(builders, "worker_job", _mount("data", "/mnt/data"))
    elif break_ == "missing-api-key-env":
        monkeypatch.setattr(builders, "worker_job", _drop_env("OPENAI_API_KEY"))
    else:
        monkeypatch.setattr(builders, "worker_job", _command(["datasweep", "worker", "generate", "/spec/worker.yaml"]))
    ns = real_namespace
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, with_server(experiment("broken", purpose="broken", retries=0), openai_server))
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "broken"), POD_TIMEOUT)
    assert condition(done, "Failed")["status"] == "True"
    artifact = get(control_plane, ns, "artifacts")["items"][0]
    ready = condition(artifact, "Ready")
    assert artifact["status"]["phase"] == "Failed"
    pod = get(control_plane, ns, "pods", selector=f"job-name={artifact['status']['job']}")["items"][0]
    assert f"pod {pod['metadata']['name']}" in ready["message"], ready
    assert "exit code" in ready["message"], ready
    assert read_manifest(data_root / artifact["spec"]["storage"]["path"]) is None


def test_an_oom_killed_pod_fails_the_artifact_naming_reason_and_pod(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    """A training stage with a 16Mi memory limit is killed by the kernel while Python imports its modules."""
    from datasweep.testing import datasets

    ns = real_namespace
    stage = datasets.chain_stage("fomaml", resources={"memory": "16Mi"})
    body = experiment(
        "starved",
        purpose="starved",
        retries=0,
        datasets=[write_mixed(data_root)],  # records with the fields fomaml reads (checked before any Job)
        generation={"options": {"rephrase_fields": datasets.MIXED_REPHRASE_FIELDS}},
        training=[stage],
    )
    model = data_root / stage["baseModel"]["path"]
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    # The worker image stands in for the trainer: the pod dies long before it would need torch.
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, with_server(body, openai_server))
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "starved"), POD_TIMEOUT)
    assert condition(done, "Failed")["status"] == "True"
    training = get(control_plane, ns, "artifacts", selector="datasweep.io/stage=fomaml")["items"][0]
    message = condition(training, "Ready")["message"]
    pod = get(control_plane, ns, "pods", selector=f"job-name={training['status']['job']}")["items"][0]
    assert "OOMKilled" in message, message
    assert f"pod {pod['metadata']['name']}" in message, message
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "16Mi"


def helm(control_plane: Any, *args: str) -> str:
    command = [str(control_plane.bin("helm")), "--kubeconfig", str(control_plane.kubeconfig), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=control_plane.env, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_operator_runs_as_a_pod_from_its_image_through_the_chart(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    openai_server: OpenAITestServer,
) -> None:
    import realnode

    ns = real_namespace
    api_host, api_port = control_plane.api_for_pods
    repository, tag = real_images["operator"].split(":")
    worker_repository, worker_tag = real_images["worker"].split(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "workerImages": {
            "worker": {"repository": worker_repository, "tag": worker_tag},
            "trainer": {"repository": worker_repository, "tag": worker_tag},
            "pullPolicy": "Never",
        },
        "workerServiceAccount": {"create": False},  # real_namespace made it
        "data": {"existingClaim": "datasweep-data"},
        "nodeSelector": realnode.NODE_SELECTOR,
        "tolerations": realnode.TOLERATIONS,
        "jobDefaults": {"nodeSelector": realnode.NODE_SELECTOR, "tolerations": realnode.TOLERATIONS},
        "retryBackoffSeconds": 1,
        # No kube-proxy or cluster DNS here: the in-cluster API address is the node's relay to the API server.
        "hostAliases": [{"ip": api_host, "hostnames": ["kubernetes.default.svc"]}],
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
        ],
    }
    values_file = data_root.parent / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(control_plane, "install", "datasweep", str(CHART), "-n", ns, "--skip-crds", "-f", str(values_file))
    try:
        control_plane.kubectl("rollout", "status", "deployment/datasweep", "-n", ns, "--timeout=180s")
        body = experiment(
            "copa-chart", purpose="chart", generation={"temperature": [0.5, 0.9], "baseURL": openai_server.url}
        )
        apply(control_plane, ns, body)
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "copa-chart"), POD_TIMEOUT)
        operator_log = control_plane.kubectl("logs", "deployment/datasweep", "-n", ns, "--tail=100").stdout
        assert condition(done, "Succeeded")["status"] == "True", operator_log
        # The chart's request store CronJob, run now: it drops an old answer no Artifact lists, keeps the rest.
        store = RequestStore.under(data_root / "_shared")
        used = store.count()
        orphan = next(f"{shard}{'0' * 61}" for shard in store.shards())  # into a shard the pods made
        previous = os.umask(0)  # the test runs as root; the pod (uid 10001) must append to what it writes
        try:
            store.put([StoredAnswer(orphan, "nobody lists me", answered_at="2020-01-01T00:00:00+00:00")])
        finally:
            os.umask(previous)
        control_plane.kubectl("create", "job", "gc-now", "--from=cronjob/datasweep-request-store-gc", "-n", ns)
        waited = control_plane.kubectl(
            "wait", "--for=condition=complete", "job/gc-now", "-n", ns, f"--timeout={int(POD_TIMEOUT)}s", check=False
        )
        gc_log = control_plane.kubectl("logs", "job/gc-now", "-n", ns, check=False).stdout
        assert waited.returncode == 0, gc_log
        assert "1 stored answers no Artifact lists" in gc_log, gc_log
        assert store.lookup([orphan]) == {}
        assert store.count() == used > 0
    finally:
        helm(control_plane, "uninstall", "datasweep", "-n", ns, "--wait")
    for artifact in get(control_plane, ns, "artifacts")["items"]:
        manifest = read_manifest(data_root / artifact["spec"]["storage"]["path"])
        assert manifest is not None
        assert len(records(data_root / artifact["spec"]["storage"]["path"])) >= 9
    # The batch view was made by the operator pod, on the same volume.
    links = list(data_root.glob("batch_*/Copa/*"))
    assert len(links) == 2, links
    assert all(link.is_symlink() for link in links), links


def test_a_second_control_plane_gets_its_own_node_and_stops_it_cleanly(
    control_plane: Any, real_images: dict[str, str]
) -> None:
    """Another slot (bridge, cgroups, containerd), a running pod, then stop(): nothing of the node is left."""
    import realnode
    from controlplane import ControlPlane

    plane = ControlPlane.start(real_node=True)
    try:
        node = plane.node
        assert node is not None
        assert node.slot != control_plane.node.slot
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "nodeSelector": realnode.NODE_SELECTOR,
                "tolerations": realnode.TOLERATIONS,
                "containers": [{"name": "pause", "image": "datasweep.local/pause:3.10.1", "imagePullPolicy": "Never"}],
            },
        }
        plane.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(pod))
        wait_for(
            "the pod Running",
            lambda: get(plane, "default", "pod", "sleeper").get("status", {}).get("phase") == "Running",
            POD_TIMEOUT,
        )
        assert node._pids_in_cgroups(), "the pod's processes are in the node's cgroups"
    finally:
        plane.stop()
    assert node._pids_in_cgroups() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert node.bridge not in links
    mounts = Path("/proc/self/mounts").read_text()
    assert str(node.dir) + "/" not in mounts
    shims = [p for p in Path("/proc").iterdir() if p.name.isdigit() and node.socket.encode() in _cmdline(p)]
    assert shims == []


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


# ----------------------------------------------------------------------------------------------------------
# Training stages in the trainer image (torch): `make e2e-real`.


@pytest.mark.trainer
@pytest.mark.parametrize("kind", ["fomaml", "moe-steer", "qa"])
def test_generate_then_train_a_tiny_model_in_the_trainer_image(
    control_plane: Any,
    real_images: dict[str, str],
    trainer_image: str,
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
    kind: str,
) -> None:
    """generate (rephrasing `question`, validation rejecting every fourth record) then `kind` on what the
    generate pod kept, each in its own pod: the worker image, then the trainer image."""
    ns = real_namespace
    body = training_experiment(f"train-{kind}", kind, data_root)
    started = time.monotonic()
    with real_operator(ns, data_root, tmp_path, {**real_images, "trainer": trainer_image}):
        apply(control_plane, ns, with_server(body, openai_server))
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, f"train-{kind}"), 900)
    artifacts = get(control_plane, ns, "artifacts", selector=f"datasweep.io/stage={kind}")["items"]
    assert artifacts, "no training Artifact"
    job = artifacts[0]["status"].get("job")
    logs = job_logs(control_plane, ns, job) if job else ""
    assert condition(done, "Succeeded")["status"] == "True", (
        f"{json.dumps(condition(artifacts[0], 'Ready'), indent=1)}\n{logs[-3000:]}"
    )
    generate = get(control_plane, ns, "artifacts", selector="datasweep.io/stage=generate")["items"][0]
    kept = read_manifest(data_root / generate["spec"]["storage"]["path"])
    assert kept is not None
    assert kept.outputs.data["train"][0].rows == 18  # type: ignore[union-attr]  # 24 records, every fourth rejected
    path = data_root / artifacts[0]["spec"]["storage"]["path"]
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest.stage == kind
    assert (path / "manifest.json").stat().st_uid == 10001  # written by the trainer pod
    pods = get(control_plane, ns, "pods", selector=f"job-name={job}")["items"]
    assert pods[0]["status"]["containerStatuses"][0]["image"].rsplit("/", 1)[-1] == trainer_image
    print(f"{kind}: generate + train in pods took {time.monotonic() - started:.0f}s")


@pytest.mark.trainer
def test_fomaml_on_two_nodes_two_pods_rendezvous_and_train_together(
    control_plane: Any,
    real_images: dict[str, str],
    trainer_image: str,
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    """`nodes: 2`: an Indexed Job of two pods and its headless Service; torchrun's c10d rendezvous at pod 0's
    name (`<job>-0.<service>`, resolved by the node's cluster DNS from the Service's endpoints), then one gloo
    process group of 2 ranks on CPU trains fomaml. The Service goes when the Job ends."""
    from datasweep.testing import datasets

    ns = real_namespace
    stage = datasets.chain_stage("fomaml", resources={"memory": "3Gi", "nodes": 2})
    body = training_experiment("train-nodes", "fomaml", data_root, training=[stage])
    with real_operator(ns, data_root, tmp_path, {**real_images, "trainer": trainer_image}):
        apply(control_plane, ns, with_server(body, openai_server))

        def training_service() -> Any:
            items = get(control_plane, ns, "services", selector="datasweep.io/stage=fomaml")["items"]
            return items[0] if items else None

        service = wait_for("the headless Service of the training Job", training_service, 600)
        done = wait_for("experiment finished", lambda: finished(control_plane, ns, "train-nodes"), 900)
        (artifact,) = get(control_plane, ns, "artifacts", selector="datasweep.io/stage=fomaml")["items"]
        job = artifact["status"]["job"]
        pods = get(control_plane, ns, "pods", selector=f"job-name={job}")["items"]
        logs = control_plane.kubectl("logs", "-n", ns, "-l", f"job-name={job}", "--prefix", "--tail=60", check=False)
        assert condition(done, "Succeeded")["status"] == "True", (
            f"{json.dumps(condition(artifact, 'Ready'), indent=1)}\n{logs.stdout[-5000:]}"
        )
        wait_for("the Service deleted once the Job ended", lambda: training_service() is None, 120)
    assert service["metadata"]["name"] == job
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["name"] == artifact["metadata"]["name"]
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)
    assert all(p["spec"]["subdomain"] == job for p in pods)
    path = data_root / artifact["spec"]["storage"]["path"]
    metadata = json.loads((path / "training_metadata.json").read_text())
    assert (metadata["world_size"], metadata["device"]) == (2, "cpu")
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest.stage == "fomaml"
