"""What a worker produced: the manifest the operator and the local runner read to mark an Artifact Ready.

A stage directory is complete exactly when its `manifest.json` exists; the manifest is written last and
atomically, so a half-written Artifact is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from datasweep._common import CamelModel
from datasweep.store.atomic import atomic_write_json, atomic_write_text
from datasweep.store.metrics import recorded_metrics
from datasweep.store.progress import REQUEST_REUSE_KEY, RequestReuseCounts
from datasweep.store.provenance import Provenance, runtime_provenance

MANIFEST_NAME = "manifest.json"
FINGERPRINT_NAME = ".fingerprint"
TERMINATION_LOG_ENV = "DATASWEEP_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class Usage(CamelModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    gpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            requests=self.requests + other.requests,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
            gpu_seconds=round(self.gpu_seconds + other.gpu_seconds, 3),
            wall_seconds=round(self.wall_seconds + other.wall_seconds, 3),
        )


class FileEntry(CamelModel):
    path: str
    bytes: int
    sha256: str
    rows: int | None = None


class Outputs(CamelModel):
    """A stage's outputs by role: what a consumer may read, and what it must not.

    `data`: accepted record files per split (the only files a downstream stage trains on); `rejected`:
    records validation refused, per split; `reports`: counts, metadata, configs; `model`: the directory of
    the trained model; `metrics`: metrics and evaluation files. Paths are relative to the artifact.
    """

    data: dict[str, list[FileEntry]] = Field(default_factory=dict)
    rejected: dict[str, list[FileEntry]] = Field(default_factory=dict)
    reports: list[str] = Field(default_factory=list)
    model: str | None = None
    metrics: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Roles:
    """What a worker declares when it finalizes: relative paths by role (see `Outputs`)."""

    data: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rejected: Mapping[str, Sequence[str]] = field(default_factory=dict)
    reports: Sequence[str] = ()
    model: str | None = None
    metrics: Sequence[str] = ()


class ManifestError(RuntimeError):
    """A worker declared an output that is not there (a bug in the worker, never bad user input)."""


class ManifestSummary(CamelModel):
    """The part of a manifest that travels in a pod's termination message and in Artifact status."""

    files: int
    rows: int
    bytes: int
    sha256: str
    usage: Usage = Field(default_factory=Usage)
    path: str | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="A training stage's metrics (core/metrics.py: at most 9, named as its kind's METRICS)",
    )
    provenance: Provenance | None = Field(
        default=None, description="What produced it (the operator moves it to the Artifact's status.provenance)"
    )
    request_reuse: RequestReuseCounts | None = Field(
        default=None, description="A generate stage: its requests the request store answered instead of the API"
    )


class Manifest(CamelModel):
    fingerprint: str
    stage: str
    files: list[FileEntry]
    outputs: Outputs = Field(default_factory=Outputs)
    usage: Usage = Field(default_factory=Usage)
    completed_at: str
    extra: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)

    @property
    def rows(self) -> int:
        return sum(entry.rows or 0 for entry in self.files)

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @property
    def sha256(self) -> str:
        """Digest of the file list (path and content digest of every file), order-independent."""
        listing = "\n".join(f"{e.path}\t{e.sha256}" for e in sorted(self.files, key=lambda e: e.path))
        return hashlib.sha256(listing.encode()).hexdigest()

    def summary(self, path: str | None = None) -> ManifestSummary:
        return ManifestSummary(
            files=len(self.files),
            rows=self.rows,
            bytes=self.bytes,
            sha256=self.sha256,
            usage=self.usage,
            path=path,
            metrics=recorded_metrics(self.stage, self.extra),
            provenance=self.provenance,
            request_reuse=RequestReuseCounts.from_raw(self.extra.get(REQUEST_REUSE_KEY)),
        )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _count_rows(path: Path) -> int | None:
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def scan_files(directory: Path, exclude_dirs: tuple[str, ...] = ("train",)) -> list[FileEntry]:
    """Every regular file under `directory` except hidden temp files, nested stages and the manifest."""
    entries: list[FileEntry] = []
    for current, dirnames, filenames in os.walk(directory):
        rel_dir = Path(current).relative_to(directory)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in exclude_dirs]
        dirnames.sort()
        for name in sorted(filenames):
            if name == MANIFEST_NAME or name.endswith(".tmp"):
                continue
            full = Path(current) / name
            if not full.is_file() or full.is_symlink():
                continue
            entries.append(
                FileEntry(
                    path=str(rel_dir / name) if rel_dir != Path(".") else name,
                    bytes=full.stat().st_size,
                    sha256=_file_digest(full),
                    rows=_count_rows(full),
                )
            )
    return entries


