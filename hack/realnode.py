"""A real node for the test control plane: containerd + kubelet on this host, beside the kwok nodes.

Pods scheduled here really run, in containers made from our images (hack/images.py), with their limits enforced.
What it takes on a Debian host (hack/ensure-node-deps.sh installs the packages; see docs/controlplane.md):
- root, runc, containerd (1.6), ctr, Debian's CNI plugins, docker (to build and export the images);
- containerd: a separate instance (own root, state and socket), CRI `restrict_oom_score_adj = true` (root
  here may not lower oom_score_adj), `sandbox_image` = the pause image compiled from Kubernetes' pause.c;
- network: a bridge of ours with a private /24 (no masquerade, no default route: pods reach only the host on
  the bridge address, which is also the node IP; host iptables are left alone);
- kubelet: `failCgroupV1: false` (1.35 refuses cgroup v1 otherwise), cgroupfs under a cgroup root of ours, a
  client certificate O=system:nodes signed by the test CA.

The node carries the label `type=real` and the taint `datasweep.io/real-node=true:NoSchedule`: only pods that
ask for it land here (the operator's settings `jobDefaults.nodeSelector/tolerations`), so kwok tests keep
running on the kwok CPU node. kwok ignores it (it manages only nodes annotated kwok.x-k8s.io/node=fake).

Up to SLOTS nodes run at once on one host (one per control plane): each slot has its own bridge, subnet,
cgroup root and containerd root. A slot's containerd root persists across runs, so images imported once stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

NODE_NAME = "datasweep-node"
NODE_LABELS = {"type": "real", "datasweep.io/node": "real"}
TAINT_KEY = "datasweep.io/real-node"
# What a pod (Job defaults, chart values) needs to run on the real node.
NODE_SELECTOR = {"type": "real"}
TOLERATIONS = [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
SLOTS = 4
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_V1 = Path("/sys/fs/cgroup")


def unavailable_reason() -> str | None:
    """Why this host cannot run a real node (None: it can)."""
    setting = os.environ.get("DATASWEEP_REAL_NODE", "auto")
    if setting in ("0", "false", "no", "off"):
        return "DATASWEEP_REAL_NODE=0"
    if os.geteuid() != 0:
        return "not root (containerd and kubelet need root)"
    for tool in ("runc", "containerd", "ctr", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (hack/ensure-node-deps.sh installs it as root)"
    if cni_bin_dir() is None:
        return "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def bridge_ip(slot: int) -> str:
    return f"10.213.{slot}.1"


def cni_bin_dir() -> str | None:
    return next((d for d in CNI_BIN_DIRS if Path(d, "bridge").is_file() and Path(d, "host-local").is_file()), None)


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result


class RealNode:
    """containerd + kubelet of one slot. `start` via ControlPlane; `stop` cleans up everything it made."""

    def __init__(self, slot: int, slot_dir: Path, lock: IO[str]) -> None:
        self.slot = slot
        self.dir = slot_dir
        self._lock = lock
        self.bridge = f"dsweep{slot}"
        self.subnet = f"10.213.{slot}.0/24"
        self.ip = bridge_ip(slot)  # the bridge address: node IP, and how pods reach the host
        self.run_dir = Path(f"/run/datasweep-node-{slot}")
        self.socket = str(self.run_dir / "containerd.sock")
        self.cgroup_root = f"/datasweep-node-{slot}"
        self.containerd_root = self.dir / "containerd"
        self.kubelet_root = self.dir / "kubelet"
        # Per slot: a kubelet removes the /var/log/pods entries of pods it does not know, i.e. another slot's,
        # and `kubectl logs` of those then fails ("failed to try resolving symlinks in path /var/log/pods/...").
        self.pod_logs = self.dir / "pod-logs"

    # -- slot

    @classmethod
    def claim(cls, cache: Path) -> RealNode | None:
        """A free slot (its lock held until stop), or None when all SLOTS are in use."""
        base = cache / "node"
        base.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            lock = (base / f"slot-{slot}.lock").open("w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            return cls(slot, base / f"slot-{slot}", lock)
        return None

    # -- set-up

    def prepare(self, pki: Path, server: str, pause_image: str, config_dir: Path) -> tuple[Path, Path]:
        """Clean what a previous run of this slot left, then write the configs into `config_dir` (the control
        plane's work dir: its watchdog recognises its processes by that path). Returns (containerd, kubelet)
        config paths."""
        self.cleanup()
        config_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.dir, self.run_dir, self.containerd_root, self.dir / "cni"):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.kubelet_root, ignore_errors=True)
        shutil.rmtree(self.pod_logs, ignore_errors=True)
        shutil.rmtree(self.dir / "containerd-state", ignore_errors=True)
        shutil.rmtree(self.dir / "ipam", ignore_errors=True)
        self.kubelet_root.mkdir()
        self.pod_logs.mkdir()
        self._bridge_up()
        self._cgroups_up()
        (self.dir / "cni" / "10-datasweep.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": f"datasweep-{self.slot}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            # No routes: no default route in pods; they reach the host's bridge address only.
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.subnet, "gateway": self.ip}]],
                                "dataDir": str(self.dir / "ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
        )
        containerd_config = config_dir / "containerd.toml"
        containerd_config.write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{self.dir / "containerd-state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.containerd_root / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{self.dir / "cni"}"
"""
        )
        kubeconfig = config_dir / "kubelet.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "datasweep",
                            "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                        }
                    ],
                    "users": [
                        {
                            "name": "node",
                            "user": {"client-certificate": str(pki / "node.crt"), "client-key": str(pki / "node.key")},
                        }
                    ],
                    "contexts": [{"name": "node", "context": {"cluster": "datasweep", "user": "node"}}],
                    "current-context": "node",
                }
            )
        )
        kubelet_config = config_dir / "kubelet.yaml"
        kubelet_config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "failCgroupV1": False,  # 1.35 refuses cgroup v1 hosts otherwise
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self.cgroup_root,
                    "podLogsDir": str(self.pod_logs),
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "address": self.ip,
                    "port": 10250,
                    "healthzPort": 0,
                    "readOnlyPort": 0,
                    "makeIPTablesUtilChains": False,
                    "failSwapOn": False,
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(pki / "ca.crt")},
                    },
                    # Only the API server (admin client cert) reaches it, for logs and exec.
                    "authorization": {"mode": "AlwaysAllow"},
                    # Absolute, tiny disk thresholds: under disk pressure the eviction manager deletes every
                    # unused image (the pause image too), whatever the GC thresholds below; on a shared, nearly
                    # full dev disk 1% was reached while an image was imported, and no pod could start after.
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1Mi",
                        "imagefs.available": "1Mi",
                        "nodefs.inodesFree": "1%",
                    },
                    # Our images cannot be pulled again: never garbage-collect them.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "maxPods": 30,
                    "serializeImagePulls": False,
                    "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
                    # Pods resolve names through PodDns on the bridge address (cluster DNS, as CoreDNS serves it).
                    "clusterDNS": [self.ip],
                    "clusterDomain": CLUSTER_DOMAIN,
                }
            )
        )
        return containerd_config, kubelet_config

    def kubelet_args(self, config: Path) -> list[str]:
        return [
            "--config", str(config),
            "--kubeconfig", str(config.parent / "kubelet.kubeconfig"),
            "--root-dir", str(self.kubelet_root),
            "--cert-dir", str(self.dir / "kubelet-pki"),
            "--hostname-override", NODE_NAME,
            "--node-ip", self.ip,
            "--node-labels", ",".join(f"{k}={v}" for k, v in NODE_LABELS.items()),
            "--v", "1",
        ]  # fmt: skip

    def _bridge_up(self) -> None:
        # Made here, not by the CNI plugin on the first pod: kubelet binds to the address at start.
        if _run("ip", "link", "show", self.bridge, check=False).returncode != 0:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
        addresses = _run("ip", "-4", "-o", "addr", "show", "dev", self.bridge).stdout
        if f"{self.ip}/" not in addresses:
            _run("ip", "addr", "add", f"{self.ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def _cgroup_dirs(self) -> list[Path]:
        if not (CGROUP_V1 / "memory").is_dir():
            return []  # cgroup v2: kubelet creates its root under the unified hierarchy itself
        return [
            d / self.cgroup_root.lstrip("/")
            for d in CGROUP_V1.iterdir()
            if d.is_dir() and not d.is_symlink() and d.name != "unified" and (d / "cgroup.procs").exists()
        ]

    def _cgroups_up(self) -> None:
        # kubelet refuses a cgroupRoot that does not exist in every hierarchy.
        for directory in self._cgroup_dirs():
            directory.mkdir(exist_ok=True)
            if directory.parent.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (directory / name).write_text((directory.parent / name).read_text())

    # -- tear-down

    def drain(self, kubectl: Any, timeout: float = 30.0) -> None:
        """Delete the pods on this node and wait until their containers are gone (kubelet tears down their
        sandboxes and networks while containerd still runs)."""
        kubectl("delete", "pods", "--all-namespaces", "--field-selector", f"spec.nodeName={NODE_NAME}",
                "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._pids_in_cgroups():
            time.sleep(0.5)

    def _pids_in_cgroups(self) -> list[int]:
        pids: set[int] = set()
        for root in self._cgroup_dirs():
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError, ValueError):
                        pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def cleanup(self) -> None:
        """Whatever a stopped (or crashed) node of this slot left: containers, shims, mounts, cgroups."""
        for pid in self._pids_in_cgroups():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        marker = self.socket.encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    cmdline = (proc / "cmdline").read_bytes()
                    if b"containerd-shim" in cmdline and marker in cmdline:
                        os.kill(int(proc.name), signal.SIGKILL)
        time.sleep(0.2)
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mounts").read_text().splitlines():
                target = line.split()[1].replace("\\040", " ")
                if target.startswith((str(self.dir) + "/", str(self.run_dir) + "/")):
                    mounts.append(target)
        for target in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", target, check=False)
        for root in self._cgroup_dirs():
            if root.is_dir():
                for directory in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                    with contextlib.suppress(OSError):
                        directory.rmdir()

    def release(self) -> None:
        """After stop: the bridge goes, the slot is free again (the containerd root and its images stay)."""
        self.cleanup()
        for root in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                root.rmdir()
        _run("ip", "link", "delete", self.bridge, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    # -- images

    def import_images(self, refs: list[str]) -> list[str]:
        """Make docker images available to the node (skipped when already imported)."""
        from images import import_into_containerd

        return import_into_containerd(self.socket, refs, self.import_record)

    @property
    def import_record(self) -> Path:
        """Which docker image ids were imported into this slot's containerd (its root persists across runs)."""
        return self.dir / "imported.json"


class ApiProxy:
    """Pods reach the API server (which listens on loopback only) through this TCP relay on the bridge address:
    there is no kube-proxy, so the `kubernetes` Service does not work; set KUBERNETES_SERVICE_HOST/PORT to it."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        import socket
        import threading

        # Port 443: Kopf's in-cluster login dials https://kubernetes.default.svc (no port), which a pod's
        # hostAliases can point at this address.
        self._socket = socket.create_server((listen_host, 443))
        self.host, self.port = listen_host, int(self._socket.getsockname()[1])
        self._target = ("127.0.0.1", target_port)
        self._threading = threading
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="api-proxy").start()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        import socket

        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._socket.close()


class PodDns:
    """The cluster DNS of the real node, for what pods here need of it: the records of headless Services, as
    CoreDNS's kubernetes plugin serves them from EndpointSlices (`<hostname>.<service>.<ns>.svc.<domain>`: the
    endpoint of that hostname; `<service>.<ns>.svc.<domain>`: every endpoint). Multi-node training pods
    rendezvous at `<job>-0.<service>` (an Indexed Job's pod 0). Any other name: NXDOMAIN (pods reach nothing
    else by name). UDP on port 53 of the bridge address, which the kubelet gives pods as their nameserver.

    `endpoints(namespace, service)` returns the (hostname or None, address) of the Service's endpoints."""

    def __init__(self, listen_host: str, endpoints: Any, port: int = 53) -> None:
        import socket
        import threading

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((listen_host, port))
        self.port = int(self._socket.getsockname()[1])
        self._endpoints = endpoints
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="pod-dns").start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                query, peer = self._socket.recvfrom(512)
            except OSError:
                return
            with contextlib.suppress(Exception):  # a malformed query or an API hiccup: no answer, the pod retries
                self._socket.sendto(self.answer(query), peer)

    def lookup(self, name: str) -> list[str] | None:
        """The IPv4 addresses of a name (None: no such name)."""
        suffix = f".svc.{CLUSTER_DOMAIN}"
        if not name.endswith(suffix):
            return None
        labels = name[: -len(suffix)].split(".")
        if len(labels) not in (2, 3):
            return None
        host, (service, namespace) = (labels[0] if len(labels) == 3 else None), labels[-2:]
        found = [ip for hostname, ip in self._endpoints(namespace, service) if host is None or hostname == host]
        return found or None

    def answer(self, query: bytes) -> bytes:
        import ipaddress
        import struct

        ident, flags = struct.unpack("!HH", query[:4])
        offset, labels = 12, []
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii").lower())
            offset += 1 + length
        qtype = struct.unpack("!H", query[offset + 1 : offset + 3])[0]
        question = query[12 : offset + 5]
        addresses = self.lookup(".".join(labels))
        records = [ip for ip in addresses or [] if qtype == 1]  # A; an AAAA of a known name: no data
        rcode = 3 if addresses is None else 0  # NXDOMAIN
        header = struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x0100) | 0x0080 | rcode, 1, len(records), 0, 0)
        answers = b"".join(
            struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + ipaddress.IPv4Address(ip).packed for ip in records
        )
        return header + question + answers

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._socket.close()
