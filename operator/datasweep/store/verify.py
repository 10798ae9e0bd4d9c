"""Is an Artifact on the volume still what its manifest says? Used by `datasweep verify` and before every reuse.

The check before reuse is cheap: the manifest is read and every file it lists is `stat`ed (exists, same size).
`deep` also hashes every file against the manifest's sha256 (`datasweep verify --deep`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME, Manifest, read_manifest

DAMAGED_MARK = ".damaged-"


@dataclass(frozen=True)
class Damage:
    """What is wrong with one Artifact directory: one line per problem, the first names what to look at."""

    problems: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.problems)

    @property
    def summary(self) -> str:
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more)" if more > 0 else "") if self.problems else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(directory: Path, manifest: Manifest, deep: bool = False) -> Damage:
    """Every file the manifest lists exists with its size (and, with `deep`, its sha256)."""
    problems: list[str] = []
    base = os.fspath(directory)  # plain strings: this runs for every Artifact a plan reuses
    for entry in manifest.files:
        path = os.path.join(base, entry.path)
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            problems.append(f"missing file {entry.path}")
            continue
        if size != entry.bytes:
            problems.append(f"size of {entry.path} {entry.bytes} → {size}")
        elif deep and _sha256(Path(path)) != entry.sha256:
            problems.append(f"sha256 of {entry.path} differs")
    return Damage(tuple(problems))


def check_artifact(directory: Path, *, deep: bool = False, manifest_required: bool = True) -> Damage:
    """The directory against its manifest. Without a manifest (or a directory) it is damaged only when one is
    required: a Ready Artifact made where no worker runs (kwok, requireManifest off) has none to check against."""
    if not directory.is_dir():
        return Damage((f"missing directory {directory}",) if manifest_required else ())
    try:
        manifest = read_manifest(directory)
    except (ValidationError, ValueError, OSError) as exc:
        return Damage((f"unreadable {MANIFEST_NAME}: {str(exc).splitlines()[0]}",))
    if manifest is None:
        return Damage((f"missing file {MANIFEST_NAME}",) if manifest_required else ())
    return check_manifest(directory, manifest, deep)


def damaged_relpath(relpath: str, attempt: int) -> str:
    """Where a damaged Artifact's directory is kept (for `datasweep gc`): `.<name>.damaged-<attempt>` beside it,
    `attempt` being the attempt that produced it. Exact and repeatable: each production has its own attempt."""
    head, _, name = relpath.rstrip("/").rpartition("/")
    aside = f".{name}{DAMAGED_MARK}{attempt}"
    return f"{head}/{aside}" if head else aside


def set_damaged_aside(root: Path, relpath: str, attempt: int) -> str | None:
    """Move a damaged directory to `damaged_relpath` and leave its claim (`.fingerprint`) in a fresh directory,
    where the replacement is produced. Idempotent: once moved (the directory holds no manifest any more and the
    aside exists) it does nothing more. Returns where the damaged files are kept, or None when nothing was there.
    """
    directory = root / relpath
    aside = root / damaged_relpath(relpath, attempt)
    complete = (directory / MANIFEST_NAME).is_file()
    if aside.exists() and not complete:
        directory.mkdir(parents=True, exist_ok=True)
        return str(aside.relative_to(root))  # moved already (a handler run again after a restart)
    if not directory.is_dir() or not any(p.name != FINGERPRINT_NAME for p in directory.iterdir()):
        return None
    suffix = 1
    while aside.exists():  # the same attempt damaged twice (a local store edited by hand): the next free name
        suffix += 1
        aside = root / f"{damaged_relpath(relpath, attempt)}.{suffix}"
    claim = directory / FINGERPRINT_NAME
    os.replace(directory, aside)
    directory.mkdir()
    if (aside / FINGERPRINT_NAME).is_file() and not claim.exists():
        shutil.copy2(aside / FINGERPRINT_NAME, claim)
    return str(aside.relative_to(root))
