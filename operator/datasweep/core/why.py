"""Why a point missed: the nearest existing Artifact and the fields its fingerprint input differs in. Pure.

Two parameter dicts are compared leaf by leaf (nested keys as dotted paths). The canonical parameters (what
core/fingerprint.py hashes) are compared where both sides have them; they hold prompts as sha256 digests, so
the texts (the effective parameters) are passed beside them to say which line of a prompt changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# Leaves of the canonical dict shown without their section: `params.temperature` reads `temperature`.
_SECTION_PREFIX = "params."
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_SHORT = 12
_ABSENT = object()
# Shown before the others (then in path order): what changes every fingerprint of a stage kind or dataset.
_FIRST = ("recipe", "cache_version", "dataset.sha256", "base_model", "inputs")


@dataclass(frozen=True)
class Difference:
    path: str  # dotted, as shown: `temperature`, `validation.prompt`, `dataset.sha256`, `recipe`
    old: Any  # the existing Artifact's value (None with `added`)
    new: Any  # the planned value (None with `removed`)
    change: str = "changed"  # changed | added | removed
    detail: str = ""  # a rendered detail: `line 3 differs`, `2 files`

    def render(self) -> str:
        if self.path == "dataset.sha256":
            return "dataset sha256 changed" + (f": {self.detail}" if self.detail else "")
        if self.detail:
            return f"{self.path}: {self.detail}"
        if self.change == "added":
            return f"{self.path} added: {show(self.new)}"
        if self.change == "removed":
            return f"{self.path} removed (was {show(self.old)})"
        return f"{self.path} {show(self.old)} → {show(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.path, "change": self.change, "old": self.old, "new": self.new, "text": self.render()}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its canonical parameters, and where known its effective parameters (prompt
    texts) and the sha256 of each of its dataset's files."""

    canonical: Mapping[str, Any] | None
    effective: Mapping[str, Any] | None = None
    dataset_files: Mapping[str, str] = field(default_factory=dict)

    # flattened once: one side is compared with many (plan -o wide over a large sweep)
    @cached_property
    def flat_canonical(self) -> dict[str, Any] | None:
        return None if self.canonical is None else flatten(self.canonical)

    @cached_property
    def flat_effective(self) -> dict[str, Any] | None:
        return None if self.effective is None else flatten(self.effective)

    @cached_property
    def leaves_canonical(self) -> frozenset[tuple[str, str]] | None:
        return None if self.flat_canonical is None else _leaves(self.flat_canonical)

    @cached_property
    def leaves_effective(self) -> frozenset[tuple[str, str]] | None:
        return None if self.flat_effective is None else _leaves(self.flat_effective)


