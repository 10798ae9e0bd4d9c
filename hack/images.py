#!/usr/bin/env python3
"""Build datasweep's images (images/*.Dockerfile) with the local Docker engine, cached, without a registry.

  python hack/images.py build [operator worker trainer]   build what is stale (default: operator worker)
  python hack/images.py list                              the images, their ids, sizes and content hashes

Each image carries the label io.datasweep.content-hash: a hash of its Dockerfile, the build context
(pyproject.toml, README.md, operator/) and the base image id. A build is skipped when the tagged image has the
current hash, so a second `make images` takes seconds; inside a build, the Dockerfiles install dependencies in a
layer of their own, so a code change rebuilds only the last layer.

Where no registry is reachable (our machines), the Dockerfiles' FROM (python:3.11.11-slim-bookworm) is made
once locally: debootstrap --variant=minbase bookworm from the host's apt mirror, `docker import`, then
images/local-base/python.Dockerfile (Debian's python3 + venv and the host's extra CA certificates).
The legacy builder is used (DOCKER_BUILDKIT=0): BuildKit would pull its frontend image. When no Docker engine
runs and we are root, dockerd is started by hand (no bridge, no iptables) and left running for the next build.

Python API (controlplane.py, tests): ensure_images(["operator", "worker"]), import_into_containerd(...).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO / "images"
TAG = os.environ.get("DATASWEEP_IMAGE_TAG", "dev")
IMAGES = ("operator", "worker", "trainer")
HASH_LABEL = "io.datasweep.content-hash"
LOCAL_DEBIAN = "local/debian:bookworm-minbase"
PAUSE_VERSION = "3.10.1"
PAUSE_IMAGE = f"datasweep.local/pause:{PAUSE_VERSION}"  # containerd's sandbox_image on the test node
CONTEXT_FILES = ("pyproject.toml", "README.md")
CONTEXT_DIRS = ("operator",)


class ImageError(RuntimeError):
    """A build that cannot go on; the message says why and what to do."""


def say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("DATASWEEP_CACHE") or Path.home() / ".cache" / "datasweep").expanduser()


def tag_of(name: str) -> str:
    return f"datasweep-{name}:{TAG}"


# ----------------------------------------------------------------------------------------------------------
# Docker


def docker_binary() -> str:
    # Debian's docker.io CLI matches its dockerd (20.10); a newer CLI earlier on PATH works too.
    found = shutil.which("docker") or ("/usr/bin/docker" if Path("/usr/bin/docker").is_file() else None)
    if not found:
        raise ImageError("docker is not installed: run hack/ensure-node-deps.sh as root (apt-get install docker.io)")
    return found


def docker(*args: str, input: bytes | None = None, check: bool = True, timeout: float | None = None) -> str:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    result = subprocess.run(
        [docker_binary(), *args], input=input, capture_output=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise ImageError(f"docker {' '.join(args[:2])} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


def docker_running() -> bool:
    try:
        return (
            subprocess.run(
                [docker_binary(), "info"], capture_output=True, timeout=20, env=dict(os.environ, DOCKER_BUILDKIT="0")
            ).returncode
            == 0
        )
    except (subprocess.TimeoutExpired, OSError):
        return False


def ensure_dockerd() -> None:
    """A Docker engine to build with: the running one, or dockerd started by hand (root) and left running."""
    if docker_running():
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if os.geteuid() != 0 or not Path(dockerd).is_file():
        raise ImageError(
            "no Docker engine is reachable (docker info failed) and dockerd cannot be started here "
            "(needs root and Debian's docker.io): start Docker, or run hack/ensure-node-deps.sh as root"
        )
    log_dir = cache_dir() / "docker"
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"starting dockerd (log {log_dir / 'dockerd.log'})")
    with (log_dir / "dockerd.log").open("ab") as log:
        subprocess.Popen(
            [dockerd, "--bridge=none", "--iptables=false", "--ip-masq=false", "--storage-driver=overlay2"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this build: the next one reuses it
        )
    deadline = time.monotonic() + 90
    while not docker_running():
        if time.monotonic() > deadline:
            raise ImageError(f"dockerd did not come up in 90s; see {log_dir / 'dockerd.log'}")
        time.sleep(1)


def image_id(ref: str) -> str | None:
    out = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False).strip()
    return out or None


def image_label(ref: str, key: str) -> str | None:
    out = docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref, check=False).strip()
    with contextlib.suppress(ValueError):
        labels = json.loads(out) or {}
        return str(labels.get(key)) if labels.get(key) else None
    return None


# ----------------------------------------------------------------------------------------------------------
# Base image


def dockerfile_base(dockerfile: Path) -> str:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise ImageError(f"{dockerfile}: no `ARG PYTHON_IMAGE=` line; the images build FROM that base")
    return match.group(1)


def apt_mirror() -> str:
    """The Debian mirror apt already uses (deb822 .sources or one-line sources.list)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for uri in re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE
            ):
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def ensure_base(base: str) -> None:
    """`base` present locally: pulled when a registry answers, otherwise made from Debian packages (once)."""
    if image_id(base):
        return
    say(f"pulling {base}")
    try:
        docker("pull", base, timeout=300)
        return
    except (ImageError, subprocess.TimeoutExpired) as exc:
        say(f"cannot pull {base} ({str(exc).splitlines()[0][:160]}); making it locally from Debian packages")
    if not image_id(LOCAL_DEBIAN):
        if os.geteuid() != 0 or not shutil.which("debootstrap"):
            raise ImageError(
                f"{base} cannot be pulled and debootstrap (root) is not available to make it: "
                "run hack/ensure-node-deps.sh as root, or give Docker registry access"
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="datasweep-debootstrap-") as root:
            mirror = apt_mirror()
            say(f"debootstrap --variant=minbase bookworm from {mirror}")
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", root, mirror], capture_output=True, text=True
            )
            if result.returncode != 0:
                raise ImageError(f"debootstrap failed: {result.stderr.strip()[-2000:]}")
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            importer = subprocess.run(
                [docker_binary(), "import", "-", LOCAL_DEBIAN], stdin=tar.stdout, capture_output=True
            )
            tar.wait()
            if importer.returncode != 0:
                raise ImageError(f"docker import failed: {importer.stderr.decode(errors='replace')}")
        say(f"made {LOCAL_DEBIAN} in {time.monotonic() - started:.0f}s")
    started = time.monotonic()
    files: dict[str, bytes] = {
        "images/local-base/python.Dockerfile": (IMAGES_DIR / "local-base" / "python.Dockerfile").read_bytes()
    }
    for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        files[f"extra-ca/{cert.name}"] = cert.read_bytes()
    files.setdefault("extra-ca/.keep", b"")
    _docker_build(
        "images/local-base/python.Dockerfile", base, files, build_args={"BASE_IMAGE": LOCAL_DEBIAN}, labels={}
    )
    say(f"made {base} (local stand-in) in {time.monotonic() - started:.0f}s")