def read_manifest(directory: str | os.PathLike[str]) -> Manifest | None:
    path = Path(directory) / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _outputs(root: Path, files: list[FileEntry], roles: Roles) -> Outputs:
    by_path = {entry.path: entry for entry in files}

    def entries(role: str, splits: Mapping[str, Sequence[str]]) -> dict[str, list[FileEntry]]:
        result: dict[str, list[FileEntry]] = {}
        for split, paths in splits.items():
            for path in paths:
                if path not in by_path:
                    raise ManifestError(f"{root}: {role} file {path} ({split}) is not among the artifact's files")
                result.setdefault(split, []).append(by_path[path])
        return result

    for role, paths in (("report", roles.reports), ("metrics", roles.metrics)):
        for path in paths:
            if not (root / path).is_file():
                raise ManifestError(f"{root}: {role} file {path} does not exist")
    if roles.model is not None and not (root / roles.model).is_dir():
        raise ManifestError(f"{root}: model directory {roles.model} does not exist")
    return Outputs(
        data=entries("data", roles.data),
        rejected=entries("rejected", roles.rejected),
        reports=list(roles.reports),
        model=roles.model,
        metrics=list(roles.metrics),
    )


def write_manifest(
    directory: str | os.PathLike[str],
    *,
    fingerprint: str,
    stage: str,
    roles: Roles | None = None,
    usage: Usage | None = None,
    extra: dict[str, Any] | None = None,
    provenance: Provenance | None = None,
) -> Manifest:
    """Scan the directory and write its manifest (last, atomically); the `.fingerprint` file is left alone."""
    root = Path(directory)
    files = scan_files(root)
    manifest = Manifest(
        fingerprint=fingerprint,
        stage=stage,
        files=files,
        outputs=_outputs(root, files, roles or Roles()),
        usage=usage or Usage(),
        completed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra=extra or {},
        provenance=provenance or Provenance(),
    )
    atomic_write_json(root / MANIFEST_NAME, manifest.model_dump(mode="json", by_alias=True))
    return manifest


def finalize_artifact(
    directory: str | os.PathLike[str],
    *,
    fingerprint: str,
    stage: str,
    roles: Roles | None = None,
    usage: Usage | None = None,
    extra: dict[str, Any] | None = None,
    provenance: Provenance | None = None,
) -> Manifest:
    """Mark a stage directory complete: write its fingerprint and manifest, report to Kubernetes.

    Call it last, after every output file is in place. `roles` says which files are accepted data (per
    split), rejected records, reports, the model and metrics: consumers read their inputs only from there.
    `provenance`: what the stage itself knows of what produced it (models answered, GPU); the versions of this
    process are added here.
    """
    root = Path(directory)
    atomic_write_text(root / FINGERPRINT_NAME, fingerprint + "\n")
    manifest = write_manifest(
        root,
        fingerprint=fingerprint,
        stage=stage,
        roles=roles,
        usage=usage,
        extra=extra,
        provenance=runtime_provenance(stage, provenance),
    )
    write_termination_message(manifest.summary(path=str(root)))
    return manifest


def write_failure_message(message: str) -> None:
    """Say why the pod failed through its termination message (the Artifact's Ready condition shows it): more
    reliable than the last log line, which an error printed at interpreter exit can push aside."""
    target = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    data = message.encode("utf-8")[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", errors="ignore")
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(data)
    except OSError:
        pass  # not in a pod: the message went to stderr


def write_termination_message(summary: ManifestSummary) -> None:
    """Tell the operator what the pod produced through the pod's termination message, when there is one."""
    target = os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)
    # what is left out when it does not fit, in order: the path, then the long tail of the answers' counts
    payload = ""
    excludes: list[dict[str, Any]] = [
        {},
        {"path": True},
        {"path": True, "provenance": {"models", "system_fingerprints"}},
    ]
    for exclude in excludes:
        payload = json.dumps(summary.model_dump(mode="json", by_alias=True, exclude=exclude), separators=(",", ":"))
        if len(payload.encode()) <= TERMINATION_MESSAGE_LIMIT:
            break
    try:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(payload)
    except OSError:
        pass  # not in a pod (local run): the manifest on disk is the record
