#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, built from the Go module proxy, with kwok GPU nodes.

Beside the kwok nodes (2 GPU nodes, 1 CPU node: nothing runs there), a real node (containerd + kubelet, see
hack/realnode.py) runs pods for real where the host allows it (root, runc, containerd: hack/ensure-node-deps.sh);
elsewhere the cluster starts with kwok nodes only and says why in one line. DATASWEEP_REAL_NODE=0 turns it off.

Commands (the Makefile calls them):
  build    build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kwok and helm into
           ${DATASWEEP_CACHE:-~/.cache/datasweep}/bin/<versions>/ (skips what is already there)
  up       start a cluster in the background; its kubeconfig is ${DATASWEEP_CACHE}/cluster/kubeconfig
  down     stop the cluster started by `up`
  status   say whether that cluster runs, and list its nodes
  env      print `export KUBECONFIG=...` for that cluster

Python API (tests, demo):  cp = ControlPlane.start(); cp.kubectl("get", "nodes"); cp.stop()
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HACK_DIR = Path(__file__).resolve().parent
KWOK_DIR = HACK_DIR / "kwok"
if str(HACK_DIR) not in sys.path:
    sys.path.insert(0, str(HACK_DIR))

import realnode  # noqa: E402  (hack/ is not a package)

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
VERSIONS_KEY = f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}_helm-{HELM_VERSION}"

# Binaries that KUBEBUILDER_ASSETS (controller-runtime's envtest layout) may provide.
ENVTEST_BINARIES = ("etcd", "kube-apiserver", "kubectl")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
KCM_CONTROLLERS = (
    "job-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "ttl-after-finished-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # EndpointSlices of headless Services: the real node's cluster DNS (realnode.PodDns) answers from them.
    "endpointslice-controller",
)
# Not here on purpose: node-lifecycle-controller (nothing should evict pods or taint the fake nodes when kwok's
# heartbeats lag on a busy machine).
LOG_TAIL_LINES = 30


class ControlPlaneError(RuntimeError):
    """A failure with a message that says what went wrong and what to do."""


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; its message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{' '.join(map(str, self.cmd[3:]))} failed (exit {self.returncode}): {str(self.stderr).strip()}"


# ----------------------------------------------------------------------------------------------------------
# Locations


def cache_dir() -> Path:
    return Path(os.environ.get("DATASWEEP_CACHE") or Path.home() / ".cache" / "datasweep").expanduser()


def bin_dir() -> Path:
    return cache_dir() / "bin" / VERSIONS_KEY


def cluster_state_dir() -> Path:
    return Path(os.environ.get("DATASWEEP_CLUSTER_DIR") or cache_dir() / "cluster").expanduser()


def envtest_dir() -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    return Path(assets).expanduser() if assets else None


def binary_path(name: str) -> Path:
    """Path of binary `name`: KUBEBUILDER_ASSETS for etcd/kube-apiserver/kubectl if there, else the cache."""
    assets = envtest_dir()
    if assets is not None and name in ENVTEST_BINARIES and (assets / name).is_file():
        return assets / name
    return bin_dir() / name


# ----------------------------------------------------------------------------------------------------------
# Build


@dataclass(frozen=True)
class BuildTarget:
    """One `go build` in a wrapper module under hack/go/<module_dir>."""

    name: str
    module_dir: str
    main_module: str
    version: str
    binaries: dict[str, str]  # binary name -> main package
    ldflags: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        return [b for b in self.binaries if not binary_path(b).is_file()]


def _kubernetes_ldflags() -> tuple[str, ...]:
    minor = KUBERNETES_VERSION.split(".")[1]
    flags: list[str] = []
    for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor=1",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=2026-01-01T00:00:00Z",
        ]
    return tuple(flags)


BUILD_TARGETS = (
    BuildTarget(
        name="etcd",
        module_dir="etcd",
        main_module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        binaries={"etcd": "go.etcd.io/etcd/server/v3"},
        # etcd's version number is a constant; only the commit is a link-time variable.
        ldflags=(f"-X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}",),
    ),
    BuildTarget(
        name="kubernetes",
        module_dir="kubernetes",
        main_module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        binaries={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        },
        ldflags=_kubernetes_ldflags(),
    ),
    BuildTarget(
        name="kwok",
        module_dir="kwok",
        main_module="sigs.k8s.io/kwok",
        version=KWOK_VERSION,
        binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}",),
    ),
    BuildTarget(
        name="helm",
        module_dir="helm",
        main_module="helm.sh/helm/v3",
        version=HELM_VERSION,
        binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
        ldflags=(
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        ),
    ),
)
ALL_BINARIES = tuple(b for t in BUILD_TARGETS for b in t.binaries)
# What a kwok-only cluster needs (helm is for the chart tests, kubelet for the real node).
REQUIRED_BINARIES = tuple(b for b in ALL_BINARIES if b not in ("helm", "kubelet"))


