#!/usr/bin/env python3
"""Install the chart on the project's own control plane (`make cluster-up`) as a user installs it on theirs.

What a real cluster has and ours lacks, this script provides, and nothing else: the operator and worker images on
the node (built by hack/images.py, imported into the real node's containerd: there is no registry), storage for
the data claim (a hostPath PersistentVolume on the real node, bound to the chart's claim by `claimRef`), and the
in-cluster API address (no kube-proxy or cluster DNS here: the node's relay to the API server). Then it runs
`helm upgrade --install` with those values and waits for the operator's rollout, as docs/deploy.md does, and
copies the quick start's Copa sample (examples/quickstart/sources) onto the data volume.

    make cluster-up && make install          # then the quick start of docs/deploy.md
    python hack/install.py --state-dir DIR --namespace ml-experiments

Needs the real node (root, runc, containerd, docker: hack/ensure-node-deps.sh); kwok-only clusters run no pods.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HACK_DIR = Path(__file__).resolve().parent
REPO = HACK_DIR.parent
if str(HACK_DIR) not in sys.path:
    sys.path.insert(0, str(HACK_DIR))

import realnode  # noqa: E402
from controlplane import ControlPlane, _read_state, binary_path, cluster_state_dir, command_for  # noqa: E402

CHART = REPO / "charts" / "datasweep"
QUICKSTART_SOURCES = REPO / "examples" / "quickstart" / "sources"
IMAGES_USER = 10001  # the images' uid/gid: hostPath volumes get no fsGroup


@dataclass
class Target:
    """Where to install: the cluster, its real node (containerd socket, import record) and its API relay."""

    plane: ControlPlane
    node_socket: str
    import_record: Path
    api_for_pods: tuple[str, int]


def target_of(state_dir: Path) -> Target:
    state = _read_state(state_dir)
    if state is None:
        raise SystemExit(f"no cluster is running in {state_dir}; start one with `{command_for('up', state_dir)}`")
    node = state.get("node")
    if not node:
        raise SystemExit(f"the cluster has no real node ({state.get('realNode')}): nothing could run the operator pod")
    host, port = node["apiForPods"]
    return Target(ControlPlane.attach(state["kubeconfig"]), node["socket"], Path(node["importRecord"]), (host, port))


def values(images: dict[str, str], api_for_pods: tuple[str, int]) -> dict[str, Any]:
    """The chart values for this control plane: images already on the node, pods on the real node (GPU Jobs on
    the kwok GPU nodes), the data claim bound to a pre-made PV (no class), the API through the node's relay."""

    def ref(image: str) -> dict[str, str]:
        repository, tag = image.rsplit(":", 1)
        return {"repository": repository, "tag": tag}

    host, port = api_for_pods
    return {
        "image": {**ref(images["operator"]), "pullPolicy": "Never"},
        "workerImages": {
            "worker": ref(images["worker"]),
            # the trainer image (torch, ~6 GB) only with --trainer; the worker image stands in for it otherwise
            "trainer": ref(images.get("trainer", images["worker"])),
            "pullPolicy": "Never",
        },
        "data": {"storageClassName": "", "size": "1Gi", "accessModes": ["ReadWriteMany"]},
        "nodeSelector": dict(realnode.NODE_SELECTOR),
        "tolerations": list(realnode.TOLERATIONS),
        "jobDefaults": {
            "nodeSelector": dict(realnode.NODE_SELECTOR),
            "tolerations": list(realnode.TOLERATIONS),
            "gpuNodeSelector": {"type": "kwok"},
        },
        "hostAliases": [{"ip": host, "hostnames": ["kubernetes.default.svc"]}],
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(port)},
        ],
    }


def data_volume(plane: ControlPlane, namespace: str, data_dir: Path, claim: str = "datasweep-data") -> str:
    """A hostPath PV at `data_dir` on the real node, reserved for the chart's claim; the quick start's sources
    copied there. What a StorageClass would provide on a real cluster."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(QUICKSTART_SOURCES, data_dir / "sources", dirs_exist_ok=True)
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, IMAGES_USER, IMAGES_USER, follow_symlinks=False)
    data_dir.chmod(0o775)
    name = f"{namespace}-{claim}"
    on_the_node = [{"key": k, "operator": "In", "values": [v]} for k, v in realnode.NODE_SELECTOR.items()]
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "datasweep"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(data_dir), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": on_the_node}]}},
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(pv))
    return name


def helm(plane: ControlPlane, *args: str) -> str:
    command = [str(binary_path("helm")), "--kubeconfig", str(plane.kubeconfig), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=plane.env, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def install(
    target: Target, namespace: str, data_dir: Path, release: str = "datasweep", trainer: bool = False
) -> dict[str, str]:
    """Images onto the node, the data PV, `helm upgrade --install`, the operator's rollout. Returns the images."""
    from images import ensure_images, import_into_containerd

    images = ensure_images(["operator", "worker", *(["trainer"] if trainer else [])], quiet=True)
    import_into_containerd(target.node_socket, list(images.values()), target.import_record)
    data_volume(target.plane, namespace, data_dir)
    values_file = data_dir.parent / f"{release}-values.yaml"
    values_file.write_text(json.dumps(values(images, target.api_for_pods), indent=2) + "\n")
    # What docs/deploy.md runs, with this control plane's values file.
    helm(target.plane, "upgrade", "--install", release, str(CHART), "--namespace", namespace, "--create-namespace",
         "-f", str(values_file))  # fmt: skip
    target.plane.kubectl("-n", namespace, "rollout", "status", f"deploy/{release}", "--timeout=300s")
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=None, help="the cluster of `up --state-dir`")
    parser.add_argument("--namespace", default="ml-experiments")
    parser.add_argument("--trainer", action="store_true", help="also the trainer image (torch, ~6 GB, ~10 min cold)")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or cluster_state_dir()).resolve()
    target = target_of(state_dir)
    data_dir = state_dir / "data" / args.namespace
    install(target, args.namespace, data_dir, trainer=args.trainer)
    host = target.api_for_pods[0]
    print(
        f"datasweep installed in namespace {args.namespace}; the data volume is {data_dir} (hostPath on the real "
        f"node), with the quick start's sources/copa.\n"
        f"  {command_for('env', state_dir)}    # KUBECONFIG and PATH for kubectl/helm\n"
        f"  python -m datasweep.testing.openai_server --host {host} --port 8000 &    # an OpenAI-compatible server "
        f"pods reach\n"
        f"then the quick start of docs/deploy.md, with baseURL: http://{host}:8000/v1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
