"""Running the operator in the test process against the real control plane, and waiting on what it does."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kopf.testing import KopfRunner

from datasweep.controller import setup
from datasweep.k8s import client

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


def install_crds(control_plane: Any) -> None:
    """Apply the generated CRDs and wait until the API server serves them."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for plural in (
        "experiments.datasweep.io",
        "artifacts.datasweep.io",
        "batches.datasweep.io",
        "kopfpeerings.zalando.org",
    ):
        wait_for(
            f"{plural} CRD established",
            lambda plural=plural: (
                "True"
                in control_plane.kubectl(
                    "get",
                    "crd",
                    plural,
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                ).stdout
            ),
            timeout=60,
        )


def apply(control_plane: Any, namespace: str, *objects: dict[str, Any], check: bool = True) -> Any:
    return control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects), check=check)


def get(control_plane: Any, namespace: str, kind: str, name: str | None = None, selector: str = "") -> Any:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if name:
        args.insert(2, name)
    if selector:
        args += ["-l", selector]
    return json.loads(control_plane.kubectl(*args).stdout)


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 120.0,
    interval: float = 0.5,
    explain: Callable[[], Any] | None = None,
) -> Any:
    """Poll `check` until it returns something true; on timeout, say what it last returned (or raised) and what
    `explain` says about the state then."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as error:  # the API server may be briefly away: keep polling
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    state = ""
    if explain is not None:
        try:
            state = f"; state: {explain()!r}"
        except Exception as error:
            state = f"; state unavailable: {error!r}"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}{state}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def experiment(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "datasets": [{"name": "Copa", "source": {"path": "superglue/copa"}}],
        "generation": {
            "apiKeySecret": {"name": "openai", "key": "api-key"},
            "model": "gpt-4o",
            "options": {"rephrase_fields": ["premise"]},  # Copa's text field (checked before anything runs)
        },
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {"apiVersion": "datasweep.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": body}


def seed_experiments() -> tuple[dict[str, Any], dict[str, Any]]:
    """Seed 000's scenario: A sweeps temperature, B sweeps top_p; they share temp07_topp10_gpt4o."""
    a = experiment(
        "copa-temperature",
        batch="batch_20241229_temperature",
        purpose="temperature",
        description="Effect of temperature on rephrase quality",
        generation={"temperature": [0.5, 0.7, 0.9], "topP": 1.0},
    )
    b = experiment(
        "copa-topp",
        batch="batch_20241230_topp",
        purpose="topp",
        generation={"temperature": 0.7, "topP": [0.8, 0.9, 1.0]},
    )
    return a, b


def write_dataset(root: Path, name: str = "Copa", path: str = "superglue/copa", rows: int = 3) -> Path:
    directory = root / path
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        # `text` is the generate worker's default rephrase field: real workers (the real node) rephrase it.
        lines = [
            json.dumps({"idx": i, "premise": f"{split} premise {i}", "text": f"{split} text {i}", "label": i % 2})
            for i in range(rows)
        ]
        (directory / f"{name.lower()}_{split}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def write_mixed(data_root: Path) -> dict[str, Any]:
    """The mixed dataset (datasweep.testing.datasets: every training kind can use it) on the volume; returns
    its `spec.datasets` entry."""
    from datasweep.testing import datasets

    datasets.write_splits(data_root / "raw" / "mixed", datasets.MIXED, datasets.mixed_splits())
    return {"name": datasets.MIXED, "source": {"path": "raw/mixed"}}


def training_experiment(name: str, kind: str, data_root: Path, **spec: Any) -> dict[str, Any]:
    """generate -> `kind` on the mixed dataset, written on the volume with `kind`'s tiny base model; the stage's
    settings are CHAIN_TRAINING's (CPU-small). `spec` overrides (e.g. the stage's resources)."""
    from datasweep.testing import datasets, tiny

    source = write_mixed(data_root)
    model = data_root / "models" / datasets.TINY_MODELS[kind]
    tiny.build_for_kind(kind, model, corpus=datasets.corpus(*datasets.mixed_splits().values()))
    for path in [model.parent, model, *model.rglob("*")]:
        os.chown(path, 10001, 10001)  # the pods' user (a no-op where this process is that user)
    return experiment(
        name,
        purpose=name.replace("-", "_"),  # purpose: [A-Za-z0-9_]+
        retries=0,
        **{
            "datasets": [source],
            "generation": {"options": {"rephrase_fields": datasets.MIXED_REPHRASE_FIELDS}},
            "training": [datasets.chain_stage(kind, resources={"memory": "4Gi"})],
            **spec,
        },
    )


def cluster_fixtures(control_plane: Any, namespace: str, data_root: Path) -> None:
    """What a namespace needs before Experiments (the chart provides the same): the worker ServiceAccount,
    the API-key Secret and the data PVC (the harness's default StorageClass binds it at once)."""
    control_plane.kubectl("create", "serviceaccount", "datasweep-worker", "-n", namespace)
    control_plane.kubectl("create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=sk-test")
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "datasweep-data"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(control_plane, namespace, pvc)


@contextlib.contextmanager
def running_operator(namespace: str, data_root: Path, tmp_path: Path, **config: Any) -> Iterator[KopfRunner]:
    """The real operator (datasweep.controller) in this process, watching one namespace."""
    settings_file = tmp_path / f"operator-{time.monotonic_ns()}.yaml"
    settings_file.write_text(
        # kwok runs no worker, so no manifest appears: real-node tests pass requireManifest=True.
        yaml.safe_dump({"dataRoot": str(data_root), "retryBackoffSeconds": 1, "requireManifest": False, **config}),
        encoding="utf-8",
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environ("DATASWEEP_CONFIG", str(settings_file)))
        setup.settings.cache_clear()
        client.reset()
        runner = stack.enter_context(
            KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "datasweep.controller"], timeout=60)
        )
        yield runner
    setup.settings.cache_clear()