def _leaves(flat: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(path, leaf) pairs: two sides differ in the paths of their symmetric difference."""
    return frozenset((path, _leaf(value)) for path, value in flat.items())


def _leaf(value: Any) -> str:
    """A value as a comparable string: `true` is not `1`, but `1` is `1.0` (the API server gives a float field's
    1.0 back as 1)."""
    return json.dumps(_numbers(value), sort_keys=True, default=str)


def _numbers(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list | tuple):
        return [_numbers(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _numbers(item) for key, item in value.items()}
    return value


def count_differences(existing: Side, planned: Side) -> int | None:
    """len(diff(existing, planned)), fast (set operations); None when the two cannot be compared."""
    canonical = existing.canonical is not None and planned.canonical is not None
    old = existing.leaves_canonical if canonical else existing.leaves_effective
    new = planned.leaves_canonical if canonical else planned.leaves_effective
    if old is None or new is None:
        return None
    return len({path for path, _ in old ^ new})


def show(value: Any) -> str:
    """A value as people write it: `0.7`, `gpt-4o`, `null`, `[a, b]`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value[:_SHORT] if _DIGEST.match(value) else value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):  # a training stage's inputs: fingerprints, shown short
        return "[" + ", ".join(show(item) for item in value) + "]"
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted path: leaf}; lists and scalars are leaves (an empty dict is one too)."""
    if isinstance(value, Mapping) and (value or not prefix):
        flat: dict[str, Any] = {}
        for key in sorted(value, key=str):
            flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _display(path: str) -> str:
    return path[len(_SECTION_PREFIX) :] if path.startswith(_SECTION_PREFIX) else path


def _order(path: str) -> tuple[int, str]:
    shown = _display(path)
    for rank, head in enumerate(_FIRST):
        if shown == head or shown.startswith(f"{head}."):
            return rank, shown
    return len(_FIRST), shown


def line_change(old: str, new: str) -> str:
    """Which lines of a text differ: `line 3 differs`, `lines 3, 7 differ`, `lines 3, 7, 9 and 4 more differ`."""
    a, b = old.splitlines(), new.splitlines()
    lines = [
        i + 1 for i in range(max(len(a), len(b))) if (a[i] if i < len(a) else None) != (b[i] if i < len(b) else None)
    ]
    if not lines:  # only line endings or a trailing newline
        return "whitespace differs"
    if len(lines) == 1:
        return f"line {lines[0]} differs"
    shown = ", ".join(map(str, lines[:3]))
    more = f" and {len(lines) - 3} more" if len(lines) > 3 else ""
    return f"lines {shown}{more} differ"


def files_changed(old: Mapping[str, str], new: Mapping[str, str]) -> int:
    """How many dataset files differ in content or exist on one side only."""
    return sum(old.get(name) != new.get(name) for name in set(old) | set(new))


def _text(effective: Mapping[str, Any] | None, path: str) -> str | None:
    """The text behind a digest leaf: the effective parameters hold it where the canonical ones hold its hash."""
    value: Any = effective
    for key in _display(path).split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def diff(existing: Side, planned: Side) -> list[Difference]:
    """The leaves that differ between an existing Artifact's parameters and a planned stage's, most telling first
    (recipe, cache version, dataset content, model, inputs, then the rest by name). Canonical parameters are
    compared where both sides have them, else the effective ones; one side without either compares nothing."""
    canonical = existing.canonical is not None and planned.canonical is not None
    old = existing.flat_canonical if canonical else existing.flat_effective
    new = planned.flat_canonical if canonical else planned.flat_effective
    if old is None or new is None:
        return []
    found = []
    changed = [path for path in old.keys() | new.keys() if not _same(old.get(path, _ABSENT), new.get(path, _ABSENT))]
    for path in sorted(changed, key=_order):
        if path not in new:
            found.append(Difference(_display(path), old[path], None, "removed"))
        elif path not in old:
            found.append(Difference(_display(path), None, new[path], "added"))
        else:
            found.append(
                Difference(
                    _display(path), old[path], new[path], detail=_detail(path, old[path], new[path], existing, planned)
                )
            )
    return found


def _same(a: Any, b: Any) -> bool:
    return a is b if _ABSENT in (a, b) else _leaf(a) == _leaf(b)


def _detail(path: str, old: Any, new: Any, existing: Side, planned: Side) -> str:
    if _display(path) == "dataset.sha256":
        if existing.dataset_files and planned.dataset_files:
            count = files_changed(existing.dataset_files, planned.dataset_files)
            return f"{count} file{'s' if count != 1 else ''}" if count else ""
        return ""
    if isinstance(old, str) and isinstance(new, str):
        if _DIGEST.match(old) and _DIGEST.match(new):
            old_text, new_text = _text(existing.effective, path), _text(planned.effective, path)
            if old_text is not None and new_text is not None:
                return line_change(old_text, new_text)
            return f"text changed (sha256 {old[:_SHORT]} → {new[:_SHORT]})"
        if "\n" in old or "\n" in new:
            return line_change(old, new)
    return ""


@dataclass(frozen=True)
class Candidate:
    """An existing Artifact that a planned stage may be compared with."""

    name: str
    side: Side
    ready: bool = True
    created: str = ""  # ISO time; the newer wins a tie


@dataclass(frozen=True)
class Nearest:
    candidate: Candidate
    differences: list[Difference]

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.candidate.name, "differences": [d.to_dict() for d in self.differences]}


def nearest(planned: Side, candidates: Sequence[Candidate]) -> Nearest | None:
    """The candidate whose parameters differ from the planned ones in the fewest fields; a tie goes to a Ready
    one, then the newest, then the first name. None when no candidate can be compared."""
    scored = [(candidate, count_differences(candidate.side, planned)) for candidate in candidates]
    rows = sorted(((c, n) for c, n in scored if n), key=lambda row: row[0].name)
    rows.sort(key=lambda row: row[0].created, reverse=True)  # stable: newest first, names in order
    rows.sort(key=lambda row: (row[1] or 0, not row[0].ready))
    return Nearest(rows[0][0], diff(rows[0][0].side, planned)) if rows else None


def summary(differences: Sequence[Difference]) -> str:
    """One short string: the first difference and how many more (`temperature 0.7 → 0.75 (+2 more)`)."""
    if not differences:
        return ""
    more = len(differences) - 1
    return differences[0].render() + (f" (+{more} more)" if more else "")