# ----------------------------------------------------------------------------------------------------------
# Build


def context_files(dockerfile: str) -> dict[str, bytes]:
    """The build context: an allow-list (the legacy builder ignores <name>.Dockerfile.dockerignore)."""
    files = {name: (REPO / name).read_bytes() for name in CONTEXT_FILES}
    for directory in CONTEXT_DIRS:
        for path in sorted((REPO / directory).rglob("*")):
            relative = path.relative_to(REPO).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and not relative.endswith((".pyc", ".egg-info")):
                if ".egg-info/" in relative:
                    continue
                files[relative] = path.read_bytes()
    files[dockerfile] = (REPO / dockerfile).read_bytes()
    return files


def content_hash(files: dict[str, bytes], base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def _context_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # stable tar: the builder's COPY cache depends on content only
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _docker_build(
    dockerfile: str, tag: str, files: dict[str, bytes], build_args: dict[str, str], labels: dict[str, str]
) -> None:
    command = [docker_binary(), "build", "--pull=false", "--network", "host", "-f", dockerfile, "-t", tag]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        command += ["--label", f"{key}={value}"]
    log_path = cache_dir() / "images" / f"{tag.replace(':', '_').replace('/', '_')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    previous = image_id(tag)
    with log_path.open("wb") as log:
        result = subprocess.run(
            [*command, "-"],
            input=_context_tar(files),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, DOCKER_BUILDKIT="0"),
        )
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-25:]
        raise ImageError(f"building {tag} failed; last lines of {log_path}:\n" + "\n".join(lines))
    if previous is not None and previous != image_id(tag):
        # The image this tag replaced: each rebuild would otherwise leave ~0.5 GB (trainer ~6 GB) dangling, and a
        # full disk makes the test node's kubelet evict images.
        docker("image", "rm", previous, check=False)