@contextlib.contextmanager
def operator_process(
    namespace: str, data_root: Path, tmp_path: Path, peering: str | None = None, priority: int = 0, **config: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """The operator as the chart runs it (`datasweep operator`), in its own process: it can be SIGKILLed."""
    settings_file = tmp_path / f"operator-{time.monotonic_ns()}.yaml"
    settings_file.write_text(
        # As in running_operator: kwok runs no worker, so no manifest appears.
        yaml.safe_dump({"dataRoot": str(data_root), "retryBackoffSeconds": 1, "requireManifest": False, **config}),
        encoding="utf-8",
    )
    args = [sys.executable, "-m", "datasweep", "operator", "--namespace", namespace, "--config", str(settings_file)]
    if peering:
        args += ["--peering", peering]
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"), DATASWEEP_PEERING_PRIORITY=str(priority))
    log = tmp_path / f"{settings_file.stem}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    previous = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


# The real node (hack/realnode.py): pods run in containers from our images, on a volume this process sees.


def real_node_settings(images: dict[str, str], **config: Any) -> dict[str, Any]:
    """Operator settings that send CPU Jobs to the real node and GPU Jobs to the kwok GPU nodes, and make an
    Artifact Ready only once its worker's manifest is on the volume."""
    import realnode

    return {
        "requireManifest": True,
        "images": {
            "worker": images["worker"],
            "trainer": images.get("trainer", images["worker"]),
            "pullPolicy": "Never",
        },
        "jobDefaults": {
            "nodeSelector": dict(realnode.NODE_SELECTOR),
            "tolerations": list(realnode.TOLERATIONS),
            # Overrides `type` for GPU Jobs: they go to the kwok GPU nodes (labelled type=kwok).
            "gpuNodeSelector": {"type": "kwok"},
            "ttlSecondsAfterFinished": 3600,
        },
        **config,
    }


def real_volume(control_plane: Any, namespace: str, data_root: Path, claim: str = "datasweep-data") -> str:
    """The data claim of `namespace`, bound to a hostPath PV at `data_root` (what this process reads): the test
    provisioner for the real node. The directory is handed to uid 10001 (the images' user): fsGroup does not
    apply to hostPath volumes. Returns the PV's name (cluster-scoped: the caller deletes it)."""
    import os

    for path in [data_root, *data_root.rglob("*")]:
        os.chown(path, 10001, 10001, follow_symlinks=False)
    data_root.chmod(0o775)
    pv_name = f"{namespace}-{claim}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(data_root), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(pv))
    apply(control_plane, namespace, pvc)
    return pv_name


def real_fixtures(control_plane: Any, namespace: str, data_root: Path) -> str:
    """cluster_fixtures for the real node: worker ServiceAccount, API-key Secret, a data claim on `data_root`."""
    control_plane.kubectl("create", "serviceaccount", "datasweep-worker", "-n", namespace)
    control_plane.kubectl("create", "secret", "generic", "openai", "-n", namespace, "--from-literal=api-key=sk-test")
    return real_volume(control_plane, namespace, data_root)


def job_logs(control_plane: Any, namespace: str, job: str) -> str:
    return str(control_plane.kubectl("logs", f"job/{job}", "-n", namespace, "--tail=200").stdout)