def missing_binaries() -> list[str]:
    return [b for t in BUILD_TARGETS for b in t.missing()]


def find_go() -> Path:
    chosen = os.environ.get("GO")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise ControlPlaneError(f"GO={chosen} is not an executable Go binary; unset GO or point it at Go >= 1.26")
        return Path(chosen)
    candidates = [
        shutil.which("go"),
        "/usr/local/go/bin/go",
        str(Path.home() / "go/bin/go"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ControlPlaneError(
        "Go is not installed (no `go` on PATH, nor /usr/local/go/bin/go). Building the control plane needs "
        "Go >= 1.26: install it from https://go.dev/dl/ and put it on PATH, or set GO=/path/to/go."
    )


def _go_env(go: Path, *names: str) -> list[str]:
    out = subprocess.run([str(go), "env", *names], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def _module_cached(gomodcache: Path, module: str, version: str) -> bool:
    # The module cache escapes upper-case letters as !lower.
    escaped = "".join(f"!{c.lower()}" if c.isupper() else c for c in module)
    return (gomodcache / "cache" / "download" / escaped / "@v" / f"{version}.zip").is_file()


def check_module_proxy(go: Path, targets: Sequence[BuildTarget]) -> None:
    """Fail fast, with a clear message, when modules must be downloaded and the proxy does not answer."""
    goproxy, gomodcache, goflags = _go_env(go, "GOPROXY", "GOMODCACHE", "GOFLAGS")
    needed = [t for t in targets if not _module_cached(Path(gomodcache), t.main_module, t.version)]
    if not needed:
        return
    if "-mod=vendor" in goflags:
        return
    proxies = [p for p in goproxy.replace("|", ",").split(",") if p.startswith(("http://", "https://"))]
    if not proxies:
        raise ControlPlaneError(
            f"GOPROXY={goproxy!r} names no module proxy and {needed[0].main_module}@{needed[0].version} is "
            "not in the module cache. Set GOPROXY=https://proxy.golang.org (or your mirror)."
        )
    target = needed[0]
    url = f"{proxies[0].rstrip('/')}/{target.main_module}/@v/{target.version}.info"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ControlPlaneError(
            f"the Go module proxy {proxies[0]} is unreachable ({exc}); it is needed to download "
            f"{target.main_module}@{target.version}. Check the network, or set GOPROXY to a reachable mirror."
        ) from exc


def _build_target(go: Path, target: BuildTarget, log_dir: Path) -> float:
    """Build one target into the cache; returns seconds taken. Raises ControlPlaneError with the log tail."""
    started = time.monotonic()
    module_src = HACK_DIR / "go" / target.module_dir
    workdir = cache_dir() / "build" / VERSIONS_KEY / target.module_dir
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "go.sum"):
        if (module_src / name).is_file():
            shutil.copyfile(module_src / name, workdir / name)
    staging = bin_dir() / f".building-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_path = log_dir / f"{target.name}.log"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS=(os.environ.get("GOFLAGS", "") + " -mod=mod").strip())
    wanted = target.missing()
    command = [
        str(go),
        "build",
        "-trimpath",
        "-ldflags",
        " ".join(("-s", "-w", *target.ldflags)),
        "-o",
        # One package: name the file. Several: a directory, each binary named after its package.
        str(staging / wanted[0]) if len(wanted) == 1 else str(staging) + "/",
        *[target.binaries[b] for b in wanted],
    ]
    with log_path.open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise ControlPlaneError(
            f"building {target.name} failed (exit {result.returncode}); last lines of {log_path}:\n" + tail(log_path)
        )
    for binary in wanted:
        os.replace(staging / binary, bin_dir() / binary)
    # Keep the resolved go.sum next to the wrapper go.mod so later builds verify the same modules.
    if (workdir / "go.sum").is_file() and os.access(module_src, os.W_OK):
        with contextlib.suppress(OSError):
            shutil.copyfile(workdir / "go.sum", module_src / "go.sum")
    shutil.rmtree(staging, ignore_errors=True)
    return time.monotonic() - started


def build(parallel: bool | None = None, quiet: bool = False) -> list[str]:
    """Build what is missing. Returns the names of the binaries built (empty when all were cached)."""

    def say(message: str) -> None:
        if not quiet:
            print(f"[controlplane build] {message}", flush=True)

    targets = [t for t in BUILD_TARGETS if t.missing()]
    if not targets:
        say(f"all binaries present in {bin_dir()}")
        return []
    go = find_go()
    version = subprocess.run([str(go), "version"], capture_output=True, text=True).stdout.strip()
    check_module_proxy(go, targets)
    bin_dir().mkdir(parents=True, exist_ok=True)
    log_dir = cache_dir() / "build" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    names = [b for t in targets for b in t.missing()]
    say(f"{version}; building {', '.join(names)} into {bin_dir()} (logs in {log_dir})")
    if parallel is None:
        # Two build lanes (Kubernetes | the rest) when memory allows: a Kubernetes link alone takes a few GiB.
        parallel = _available_memory_gib() >= 8
    lanes: list[list[BuildTarget]] = (
        [[t for t in targets if t.name == "kubernetes"], [t for t in targets if t.name != "kubernetes"]]
        if parallel
        else [targets]
    )
    errors: list[ControlPlaneError] = []
    running: dict[str, float] = {}
    lock = threading.Lock()

    def run_lane(lane: list[BuildTarget]) -> None:
        for target in lane:
            with lock:
                running[target.name] = time.monotonic()
            say(f"building {target.name} {target.version} ...")
            try:
                seconds = _build_target(go, target, log_dir)
            except ControlPlaneError as exc:
                errors.append(exc)
                return
            finally:
                with lock:
                    running.pop(target.name, None)
            say(f"built {target.name} in {seconds / 60:.1f} min")

    threads = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in lanes if lane]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=60)
        with lock:
            busy = ", ".join(f"{n} ({(time.monotonic() - t) / 60:.0f} min)" for n, t in running.items())
        if busy:
            say(f"still building: {busy}")
    if errors:
        raise errors[0]
    say(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return names


def _available_memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


# ----------------------------------------------------------------------------------------------------------
# Helpers


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in content[-lines:])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all sockets stay open until every port is picked)."""
    import socket

    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def generate_pki(pki: Path) -> None:
    """A CA, the API server's serving cert, admin (system:masters) and real-node client certs, service-account
    keys."""
    if shutil.which("openssl") is None:
        raise ControlPlaneError(
            "openssl is needed to create the cluster's certificates; install it (apt install openssl)"
        )
    pki.mkdir(parents=True, exist_ok=True)
    days = "3650"
    # ECDSA P-256 keys: RSA key generation takes seconds each on a busy machine.
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
    _openssl("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", days, "-subj", "/CN=datasweep-test-ca", cwd=pki)  # fmt: skip
    (pki / "serving.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,"
        # The real node's bridge addresses: pods reach the API server there (realnode.ApiProxy).
        + "".join(f"IP:{realnode.bridge_ip(slot)}," for slot in range(realnode.SLOTS))
        + "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", "serving.ext"),
        ("admin", "/O=system:masters/CN=datasweep-admin", "client.ext"),
        # the real node's kubelet (the Node authorizer knows it by this name)
        ("node", f"/O=system:nodes/CN=system:node:{realnode.NODE_NAME}", "client.ext"),
    ):
        _openssl("req", *ec, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=pki)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", days, "-extfile", ext, cwd=pki)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    # JSON is YAML: kubectl, kopf and the kubernetes client all read it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "datasweep", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": "datasweep-admin",
                "user": {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
            }
        ],
        "contexts": [{"name": "datasweep", "context": {"cluster": "datasweep", "user": "datasweep-admin"}}],
        "current-context": "datasweep",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")


# The watchdog outlives its parent by design: when the parent disappears (crash, SIGKILL), it stops every
# process listed in the pid file whose command line names the cluster's work dir, then exits.
WATCHDOG_SOURCE = r"""
import os, signal, sys, time
parent, pid_file, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
def ours(pid):  # alive (not a zombie) and one of the cluster's processes
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            mine = pid != os.getpid() and marker in f.read()
        with open(f"/proc/{pid}/stat") as f:
            return mine and f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