def _wanted_hash(name: str) -> tuple[str, dict[str, bytes], str]:
    """(Dockerfile, build context, content hash) of datasweep-<name> built from this checkout now."""
    dockerfile = f"images/{name}.Dockerfile"
    if not (REPO / dockerfile).is_file():
        raise ImageError(f"{dockerfile} does not exist; images are: {', '.join(IMAGES)}")
    base = dockerfile_base(REPO / dockerfile)
    ensure_base(base)
    files = context_files(dockerfile)
    return dockerfile, files, content_hash(files, image_id(base) or "")


def is_current(name: str) -> bool:
    """Whether datasweep-<name>:TAG is built from this checkout's sources (a stale image runs older code)."""
    return image_label(tag_of(name), HASH_LABEL) == _wanted_hash(name)[2]


def build_image(name: str) -> tuple[str, float]:
    """Build datasweep-<name>:TAG unless it is current; returns (what happened, seconds)."""
    started = time.monotonic()
    dockerfile, files, wanted = _wanted_hash(name)
    tag = tag_of(name)
    if image_label(tag, HASH_LABEL) == wanted:
        return "current", time.monotonic() - started
    say(f"building {tag} (log {cache_dir() / 'images'})")
    _docker_build(dockerfile, tag, files, build_args={}, labels={HASH_LABEL: wanted})
    return "built", time.monotonic() - started


def kubernetes_module_dir(kubernetes_version: str) -> Path | None:
    """k8s.io/kubernetes in the Go module cache (the control-plane build downloads it)."""
    roots = [Path(os.environ["GOMODCACHE"])] if os.environ.get("GOMODCACHE") else []
    roots += [Path.home() / "go" / "pkg" / "mod"]
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            roots.insert(
                0, Path(subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip())
            )
    for root in roots:
        candidate = root / "k8s.io" / f"kubernetes@{kubernetes_version}"
        if (candidate / "build" / "pause" / "linux" / "pause.c").is_file():
            return candidate
    return None


