"""`datasweep worker dataset --spec FILE`: copy a prepared dataset's split files into its artifact directory.

The copy is what the fingerprint (the dataset's content hash) describes: training reads the snapshot, never
the source, so a later edit of the source cannot change what an existing fingerprint means.
Output: `<Dataset>/<dataset>_<split>.<ext>` (accepted data by split in the manifest), seed 003's per-task
folders as they are in the source (`meta_train/`, `few_shot_eval/`, `baseline_sft/`: what fomaml's `tasks`
name), `dataset.json`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from datasweep.api.worker import WorkerSpec
from datasweep.store.atomic import atomic_write_json
from datasweep.store.layout import LayoutError, dataset_files
from datasweep.store.manifest import Manifest, Roles, Usage, finalize_artifact, read_manifest
from datasweep.store.records import RECORD_SUFFIXES

STAGE = "dataset"


class DatasetInputError(ValueError):
    """The source cannot be snapshotted; the message names the directory and the fix."""


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def run_dataset(spec: WorkerSpec) -> Manifest:
    started = time.monotonic()
    out = spec.output_path
    existing = read_manifest(out)
    if existing is not None and existing.fingerprint == spec.fingerprint:
        return existing
    if not spec.source_dir:
        raise DatasetInputError("the worker spec has no sourceDir: the dataset stage copies the dataset from there")
    try:
        files = dataset_files(Path(spec.source_dir), spec.dataset, RECORD_SUFFIXES)
    except LayoutError as exc:
        raise DatasetInputError(str(exc)) from exc
    data: dict[str, list[str]] = {}
    for path in files.files:
        relative = f"{spec.dataset}/{path.name}"
        _copy(path, out / relative)
        data[path.stem.rsplit("_", 1)[-1]] = [relative]
    for relative in files.relative_task_files():
        _copy(files.directory / relative, out / relative)
    atomic_write_json(
        out / "dataset.json",
        {
            "dataset": spec.dataset,
            "fingerprint": spec.fingerprint,
            "source_dir": spec.source_dir,
            "source_sha256": files.sha256,
            "files": [str(path) for path in files.files],
            "task_files": files.relative_task_files(),
        },
    )
    usage = Usage(wall_seconds=round(time.monotonic() - started, 3))
    return finalize_artifact(
        out,
        fingerprint=spec.fingerprint,
        stage=STAGE,
        roles=Roles(data=data, reports=["dataset.json"]),
        usage=usage,
        extra={"dataset": spec.dataset, "sourceSha256": files.sha256},
    )