while os.getppid() == parent:
    time.sleep(0.5)
try:
    pids = [int(p) for p in open(pid_file).read().split()]
except OSError:
    pids = []
for p in reversed(pids):  # newest first, one at a time, as ControlPlane.stop() does
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        if not ours(p):
            break
        try:
            os.killpg(p, sig)
        except OSError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and ours(p):
            time.sleep(0.1)
"""


def process_running(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # How it was started (restart_apiserver starts it again the same way).
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def failure(self) -> ControlPlaneError:
        log = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        hint = ""
        if "address already in use" in log:
            hint = " A port it needs is in use by another process (see the log); try again, or free the port."
        return ControlPlaneError(
            f"{self.name} exited early with code {self.popen.returncode}.{hint}\n"
            f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
        )


# ----------------------------------------------------------------------------------------------------------
# The control plane


@dataclass
class ControlPlane:
    workdir: Path
    kubeconfig: Path
    server: str
    processes: list[ManagedProcess] = field(default_factory=list)
    owns_workdir: bool = False
    owns_processes: bool = True
    _watchdog: subprocess.Popen[bytes] | None = None
    node: realnode.RealNode | None = None
    # Where pods on the real node reach the API server (host, port): set KUBERNETES_SERVICE_HOST/PORT to it.
    api_for_pods: tuple[str, int] | None = None
    _api_proxy: realnode.ApiProxy | None = None
    _pod_dns: realnode.PodDns | None = None
    # Why there is no real node (None when there is one, or when attached to someone else's cluster).
    node_unavailable: str | None = None

    # -- construction

    @classmethod
    def attach(cls, kubeconfig: str | Path) -> ControlPlane:
        """A handle on a cluster run by someone else (DATASWEEP_TEST_KUBECONFIG); stop() leaves it alone."""
        path = Path(kubeconfig).expanduser().resolve()
        if not path.is_file():
            raise ControlPlaneError(f"kubeconfig {path} does not exist")
        server = ""
        with contextlib.suppress(ValueError, KeyError, IndexError):
            server = json.loads(path.read_text())["clusters"][0]["cluster"]["server"]
        return cls(workdir=path.parent, kubeconfig=path, server=server, owns_processes=False)

    @classmethod
    def start(
        cls,
        workdir: str | Path | None = None,
        apiserver_port: int | None = None,
        timeout: float = 180.0,
        log: bool = False,
        real_node: bool | None = None,
    ) -> ControlPlane:
        """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, create the kwok nodes,
        start the real node (real_node None: where the host can run containers) and wait until the cluster is
        ready. Binaries must be built already (`make controlplane`)."""
        missing = [b for b in REQUIRED_BINARIES if not binary_path(b).is_file()]
        if missing:
            raise ControlPlaneError(
                f"control-plane binaries missing in {bin_dir()}: {', '.join(missing)}. "
                "Build them with `make controlplane` (python hack/controlplane.py build)."
            )
        if apiserver_port is not None and port_in_use(apiserver_port):
            raise ControlPlaneError(f"port {apiserver_port} on 127.0.0.1 is in use; pick another or stop its owner")
        owns = workdir is None
        root = Path(tempfile.mkdtemp(prefix="datasweep-cp-")) if workdir is None else Path(workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        port = apiserver_port or free_ports(1)[0]
        plane = cls(
            workdir=root,
            kubeconfig=root / "kubeconfig",
            server=f"https://127.0.0.1:{port}",
            owns_workdir=owns,
        )
        try:
            plane._boot(port, timeout, log, real_node)
        except BaseException:
            plane.stop()
            raise
        return plane

    def _say(self, enabled: bool, message: str) -> None:
        if enabled:
            print(f"[controlplane] {message}", flush=True)

    def _boot(self, apiserver_port: int, timeout: float, log: bool, real_node: bool | None = None) -> None:
        started = time.monotonic()
        deadline = started + timeout
        root = self.workdir
        (root / "logs").mkdir(exist_ok=True)
        (root / "pids").write_text("")
        self._start_watchdog()
        pki = root / "pki"
        generate_pki(pki)
        etcd_port, peer_port, kcm_port, scheduler_port = free_ports(4)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            "--name", "datasweep", "--data-dir", str(root / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"datasweep=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        self._wait(f"{etcd_url}/health", deadline, tls=False, what="etcd")
        self._say(log, f"etcd ready ({time.monotonic() - started:.1f}s)")
        self._spawn("kube-apiserver", [
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(apiserver_port),
            "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", SERVICE_CLUSTER_IP_RANGE,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction,ExtendedResourceToleration",
            # Its not-ready taint is lifted by the node-lifecycle controller, which is off (see KCM_CONTROLLERS).
            "--disable-admission-plugins", "TaintNodesByCondition",
            "--allow-privileged=true",
            "--profiling=false",
            # kubectl logs/exec on the real node: reach its kubelet by IP (its name does not resolve) as admin.
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-client-certificate", str(pki / "admin.crt"),
            "--kubelet-client-key", str(pki / "admin.key"),
        ])  # fmt: skip
        self._wait(f"{self.server}/readyz", deadline, tls=True, what="kube-apiserver")
        write_kubeconfig(self.kubeconfig, self.server, pki)
        self._say(log, f"kube-apiserver ready at {self.server} ({time.monotonic() - started:.1f}s)")
        kubeconfig = str(self.kubeconfig)
        self._spawn("kube-controller-manager", [
            "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--secure-port", str(kcm_port),
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--controllers", ",".join(KCM_CONTROLLERS),
            # The default client limit (20 QPS) let the Job controller finish about 5 Jobs a second: a 1,000-Job
            # sweep then waited minutes on the test cluster, not on the operator (bench/bench_fanout.py).
            "--kube-api-qps", "200", "--kube-api-burst", "400",
            "--profiling=false",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--secure-port", str(scheduler_port),
            "--leader-elect=false",
            "--profiling=false",
        ])  # fmt: skip
        kwok_home = root / "kwok-home"  # kwok also reads ~/.kwok/kwok.yaml: keep a person's file out of it
        kwok_home.mkdir(exist_ok=True)
        self._spawn(
            "kwok",
            [
                "--kubeconfig", kubeconfig,
                "--config", str(KWOK_DIR / "stages.yaml"),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr", "10.244.0.0/16",
                "--node-ip", "10.0.0.1",
            ],
            env={"HOME": str(kwok_home)},
        )  # fmt: skip
        for what, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", scheduler_port)):
            self._wait(f"https://127.0.0.1:{port}/healthz", deadline, tls=True, what=what, verify=False)
        self.kubectl("apply", "-f", str(KWOK_DIR / "nodes.yaml"), "-f", str(KWOK_DIR / "storage-class.yaml"))
        self._wait_until(deadline, "3 Ready kwok nodes", self._nodes_ready)
        self._wait_until(
            deadline,
            "the default ServiceAccount",
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
        )
        self._say(log, f"cluster ready: 3 kwok nodes ({time.monotonic() - started:.1f}s)")
        if real_node is False:
            self.node_unavailable = "not asked for (real_node=False)"
            return
        reason = realnode.unavailable_reason()
        if reason is None and not binary_path("kubelet").is_file():
            reason = f"kubelet is not built ({binary_path('kubelet')}); run `make controlplane`"
        if reason is None:
            self.node = realnode.RealNode.claim(cache_dir())
            if self.node is None:
                reason = f"all {realnode.SLOTS} real-node slots of this host are in use by other control planes"
        if reason is not None:
            self.node_unavailable = reason
            if real_node:
                raise ControlPlaneError(f"a real node was asked for but cannot run here: {reason}")
            print(f"[controlplane] kwok nodes only, no real node: {reason}", file=sys.stderr, flush=True)
            return
        node_started = time.monotonic()
        self._start_real_node(pki, max(deadline, time.monotonic() + 120))
        self._say(
            log,
            f"real node {realnode.NODE_NAME} Ready at {self.node.ip} in {time.monotonic() - node_started:.1f}s "
            f"(total {time.monotonic() - started:.1f}s)",
        )

    def _start_real_node(self, pki: Path, deadline: float) -> None:
        from images import build_pause, ensure_dockerd

        node = self.node
        assert node is not None
        ensure_dockerd()
        pause = build_pause(KUBERNETES_VERSION)
        containerd_config, kubelet_config = node.prepare(pki, self.server, pause, self.workdir / "node")
        self._spawn(
            "containerd", ["--config", str(containerd_config), "--log-level", "warn"], binary=shutil.which("containerd")
        )

        def containerd_up() -> bool:
            version = subprocess.run(["ctr", "--address", node.socket, "version"], capture_output=True, timeout=10)
            return version.returncode == 0

        self._wait_until(deadline, "containerd", containerd_up)
        node.import_images([pause])
        self._spawn("kubelet", node.kubelet_args(kubelet_config))
        self._wait_until(deadline, f"the real node {realnode.NODE_NAME} Ready", self._real_node_ready)
        self._api_proxy = realnode.ApiProxy(node.ip, int(self.server.rsplit(":", 1)[1]))
        self.api_for_pods = (self._api_proxy.host, self._api_proxy.port)
        self._pod_dns = realnode.PodDns(node.ip, self._service_endpoints)

    def _service_endpoints(self, namespace: str, service: str) -> list[tuple[str | None, str]]:
        """(hostname, address) of a Service's endpoints, from its EndpointSlices (the cluster DNS's source)."""
        query = urllib.parse.urlencode({"labelSelector": f"kubernetes.io/service-name={service}"})
        status, body = self._get(
            f"{self.server}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?{query}", tls=True
        )
        if status != 200:
            return []
        return [
            (endpoint.get("hostname"), address)
            for item in json.loads(body).get("items", [])
            if item.get("addressType") == "IPv4"
            for endpoint in item.get("endpoints") or []
            for address in endpoint.get("addresses") or []
        ]

    def _real_node_ready(self) -> bool:
        status, body = self._get(f"{self.server}/api/v1/nodes/{realnode.NODE_NAME}", tls=True)
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def import_images(self, refs: list[str]) -> list[str]:
        """Make these docker images runnable on the real node (no-op without one, or when already there)."""
        return self.node.import_images(refs) if self.node is not None else []

    # -- processes

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WATCHDOG_SOURCE,
                str(os.getpid()),
                str(self.workdir / "pids"),
                str(self.workdir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, binary: str | None = None
    ) -> ManagedProcess:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        child_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        child_env.update(env or {})
        try:
            popen = subprocess.Popen(
                [binary or str(binary_path(name)), *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=self.workdir,
                start_new_session=True,  # own process group: stop() and the watchdog reach its children too
            )
        finally:
            log_file.close()
        process = ManagedProcess(name, popen, log_path, list(args), env)
        self.processes.append(process)
        self._write_pids()
        return process

    def _write_pids(self) -> None:
        (self.workdir / "pids").write_text(" ".join(str(p.pid) for p in self.processes) + "\n")

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 120.0) -> None:
        """Stop kube-apiserver (SIGTERM, SIGKILL after 10s), stay down `down_seconds`, start it again with the
        same flags and port, and wait for /readyz: what clients see when the API server is upgraded or crashes.
        The restarted process keeps the old one's place in `processes` (stop() order)."""
        index = next(i for i, p in enumerate(self.processes) if p.name == "kube-apiserver")
        old = self.processes[index]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(old.pid, signal.SIGTERM)
        try:
            old.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old.pid, signal.SIGKILL)
            old.popen.wait()
        time.sleep(down_seconds)
        deadline = time.monotonic() + timeout
        new = self._spawn(old.name, old.args, env=old.env)
        self.processes.remove(new)
        self.processes[index] = new
        self._write_pids()
        self._wait(f"{self.server}/readyz", deadline, tls=True, what="kube-apiserver (restarted)")

    def _check_processes(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                raise process.failure()

    def stop(self, grace: float = 10.0, log: bool = False) -> None:
        """Stop every process: SIGTERM, SIGKILL after `grace` seconds, reap, and kill what is left in its group.

        In steps, each step's processes at once: the controllers and the scheduler first (nothing replaces or
        reschedules the pods the real node's drain deletes), then the drain, then kubelet, containerd and kwok,
        then kube-apiserver, and etcd last (an API server whose etcd is gone waits for it until killed)."""
        if not self.owns_processes:
            return
        started = time.monotonic()
        steps = [("kube-controller-manager", "kube-scheduler"), ("kubelet", "containerd", "kwok"), ("kube-apiserver",)]
        named = {name for step in steps for name in step}
        steps.append(tuple(p.name for p in self.processes if p.name not in named))  # etcd, anything else
        for index, step in enumerate(steps):
            if index == 1 and self.node is not None and self._alive("kubelet"):
                drain_started = time.monotonic()
                with contextlib.suppress(Exception):
                    self.node.drain(lambda *a, **k: self.kubectl(*a, **k))
                self._say(log, f"real node drained in {time.monotonic() - drain_started:.1f}s")
            self._stop_at_once([p for p in self.processes if p.name in step], grace, log)
        self._say(log, f"all processes stopped in {time.monotonic() - started:.1f}s")
        if self._api_proxy is not None:
            self._api_proxy.close()
            self._api_proxy = None
        if self._pod_dns is not None:
            self._pod_dns.close()
            self._pod_dns = None
        if self.node is not None:
            self.node.release()
            self.node = None
        if self._watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                self._watchdog.terminate()
            self._watchdog.wait()
            self._watchdog = None
        if self.owns_workdir and not os.environ.get("DATASWEEP_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _alive(self, name: str) -> bool:
        return any(p.name == name and p.popen.poll() is None for p in self.processes)

    def _stop_at_once(self, processes: list[ManagedProcess], grace: float, log: bool) -> None:
        started = time.monotonic()
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = started + grace
        for process in processes:
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(log, f"{process.name} ignored SIGTERM for {grace:.0f}s: SIGKILL")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.popen.wait()
            # Anything left in its process group (none expected) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if processes:
            names = ", ".join(p.name for p in processes)
            self._say(log, f"stopped {names} in {time.monotonic() - started:.1f}s")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- use

    @property
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the built binaries (kubectl, helm, kwok) first on PATH."""
        return dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            PATH=os.pathsep.join([str(binary_path("kubectl").parent), str(bin_dir()), os.environ.get("PATH", "")]),
        )

    def bin(self, name: str) -> Path:
        return binary_path(name)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(binary_path("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, env=self.env, timeout=120)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    # -- health

    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        if not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def _get(self, url: str, tls: bool, verify: bool = True) -> tuple[int, bytes]:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if tls:
            handlers.append(urllib.request.HTTPSHandler(context=self._ssl_context(verify)))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(url, timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _api_ok(self, path: str) -> bool:
        status, _ = self._get(f"{self.server}{path}", tls=True)
        return status == 200

    def _nodes_ready(self) -> bool:
        status, body = self._get(f"{self.server}/api/v1/nodes", tls=True)
        if status != 200:
            return False
        ready = 0
        for node in json.loads(body).get("items", []):
            conditions = node.get("status", {}).get("conditions", [])
            ready += any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return ready >= 3

    def _wait(self, url: str, deadline: float, tls: bool, what: str, verify: bool = True) -> None:
        def healthy() -> bool:
            status, _ = self._get(url, tls=tls, verify=verify)
            return status == 200

        self._wait_until(deadline, what, healthy)

    def _wait_until(self, deadline: float, what: str, condition: Any) -> None:
        last_error = ""
        while True:
            self._check_processes()
            try:
                if condition():
                    return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = f" (last error: {exc})"
            if time.monotonic() > deadline:
                logs = "\n".join(f"  {p.name}: {p.log_path}" for p in self.processes)
                raise ControlPlaneError(f"timed out waiting for {what}{last_error}. Logs:\n{logs}")
            time.sleep(0.25)


# ----------------------------------------------------------------------------------------------------------
# Background cluster for people: up / down / status / env


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        state: dict[str, Any] = json.loads(_state_file(state_dir).read_text())
        return state
    return None


def _owned_by(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() and process_running(pid)
    except OSError:
        return False


def serve(state_dir: Path, apiserver_port: int | None) -> int:
    """Run the cluster in the foreground until SIGTERM/SIGINT (what `up` starts in the background)."""
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: stop_requested.set())
    plane = ControlPlane.start(workdir=state_dir / "run", apiserver_port=apiserver_port, log=True)
    try:
        shutil.copyfile(plane.kubeconfig, state_dir / "kubeconfig")
        state = {
            "supervisor": os.getpid(),
            "pids": plane.pids,
            "server": plane.server,
            "kubeconfig": str(state_dir / "kubeconfig"),
            "workdir": str(plane.workdir),
            "realNode": (
                f"{realnode.NODE_NAME} at {plane.node.ip}" if plane.node else f"none: {plane.node_unavailable}"
            ),
            # what hack/install.py needs to put images on the node and give pods the API server's address
            "node": (
                {
                    "socket": plane.node.socket,
                    "importRecord": str(plane.node.import_record),
                    "apiForPods": list(plane.api_for_pods or ()),
                }
                if plane.node
                else None
            ),
        }
        tmp = _state_file(state_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, _state_file(state_dir))
        while not stop_requested.wait(1.0):
            for process in plane.processes:
                if process.popen.poll() is not None:
                    print(process.failure(), file=sys.stderr, flush=True)
                    stop_requested.set()
    finally:
        plane.stop(log=True)
        with contextlib.suppress(OSError):
            _state_file(state_dir).unlink()
        print("[controlplane] stopped", flush=True)
    return 0


def command_for(verb: str, state_dir: Path) -> str:
    """How a person runs `verb` (up, down, status, env) on the cluster kept in `state_dir`: the make target or
    the plain command for the default one, else the command with `--state-dir` (without it, a hint points at
    another cluster)."""
    if state_dir.resolve() == cluster_state_dir().resolve():
        return {"up": "make cluster-up", "down": "make cluster-down"}.get(verb, f"python hack/controlplane.py {verb}")
    return f"python hack/controlplane.py {verb} --state-dir {shlex.quote(str(state_dir))}"


def up_hints(state: dict[str, Any], state_dir: Path) -> str:
    """What `up` prints after the first line: how to use and stop this cluster."""
    return (
        f"  export KUBECONFIG={state['kubeconfig']}      # or: eval $({command_for('env', state_dir)})\n"
        f"  {binary_path('kubectl')} get nodes\n"
        f"  logs: {state['workdir']}/logs/    status: {command_for('status', state_dir)}    "
        f"stop: {command_for('down', state_dir)}"
    )


def up(state_dir: Path, apiserver_port: int | None, timeout: float = 240.0) -> int:
    state = _read_state(state_dir)
    if state and process_running(int(state["supervisor"])):
        print(f"a cluster is already running (API server {state['server']}).\n{up_hints(state, state_dir)}")
        return 0
    missing = missing_binaries()
    if [b for b in missing if b in REQUIRED_BINARIES]:
        print(f"binaries missing: {', '.join(missing)}; run `make controlplane` first", file=sys.stderr)
        return 1
    shutil.rmtree(state_dir / "run", ignore_errors=True)
    for stale in (_state_file(state_dir), state_dir / "kubeconfig"):
        stale.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "supervisor.log"
    command = [sys.executable, str(Path(__file__).resolve()), "serve", "--state-dir", str(state_dir)]
    if apiserver_port:
        command += ["--port", str(apiserver_port)]
    started = time.monotonic()
    with log_path.open("w") as log:
        supervisor = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    while _read_state(state_dir) is None:
        if supervisor.poll() is not None or time.monotonic() - started > timeout:
            if supervisor.poll() is None:
                os.killpg(supervisor.pid, signal.SIGTERM)
                supervisor.wait()
            print(f"the cluster did not start; last lines of {log_path}:\n{tail(log_path)}", file=sys.stderr)
            return 1
        time.sleep(0.3)
    state = _read_state(state_dir) or {}
    print(
        f"cluster up in {time.monotonic() - started:.1f}s: API server {state['server']}, 3 kwok nodes "
        f"(2 x 8 nvidia.com/gpu, 1 CPU); real node: {state.get('realNode')}.\n{up_hints(state, state_dir)}"
    )
    return 0


def down(state_dir: Path, timeout: float = 90.0) -> int:
    """Ask the supervisor to stop its cluster (ControlPlane.stop: drain, then each step at once) and wait for it;
    only a supervisor still busy after `timeout` gets its processes killed."""
    state = _read_state(state_dir)
    if state is None:
        print("no cluster is running (nothing to stop)")
        return 0
    started = time.monotonic()
    supervisor = int(state["supervisor"])
    marker = str(state["workdir"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(supervisor, signal.SIGTERM)
    deadline = started + timeout
    while time.monotonic() < deadline and (
        process_running(supervisor) or any(_owned_by(p, marker) for p in state["pids"])
    ):
        time.sleep(0.1)
    leftovers = [p for p in state["pids"] if _owned_by(p, marker)]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _state_file(state_dir).unlink(missing_ok=True)
    log = state_dir / "supervisor.log"
    print(
        f"cluster stopped in {time.monotonic() - started:.1f}s"
        + (f" (the supervisor was still busy after {timeout:.0f}s: killed {leftovers}; see {log})" if leftovers else "")
    )
    return 0


def status(state_dir: Path) -> int:
    state = _read_state(state_dir)
    if state is None or not process_running(int(state["supervisor"])):
        print(f"no cluster is running; start one with `{command_for('up', state_dir)}`")
        return 1
    alive = [p for p in state["pids"] if _owned_by(p, str(state["workdir"]))]
    print(f"cluster running: API server {state['server']}, {len(alive)}/{len(state['pids'])} processes alive")
    print(f"  KUBECONFIG={state['kubeconfig']}")
    plane = ControlPlane.attach(state["kubeconfig"])
    result = plane.kubectl("get", "nodes", "-o", "wide", check=False)
    print(result.stdout or result.stderr, end="")
    return 0 if len(alive) == len(state["pids"]) else 1


def env(state_dir: Path) -> int:
    state = _read_state(state_dir)
    if state is None:
        print(f"no cluster is running; start one with `{command_for('up', state_dir)}`", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={state['kubeconfig']}")
    print(f"export PATH={bin_dir()}:$PATH")
    return 0


@contextlib.contextmanager
def running(workdir: str | Path | None = None) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(workdir=workdir)
    try:
        yield plane
    finally:
        plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the binaries that are missing")
    build_cmd.add_argument("--serial", action="store_true", help="one build at a time (less memory)")
    for name in ("up", "serve"):
        sub = commands.add_parser(name, help="start a cluster in the background" if name == "up" else argparse.SUPPRESS)
        sub.add_argument("--port", type=int, default=None, help="API server port (default: a free one)")
        sub.add_argument("--state-dir", type=Path, default=None)
    for name in ("down", "status", "env"):
        commands.add_parser(name).add_argument("--state-dir", type=Path, default=None)
    commands.add_parser("paths", help="print where each binary is")
    args = parser.parse_args(argv)
    state_dir = (getattr(args, "state_dir", None) or cluster_state_dir()).resolve()
    try:
        if args.command == "build":
            build(parallel=False if args.serial else None)
            return 0
        if args.command == "up":
            return up(state_dir, args.port)
        if args.command == "serve":
            return serve(state_dir, args.port)
        if args.command == "down":
            return down(state_dir)
        if args.command == "status":
            return status(state_dir)
        if args.command == "env":
            return env(state_dir)
        if args.command == "paths":
            for name in ALL_BINARIES:
                path = binary_path(name)
                print(f"{name:24} {path}{'' if path.is_file() else '  (missing)'}")
            return 0
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