def build_pause(kubernetes_version: str) -> str:
    """The pod sandbox image, compiled from the pause.c of Kubernetes `kubernetes_version` (the control plane's,
    from the Go module cache: no registry needed). Returns its tag."""
    source = kubernetes_module_dir(kubernetes_version)
    if source is None:
        raise ImageError("k8s.io/kubernetes is not in the Go module cache: run `make controlplane` first")
    pause_c = (source / "build" / "pause" / "linux" / "pause.c").read_bytes()
    dockerfile = (
        b'FROM scratch\nADD pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        + f'LABEL {HASH_LABEL}="{hashlib.sha256(pause_c).hexdigest()[:16]}"\n'.encode()
    )
    wanted = hashlib.sha256(pause_c).hexdigest()[:16]
    if image_label(PAUSE_IMAGE, HASH_LABEL) == wanted:
        return PAUSE_IMAGE
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pause.c").write_bytes(pause_c)
        result = subprocess.run(
            ["gcc", "-Os", "-static", "-Wall", f'-DVERSION="v{PAUSE_VERSION}"', "-o", "pause", "pause.c"],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ImageError(f"compiling pause.c failed (apt-get install gcc libc6-dev): {result.stderr.strip()}")
        files = {"Dockerfile": dockerfile, "pause": (Path(work) / "pause").read_bytes()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    docker("build", "-t", PAUSE_IMAGE, "-", input=buffer.getvalue())
    return PAUSE_IMAGE


def ensure_images(names: Iterable[str], quiet: bool = False) -> dict[str, str]:
    """Build the named images where stale; returns {name: tag}."""
    ensure_dockerd()
    out = {}
    for name in names:
        what, seconds = build_image(name)
        if not quiet or what == "built":
            size = docker("image", "inspect", "--format", "{{.Size}}", tag_of(name)).strip()
            say(f"{tag_of(name)}: {what} in {seconds:.0f}s, {int(size) / 1e6:.0f} MB")
        out[name] = tag_of(name)
    return out


# ----------------------------------------------------------------------------------------------------------
# Into a containerd


def _containerd_name(ref: str) -> str:
    """The name containerd gives a docker image ref: `datasweep-worker:dev` -> docker.io/library/..."""
    name = ref if "/" in ref else f"library/{ref}"
    return name if "." in name.split("/", 1)[0] or ":" in name.split("/", 1)[0] else f"docker.io/{name}"


def containerd_images(address: str) -> set[str]:
    """The image names in containerd's k8s.io namespace (empty when it cannot be asked)."""
    result = subprocess.run(
        ["ctr", "--address", address, "--namespace", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
    )
    return set(result.stdout.split()) if result.returncode == 0 else set()


def import_into_containerd(address: str, refs: Sequence[str], marker: Path) -> list[str]:
    """`docker save | ctr import` each ref whose docker image id differs from the last import recorded in
    `marker` (a JSON file beside that containerd's root). Returns the refs imported."""
    done: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        done = json.loads(marker.read_text())
    imported = []
    present = containerd_images(address)
    for ref in refs:
        current = image_id(ref)
        if current is None:
            raise ImageError(f"image {ref} is not built: run `make images`")
        # The marker alone is not proof: containerd may have lost the image since (a kubelet under disk
        # pressure deletes unused images), and a node without its pause image starts no pod.
        if done.get(ref) == current and _containerd_name(ref) in present:
            continue
        started = time.monotonic()
        save = subprocess.Popen([docker_binary(), "save", ref], stdout=subprocess.PIPE)
        assert save.stdout is not None
        result = subprocess.run(
            ["ctr", "--address", address, "--namespace", "k8s.io", "images", "import", "-"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
        )
        save.wait()
        if result.returncode != 0 or save.returncode != 0:
            raise ImageError(f"importing {ref} into containerd failed: {result.stderr.strip()}")
        done[ref] = current
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=2))
        os.replace(tmp, marker)
        say(f"imported {ref} into the node's containerd in {time.monotonic() - started:.0f}s")
        imported.append(ref)
    return imported


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the images that are stale")
    build_cmd.add_argument("names", nargs="*", default=["operator", "worker"], help=f"of {IMAGES}")
    build_cmd.add_argument(
        "--if-possible", action="store_true", help="without a Docker engine (or root to start one): say so, exit 0"
    )
    commands.add_parser("list", help="the images, ids, sizes and content hashes")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            started = time.monotonic()
            if args.if_possible:
                try:
                    ensure_dockerd()
                except ImageError as exc:
                    print(f"note: images not built: {exc}", file=sys.stderr)
                    return 0
            ensure_images(args.names)
            say(f"done in {time.monotonic() - started:.0f}s")
            return 0
        for name in IMAGES:
            ref = tag_of(name)
            size = docker("image", "inspect", "--format", "{{.Size}}", ref, check=False).strip()
            print(f"{ref:28} {(image_id(ref) or 'not built')[:19]:20} "
                  f"{int(size) / 1e6 if size else 0:8.0f} MB  {image_label(ref, HASH_LABEL) or ''}")  # fmt: skip
        return 0
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
