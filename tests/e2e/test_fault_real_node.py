"""Issue 17, faults on the real node (pods really run the generate worker, hack/realnode.py):

- a worker killed mid-run (SIGKILL to its container's process while it writes its journals): the Artifact retries
  with a second Job, which resumes and ends Ready; nothing of the killed attempt was ever visible at the
  artifact's storage path (outputs are published by rename, the manifest last);
- the data volume full (the claim bound to a 1 MiB tmpfs holding the input dataset): the worker fails with
  "the data volume is full (N bytes free at /data/...): free space or grow the PVC", the Artifact's Ready
  condition says so, and no partial output is published.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import OpenAITestServer
from tests.e2e.operator_harness import apply, condition, experiment, get, real_fixtures, wait_for
from tests.e2e.test_real_node import POD_TIMEOUT, finished, real_operator, records, with_server

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

LATENCY_S = 1.0  # per chat request, one in flight: an attempt takes ~20 s, long enough to be killed mid-run


def visible(directory: Path) -> list[str]:
    """What a reader of the artifact directory sees: everything but the claim and the worker's resume state."""
    try:
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


class DirectorySampler:
    """Samples an artifact directory from this process (the volume is a host directory) in its own thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples: list[tuple[str, list[str], bool]] = []  # (label, visible entries, manifest present)
        self.label = "first attempt"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((self.label, visible(self.directory), (self.directory / "manifest.json").exists()))
            self._stop.wait(0.1)

    def __enter__(self) -> DirectorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def artifact_of(control_plane: Any, ns: str) -> dict[str, Any] | None:
    items = get(control_plane, ns, "artifacts")["items"]
    return items[0] if items else None


def running_pod(control_plane: Any, ns: str, job: str) -> dict[str, Any] | None:
    for pod in get(control_plane, ns, "pods", selector=f"job-name={job}")["items"]:
        for container in pod.get("status", {}).get("containerStatuses") or []:
            if "running" in (container.get("state") or {}):
                return dict(pod)
    return None


def kill_container(control_plane: Any, pod: dict[str, Any]) -> None:
    """SIGKILL the worker's process through the node's own containerd (other real nodes on this host run
    workers with the same command line: never look for it by name)."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    subprocess.run(
        ["ctr", "--address", control_plane.node.socket, "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", container_id],
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_a_worker_killed_mid_run_is_retried_and_never_publishes_a_partial_directory(
    control_plane: Any,
    real_images: dict[str, str],
    real_namespace: str,
    data_root: Path,
    tmp_path: Path,
    slow_server: OpenAITestServer,
) -> None:
    ns = real_namespace
    options = {"rephrase_fields": ["premise"], "concurrency": 1}
    body = experiment("killed", purpose="killed", retries=1, generation={"options": options})
    chat = "POST /v1/chat/completions"
    with real_operator(ns, data_root, tmp_path, real_images):
        apply(control_plane, ns, with_server(body, slow_server))
        artifact = wait_for(
            "the Artifact's storage path",
            lambda: (a := artifact_of(control_plane, ns)) and a.get("status", {}).get("job") and a,
            POD_TIMEOUT,
        )
        name, first_job = artifact["metadata"]["name"], artifact["status"]["job"]
        with DirectorySampler(data_root / artifact["spec"]["storage"]["path"]) as sampler:
            pod = wait_for("the first pod running", lambda: running_pod(control_plane, ns, first_job), POD_TIMEOUT)
            # Mid-run: some answers are in the journal, most are not.
            wait_for("3 answered requests", lambda: slow_server.counts[chat] >= 4, POD_TIMEOUT)
            kill_container(control_plane, pod)
            wait_for(
                "a second attempt",
                lambda: (a := artifact_of(control_plane, ns)) and a["status"].get("job") != first_job,
                POD_TIMEOUT,
                explain=lambda: (artifact_of(control_plane, ns) or {}).get("status"),
            )
            sampler.label = "second attempt"
            done = wait_for("experiment finished", lambda: finished(control_plane, ns, "killed"), POD_TIMEOUT)
    artifact = get(control_plane, ns, "artifact", name)
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done.get("status"), indent=1)
    assert artifact["status"]["phase"] == "Ready"
    assert artifact["status"]["attempts"] == 2
    jobs = get(control_plane, ns, "jobs", selector=f"datasweep.io/artifact={name}")["items"]
    assert len(jobs) == 2
    first = next(j for j in jobs if j["metadata"]["name"] == first_job)
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in first["status"]["conditions"])
    # The killed attempt never made anything visible; the directory was complete when anything appeared.
    killed = [s for s in sampler.samples if s[0] == "first attempt"]
    assert killed, "no sample of the first attempt"
    assert all(entries == [] and not manifest for _, entries, manifest in killed), killed
    path = data_root / artifact["spec"]["storage"]["path"]
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest.fingerprint == artifact["spec"]["fingerprint"]
    assert len(records(path)) == 9
    final = visible(path)
    assert all(set(entries) <= set(final) for _, entries, _ in sampler.samples)
    # The second attempt resumed from the journal: the answers of the first were not paid for again.
    assert slow_server.counts[chat] < 2 * 18, slow_server.counts


TINY_VOLUME = "1m"


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only: skips otherwise), unmounted after the test."""
    root = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_VOLUME},mode=0775", "datasweep-e2e-tiny", str(root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {root}: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False, capture_output=True)


def write_big_dataset(root: Path, rows: int = 5, text_bytes: int = 20_000) -> None:
    """Copa with long premises: ~300 KB in, while the worker's journal and outputs need several times that."""
    directory = root / "superglue" / "copa"
    directory.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = [
            json.dumps({"idx": i, "premise": f"{split} {i} " + "word " * (text_bytes // 5), "label": i % 2})
            for i in range(rows)
        ]
        (directory / f"copa_{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_a_full_data_volume_fails_the_artifact_with_a_clear_message(
    control_plane: Any,
    real_images: dict[str, str],
    namespace: str,
    crds: None,
    tiny_volume: Path,
    tmp_path: Path,
    openai_server: OpenAITestServer,
) -> None:
    ns = namespace
    write_big_dataset(tiny_volume)
    pv = real_fixtures(control_plane, ns, tiny_volume)
    try:
        with real_operator(ns, tiny_volume, tmp_path, real_images):
            apply(control_plane, ns, with_server(experiment("full", purpose="full", retries=0), openai_server))
            done = wait_for("experiment finished", lambda: finished(control_plane, ns, "full"), POD_TIMEOUT)
        assert condition(done, "Failed")["status"] == "True", json.dumps(done.get("status"), indent=1)
        artifact = get(control_plane, ns, "artifacts")["items"][0]
        assert artifact["status"]["phase"] == "Failed"
        message = condition(artifact, "Ready")["message"]
        assert "the data volume is full (" in message, message
        assert " bytes free at /data/" in message, message
        assert "free space or grow the PVC" in message, message
        path = tiny_volume / artifact["spec"]["storage"]["path"]
        assert read_manifest(path) is None
        assert visible(path) == [], "a partial output was published"
        assert not (path / ".work" / "publish").exists()
    finally:
        control_plane.kubectl("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force", check=False)
        control_plane.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)
