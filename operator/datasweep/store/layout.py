"""The shared-volume layout (SPEC section 5), used by the operator, the workers and the local runner.

<root>/_shared/<Dataset>/<semantic>/            one directory per generate fingerprint
    .fingerprint  manifest.json  <Dataset>/...  train/<stage>-<short fp>/...
<root>/batch_<id>/<Dataset>/<semantic> -> ../../_shared/<Dataset>/<semantic>
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasweep._common import short
from datasweep.store.atomic import file_mode
from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME
from datasweep.store.records import RECORD_SUFFIXES, Record, RecordFileError, iter_records

SHARED = "_shared"
SPLITS = ("train", "validation", "test")
# Seed 003's prepared layout (fomaml per-task files, `meta_train/<task>_support.parquet`, ...): a prepared
# dataset may hold these folders beside (or instead of) its split files; they are hashed and snapshotted too.
TASK_FOLDERS = ("meta_train", "few_shot_eval", "baseline_sft")
SAMPLE_RECORDS = 3  # records of each file the template checks render


class LayoutError(RuntimeError):
    pass


def shared_relpath(dataset: str, directory_name: str) -> str:
    return f"{SHARED}/{dataset}/{directory_name}"


def training_relpath(generate_relpath: str, stage: str, fingerprint: str) -> str:
    return f"{generate_relpath}/train/{stage}-{short(fingerprint)}"


def _read_fingerprint(directory: Path) -> str | None:
    try:
        return (directory / FINGERPRINT_NAME).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _directory_names(semantic: str, fingerprint: str) -> tuple[str, ...]:
    """Where a generate fingerprint may live, in order: its semantic name, then with the fingerprint appended."""
    return (semantic, f"{semantic}_{short(fingerprint)}", f"{semantic}_{fingerprint}")


ABANDONED_MARK = ".abandoned-"
# (relpath, fingerprint held there) -> True when that claim failed or never started and may be set aside
Reclaim = Callable[[str, str], bool]


def _try_claim(directory: Path, fingerprint: str) -> bool | None:
    """True: claimed now; None: already ours; False: held by another fingerprint."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(directory / FINGERPRINT_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None if _read_fingerprint(directory) == fingerprint else False
    os.fchmod(fd, file_mode())
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(fingerprint + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def claim_generate_dir(
    root: Path, dataset: str, semantic: str, fingerprint: str, reclaim: Reclaim | None = None
) -> str:
    """The directory of a generate fingerprint, claimed atomically; on a clash the short fingerprint is appended.

    Idempotent: the same fingerprint always gets the same directory. Returns the path relative to `root`.
    `reclaim(relpath, held_fingerprint)` lets a caller that knows a clashing claim is dead (failed or never
    started) move it away (`set_aside`) and return True, so that it does not squat the clean name; it is
    asked only about directories without a manifest.
    """
    for name in _directory_names(semantic, fingerprint):
        directory = root / SHARED / dataset / name
        rel = shared_relpath(dataset, name)
        claimed = _try_claim(directory, fingerprint)
        if claimed is False and reclaim is not None and not is_complete(directory):
            held = _read_fingerprint(directory)
            if held and reclaim(rel, held):
                claimed = _try_claim(directory, fingerprint)
        if claimed is not False:
            return rel
    raise LayoutError(f"{root / SHARED / dataset}: no free directory for {semantic} ({fingerprint})")


def set_aside(root: Path, relpath: str, mark: str = ABANDONED_MARK) -> str:
    """Rename a dead claim to a hidden sibling (`.<name>.abandoned-<fp12>`, offered by `datasweep gc`)."""
    directory = root / relpath
    fingerprint = _read_fingerprint(directory) or "unknown"
    aside = directory.with_name(f".{directory.name}{mark}{short(fingerprint)}")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(directory, aside)
    return str(aside.relative_to(root))


def find_generate_dir(root: Path, dataset: str, semantic: str, fingerprint: str) -> str | None:
    """Where a fingerprint already lives, without claiming anything (for `datasweep plan`)."""
    for name in _directory_names(semantic, fingerprint):
        if _read_fingerprint(root / SHARED / dataset / name) == fingerprint:
            return shared_relpath(dataset, name)
    return None


def is_complete(directory: Path) -> bool:
    return (directory / MANIFEST_NAME).is_file()


def link_into_batch(root: Path, batch: str, dataset: str, relpath: str) -> Path:
    """Create (or confirm) the relative symlink <root>/<batch>/<Dataset>/<name> -> ../../_shared/<Dataset>/<name>."""
    name = Path(relpath).name
    link = root / batch / dataset / name
    target = Path("..") / ".." / relpath
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return link
        raise LayoutError(f"{link} already points to {os.readlink(link)}, not {target}; remove it by hand")
    if link.exists():
        raise LayoutError(f"{link} exists and is not a symlink; datasweep never replaces data")
    tmp = link.with_name(f".{name}.link.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)
    return link


def supersede(root: Path, relpath: str, stamp: str) -> Path | None:
    """Move a complete directory aside for `forceRegenerate` (kept until `datasweep gc`), keep the claim."""
    directory = root / relpath
    if not is_complete(directory):
        return None
    fingerprint = _read_fingerprint(directory)
    aside = directory.with_name(f".{directory.name}.superseded-{stamp}")
    os.replace(directory, aside)
    directory.mkdir()
    if fingerprint:
        (directory / FINGERPRINT_NAME).write_text(fingerprint + "\n", encoding="utf-8")
    return aside


def resolve_inside(root: Path, relpath: str) -> Path | None:
    """`root/relpath` with symlinks resolved, or None when it leads out of `root` (`..`, absolute, a link out)."""
    base = root.resolve()
    target = (base / relpath).resolve()
    return target if target.is_relative_to(base) else None


@dataclass(frozen=True)
class DatasetFiles:
    directory: Path
    files: tuple[Path, ...]
    sha256: str
    task_files: tuple[Path, ...] = ()  # prepared datasets: record files of the TASK_FOLDERS
    file_sha256: dict[str, str] = field(default_factory=dict)  # each file's own sha256, by relative path

    def relative_task_files(self) -> list[str]:
        return [path.relative_to(self.directory).as_posix() for path in self.task_files]

    def relative_files(self) -> list[str]:
        """Every file the hash covers, relative to the directory (what a stage may name in its params)."""
        return [path.name for path in self.files] + self.relative_task_files()


def _task_files(directory: Path) -> tuple[Path, ...]:
    return tuple(
        path
        for folder in TASK_FOLDERS
        if (directory / folder).is_dir()
        for path in sorted((directory / folder).iterdir())
        if path.is_file() and not path.name.startswith(".") and path.suffix in RECORD_SUFFIXES
    )


def dataset_files(directory: Path, name: str, suffixes: tuple[str, ...] = (".jsonl",)) -> DatasetFiles:
    """The split files of a dataset source and their content hash (name + bytes of every split).

    Generation reads jsonl; a dataset trained on as it is (`prepared: true`, `suffixes=RECORD_SUFFIXES`) may
    also be .json, parquet or CSV, and may hold seed 003's per-task folders (TASK_FOLDERS), which are hashed
    after the split files (by relative path and bytes) and may be all it has.
    """
    if not directory.is_dir():
        raise LayoutError(f"dataset {name}: source directory {directory} does not exist")
    files = tuple(
        next(
            directory / f"{name.lower()}_{split}{suffix}"
            for suffix in suffixes
            if (directory / f"{name.lower()}_{split}{suffix}").is_file()
        )
        for split in SPLITS
        if any((directory / f"{name.lower()}_{split}{suffix}").is_file() for suffix in suffixes)
    )
    task_files = _task_files(directory) if suffixes != (".jsonl",) else ()
    if not files and not task_files:
        # no split files: every *.jsonl is the data (code-scenarios reads them all, as seed 001 does)
        files = tuple(sorted(path for path in directory.glob("*.jsonl") if path.is_file()))
    if not files and not task_files:
        expected = ", ".join(f"{name.lower()}_{split}{'|'.join(suffixes)}" for split in SPLITS)
        also = f", or seed 003 folders {'/, '.join(TASK_FOLDERS)}/" if suffixes != (".jsonl",) else ""
        found = sorted(path.name for path in directory.iterdir() if not path.name.startswith("."))
        raise LayoutError(
            f"dataset {name}: no split files in {directory}; expected one of {expected} (or *.jsonl{also}); "
            f"found: {', '.join(found[:10]) + (f' and {len(found) - 10} more' if len(found) > 10 else '') or 'nothing'}"
        )
    digest = hashlib.sha256()
    each: dict[str, str] = {}
    for name, path in [(p.name, p) for p in files] + [(p.relative_to(directory).as_posix(), p) for p in task_files]:
        digest.update(name.encode() + b"\0")
        each[name] = _hash_file(digest, path)
    return DatasetFiles(
        directory=directory, files=files, sha256=digest.hexdigest(), task_files=task_files, file_sha256=each
    )


def _hash_file(digest: Any, path: Path) -> str:
    """Adds the file's bytes to `digest`; returns the file's own sha256 (in the same pass)."""
    own = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            own.update(block)
    digest.update(b"\0")
    return own.hexdigest()


def sample_records(files: Iterable[Path], limit: int = SAMPLE_RECORDS) -> list[Record]:
    """The first `limit` records of each file (for the checks before anything is paid): unreadable lines are
    skipped, and a file that cannot be read gives what was read before; the worker names the file and line."""
    samples: list[Record] = []
    for path in files:
        try:
            samples.extend(itertools.islice(iter_records(path, on_bad_record=lambda _error: None), limit))
        except RecordFileError:
            continue
    return samples


def split_samples(files: DatasetFiles, limit: int = 5) -> dict[str, list[dict[str, Any]]]:
    """The first `limit` records of every split, by split (for the shape checks, core/shape.py)."""
    return {path.stem.rsplit("_", 1)[-1]: [r.data for r in sample_records([path], limit)] for path in files.files}
