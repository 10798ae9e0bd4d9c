"""Reuse of imported seed-format directories (seed 000's Data_v2 trees): does a planned generate point ask for
exactly what an imported directory holds? Pure.

An imported directory cannot be found by our fingerprint (its `.fingerprint` is the seed's MD5 of its own
parameter set), so it is matched on what the seed recorded in `experiment_metadata.json` `parameters`:
the generation and validation settings, the prompt hashes, plus the dataset's content hash that
`datasweep import --source DATASET=DIR` took. Every recorded parameter must equal the point's; a parameter the
seed did not record must be at the seed's default; a task other than rephrase is not something the seed
produced: no match. Like the seed's own fingerprint, the match leaves out what the seed kept fixed per dataset
(which fields are rephrased: the prompt that names them is compared by its hash).
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datasweep.core.plan import StagePlan

# seed 000 `parameters` key -> (path in our generate params, the seed's default when the key is missing)
SEED_PARAMS: dict[str, tuple[tuple[str, ...], Any]] = {
    "gen_model": (("model",), None),
    "gen_temperature": (("temperature",), None),
    "gen_top_p": (("top_p",), 1.0),
    "gen_max_tokens": (("max_tokens",), 256),
    "gen_frequency_penalty": (("frequency_penalty",), 0.0),
    "gen_presence_penalty": (("presence_penalty",), 0.0),
    "val_model": (("validation", "model"), None),
    "val_temperature": (("validation", "temperature"), 0.0),
}
PROMPT_HASHES = {"gen_prompt_hash": ("prompt",), "val_prompt_hash": ("validation", "prompt")}


class ImportedRecord(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def source_sha256(self) -> str | None: ...


@dataclass(frozen=True)
class ImportedMatch:
    artifact: str
    path: str
    matched: tuple[str, ...]  # what was compared, for `plan`: "gen_temperature=0.7", "gen_prompt_hash", ...

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "path": self.path, "matched": list(self.matched)}

    def describe(self) -> str:
        return f"imported {self.path} (matched {', '.join(self.matched)})"


def seed_prompt_hash(text: str) -> str:
    """The seed's hash of a prompt: MD5 of its UTF-8 bytes (the seed shows the first 8 hex digits).

    The text is NFC-normalised first, as our fingerprint's prompt is (issue 15, defect 2)."""
    return hashlib.md5(unicodedata.normalize("NFC", text).encode("utf-8"), usedforsecurity=False).hexdigest()


def _get(params: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = params
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs
    if isinstance(ours, int | float) and isinstance(theirs, int | float):
        return math.isclose(float(ours), float(theirs), rel_tol=0.0, abs_tol=1e-12)
    return bool(ours == theirs)


def match_point(
    params: Mapping[str, Any], dataset: str, dataset_sha256: str, candidate: ImportedRecord
) -> ImportedMatch | None:
    """The match of a planned generate point's effective params with one imported directory, or None."""
    seed = candidate.params
    if candidate.dataset != dataset or not candidate.source_sha256 or candidate.source_sha256 != dataset_sha256:
        return None
    if params.get("task", "rephrase") != "rephrase":
        return None  # seed 000's generator rephrases
    if not any(key in seed for key in SEED_PARAMS):
        return None  # nothing recorded to compare: never reused
    validated = isinstance(params.get("validation"), Mapping)
    if validated != ("val_model" in seed):
        return None  # one side validated its records, the other did not
    matched = []
    for key, (path, default) in SEED_PARAMS.items():
        if path[0] == "validation" and not validated:
            continue
        theirs = seed.get(key, default)
        if theirs is None or not _same(_get(params, path), theirs):
            return None
        matched.append(f"{key}={theirs}")
    for key, path in PROMPT_HASHES.items():
        if path[0] == "validation" and not validated:
            continue
        recorded = seed.get(key)
        prompt = _get(params, path)
        if not isinstance(recorded, str) or len(recorded) < 8 or not isinstance(prompt, str):
            return None
        if seed_prompt_hash(prompt)[: len(recorded)] != recorded.lower():
            return None
        matched.append(key)
    matched.append("dataset sha256")
    return ImportedMatch(candidate.name, candidate.path, tuple(matched))


def find_match(
    params: Mapping[str, Any], dataset: str, dataset_sha256: str, candidates: Iterable[ImportedRecord]
) -> ImportedMatch | None:
    """The first imported directory (by path) that matches, or None."""
    for candidate in sorted(candidates, key=lambda c: c.path):
        found = match_point(params, dataset, dataset_sha256, candidate)
        if found is not None:
            return found
    return None


def recorded_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an imported directory's recorded parameters that `match_point` reads (the operator's index
    keeps only this: the rest of the seed's metadata never decides a match)."""
    return {key: params[key] for key in (*SEED_PARAMS, *PROMPT_HASHES) if key in params}


def plan_matches(
    stages: Iterable[StagePlan], candidates: Callable[[str], Iterable[ImportedRecord]]
) -> dict[str, ImportedMatch]:
    """Planned generate Artifact -> the imported directory it reuses, for the generate stages given (those
    without an Artifact of their own); `candidates(dataset)` are the Ready imported directories of a dataset.

    The dataset hash compared is the one the point was fingerprinted with. Two points of one plan never match
    the same directory: they differ in a grid axis, and every grid axis is a recorded parameter."""
    matches = {}
    for stage in stages:
        if stage.stage != "generate":
            continue
        found = find_match(stage.params, stage.dataset, stage.canonical["dataset"]["sha256"], candidates(stage.dataset))
        if found is not None:
            matches[stage.artifact] = found
    return matches


__all__ = ["ImportedMatch", "find_match", "match_point", "plan_matches", "recorded_params", "seed_prompt_hash"]
