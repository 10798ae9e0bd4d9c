"""Where a training stage's input records are: the one reader every training worker uses.

An input is either an upstream artifact (a directory with `manifest.json`): its accepted data files, by
split, exactly as the manifest lists them (rejected records, reports, models and metrics never count); or
a raw dataset directory without a manifest (training on existing data): `<name>_<split>.{jsonl,json,parquet,csv}`
at its top level (`train.jsonl`, `dev.parquet` also do); or one record file. Nothing is found by walking a
directory tree, so a stage never mistakes another stage's outputs for data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasweep.store.manifest import MANIFEST_NAME, Manifest, Roles, read_manifest
from datasweep.store.records import RECORD_SUFFIXES

SPLITS = ("train", "validation", "test")
# Names a split goes by in users' own directories; artifacts always use the first.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "val", "valid"),
    "test": ("test",),
}


class InputError(ValueError):
    """An input that holds no usable data; the message names the location and the fix."""


@dataclass(frozen=True)
class InputData:
    location: Path
    splits: dict[str, tuple[Path, ...]]  # split -> accepted record files, in split order
    manifest: Manifest | None = None
    unsplit: tuple[Path, ...] = field(default=())  # raw directories: record files with no split in their name

    def files(self, split: str | None = None) -> list[Path]:
        """The files of one split, or of every split (then the unsplit files) in train/validation/test order."""
        if split is not None:
            return list(self.splits.get(split, ()))
        return [path for name in SPLITS for path in self.splits.get(name, ())] + list(self.unsplit)

    def describe(self) -> str:
        found = ", ".join(f"{split} ({len(paths)} file(s))" for split, paths in self.splits.items()) or "no splits"
        what = "artifact" if self.manifest is not None else "directory"
        return f"{what} {self.location}: {found}"


def split_of(path: Path) -> str | None:
    """The split a file name says (`copa_train.jsonl`, `dev.parquet`), or None."""
    stem = path.stem.lower()
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if stem == alias or stem.endswith((f"_{alias}", f"-{alias}")):
                return split
    return None


def _ordered(found: dict[str, list[Path]]) -> dict[str, tuple[Path, ...]]:
    return {split: tuple(found[split]) for split in SPLITS if found.get(split)}


def _from_manifest(directory: Path, manifest: Manifest) -> InputData:
    data = manifest.outputs.data
    if not data:
        raise InputError(
            f"{directory / MANIFEST_NAME}: the {manifest.stage} artifact lists no accepted data files "
            "(outputs.data); a training stage reads only those. If it was written by an older datasweep, "
            "regenerate it (forceRegenerate) or register the tree again with `datasweep import`"
        )
    found = {split: [directory / entry.path for entry in entries] for split, entries in data.items()}
    for paths in found.values():
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path}: listed in {directory / MANIFEST_NAME} but missing; the artifact is damaged")
    extra = sorted(set(found) - set(SPLITS))
    if extra:
        raise InputError(f"{directory / MANIFEST_NAME}: unknown split(s) {extra} in outputs.data")
    return InputData(directory, _ordered(found), manifest)


def _raw_directory(directory: Path, dataset: str | None) -> InputData:
    found: dict[str, list[Path]] = {}
    unsplit: list[Path] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix not in RECORD_SUFFIXES:
            continue
        split = split_of(path)
        if split is None:
            unsplit.append(path)
            continue
        found.setdefault(split, []).append(path)
    for split, paths in found.items():
        if len(paths) > 1 and dataset:
            preferred = [p for p in paths if p.stem.lower().startswith(dataset.lower() + "_")]
            found[split] = preferred or paths
        if len(found[split]) > 1:
            listing = ", ".join(p.name for p in found[split])
            raise InputError(f"{directory}: several {split} files ({listing}); keep one per split")
    if not found and not unsplit:
        name = dataset.lower() if dataset else "<name>"
        nested = [p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        hint = (
            f" (it has folders {sorted(nested)[:5]}: a seed-format experiment directory is read through its "
            "manifest; register the tree with `datasweep import`, or point at the folder holding the files)"
            if nested
            else ""
        )
        raise InputError(
            f"{directory}: no manifest.json and no record files {name}_{{train,validation,test}}"
            f".{{jsonl,json,parquet,csv}}{hint}"
        )
    return InputData(directory, _ordered(found), None, tuple(unsplit))


def read_input(location: str | Path, dataset: str | None = None) -> InputData:
    """The accepted record files of an input (an artifact directory, a raw dataset directory or a file)."""
    path = Path(location)
    if path.is_file():
        if path.suffix not in RECORD_SUFFIXES:
            raise InputError(f"{path}: unsupported file type; use .jsonl, .json, .parquet or .csv")
        split = split_of(path)
        return InputData(path, {split: (path,)} if split else {}, None, () if split else (path,))
    if not path.is_dir():
        raise InputError(f"{path}: input data not found (expected an artifact directory, a directory or a file)")
    manifest = read_manifest(path)
    if manifest is not None:
        return _from_manifest(path, manifest)
    return _raw_directory(path, dataset)


# What a seed-format (Data_v2/synthetic) generate directory holds besides its data, for `datasweep import`.
SEED_REPORTS = ("report.json", "experiment_metadata.json", "generation_config.yaml", "README.md")


def seed_generate_roles(directory: Path, dataset: str) -> Roles:
    """The roles of a seed-format generate directory that has no manifest: `<Dataset>/<dataset>_<split>.jsonl`
    is the accepted data, `rejected/` the rejected records; nothing else is data."""

    def relative(sub: str) -> dict[str, list[str]]:
        folder = directory / sub
        if not folder.is_dir():
            return {}
        try:
            found = _raw_directory(folder, dataset)
        except InputError:
            return {}
        return {split: [f"{sub}/{p.name}" for p in paths] for split, paths in found.splits.items()}

    return Roles(
        data=relative(dataset),
        rejected=relative("rejected"),
        reports=[name for name in SEED_REPORTS if (directory / name).is_file()],
    )


__all__ = ["SPLITS", "SPLIT_ALIASES", "InputData", "InputError", "read_input", "seed_generate_roles", "split_of"]
