"""The request store: answers of chat requests, content-addressed, shared by every worker of a volume.

A request's identity is the sha256 of its canonical content (backend family, model, every sampling parameter
after the API's defaults, the rendered messages, n, seed, sample index) salted by `cacheVersion` and the
identity recipe: two requests with one identity are the same draw, so the first answer serves both.

<_shared>/.requests/v1/
    <abc>.jsonl  answers whose identity starts with <abc>: one JSON object a line, append-only, first answer wins
    <abc>.idx    "<identity> <offset> <length>;" a line: where each answer's line sits in <abc>.jsonl

Many processes (pods of one volume) append at once: a writer holds flock on the shard's .jsonl while it
appends whole lines to both files (O_APPEND), data first, so an index line always points at a complete
data line. A writer killed mid-append leaves at most a torn last line; the next writer ends it with a newline
before appending, and readers skip lines that do not parse. Lookups read only the small index of the shards
they touch and keep only the identities asked for: memory follows the request, not the store.

`compact` (datasweep gc) rewrites a shard under the same lock and keeps its new data file locked until the new
index is in place too, so appenders wait for the pair; answers younger than its grace period stay even when no
Artifact lists them (a worker lists what it uses before it looks it up or stores it, see REFERENCES).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import operator
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from datasweep.store.atomic import atomic_open, atomic_write_bytes, file_mode

STORE_DIR = ".requests"  # under the volume's _shared/ (store.layout.SHARED)
# In an Artifact's .work/: the identities of every request it uses, one a line, appended by its worker before it
# looks them up or stores them (what `datasweep gc` keeps).
REFERENCES = "request-identities.txt"
FORMAT = "v1"
# The identity recipe: changing what an identity covers changes this, so old answers are never misread.
RECIPE = "chat-1"
# The chat API's defaults: a body that spells one out and a body that leaves it out are one request.
API_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "n": 1,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "seed": None,
    "stop": None,
    "max_tokens": None,
}
SHARD_CHARS = 3  # 4,096 shards: ~250 answers a shard at 1,000,000, so a small lookup reads little
END = b";"  # ends every index line: the head of a torn one (completed by the next writer's newline) lacks it
NEWLINE = ord("\n")
FIND_BELOW = 2000  # index bytes per wanted identity above which a lookup searches bytes instead of parsing lines
MAX_RECORD_BYTES = 16 * 1024 * 1024  # an answer line larger than this is not stored (never a torn giant append)
_DECODER = json.JSONDecoder()
READ_AT_ONCE = 1 << 16  # bytes of an index a lookup asks for in one read
_IDENTITY_PART = operator.itemgetter(slice(0, 64))  # of an index line


# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False), built once: one per request hashed
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _number(value: Any) -> Any:
    # 1 and 1.0 are one value for a sampling parameter (as in the fingerprint, SPEC 2)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def request_identity(family: str, body: Mapping[str, Any], *, salt: str = "", sample: int = 0) -> str:
    """sha256 of a chat request's canonical content; `body` holds what chat.completions.create takes."""
    content = {**API_DEFAULTS, **body}
    canonical = {
        "recipe": RECIPE,
        "salt": salt,
        "family": family,
        "sample": sample,
        "request": {key: _number(value) for key, value in content.items()},
    }
    return hashlib.sha256(_CANONICAL.encode(canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    """One answer and the provenance of the first time it was paid for."""

    identity: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    model: str | None = None  # the model the API said answered
    system_fingerprint: str | None = None
    answered_at: str = ""  # ISO time it was stored

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.identity,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "answered_at": self.answered_at or datetime.now(UTC).isoformat(timespec="seconds"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredAnswer:
        get = data.get  # positional, in field order: a lookup builds one per answer found
        return cls(
            str(data["id"]),
            str(get("text") or ""),
            int(get("prompt_tokens") or 0),
            int(get("completion_tokens") or 0),
            get("finish_reason"),
            get("model"),
            get("system_fingerprint"),
            str(get("answered_at") or ""),
        )


def referenced_identities(shared: Path, skip: set[Path] | None = None) -> set[str]:
    """Every identity an Artifact directory under `shared` (<root>/_shared) used, except those under `skip`."""
    skipped = {path.resolve() for path in skip or set()}
    found: set[str] = set()
    for path in Path(shared).glob(f"*/*/.work/{REFERENCES}"):
        directory = path.parent.parent.resolve()
        if not any(directory == s or directory.is_relative_to(s) for s in skipped):
            found.update(path.read_text(encoding="ascii", errors="replace").split())
    return found


def _is_identity(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _complete_lines(raw: bytes) -> Iterator[bytes]:
    """The newline-ended lines of `raw`: a torn last line (a writer killed mid-append) is not one."""
    end = raw.rfind(b"\n")
    if end < 0:
        return
    yield from raw[: end + 1].splitlines()


class RequestStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # <_shared>/.requests
        self.directory = self.root / FORMAT

    @classmethod
    def under(cls, shared: Path) -> RequestStore:
        return cls(Path(shared) / STORE_DIR)

    def _data(self, shard: str) -> Path:
        return self.directory / f"{shard}.jsonl"

    def _index(self, shard: str) -> Path:
        return self.directory / f"{shard}.idx"

    def shards(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.idx"))

    def _read_index_bytes(self, shard: str) -> bytes:
        try:
            with open(self._index(shard), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return b""

    def _index_lines(self, shard: str, raw: bytes | None = None) -> dict[bytes, bytes]:
        """identity (ascii) -> its index line, the first complete line of an identity winning."""
        if raw is None:
            raw = self._read_index_bytes(shard)
        lines = list(_complete_lines(raw))
        lines.reverse()  # so that the first entry of an identity is the one the dict keeps
        return {line[:64]: line for line in lines if line.endswith(END) and line[64:65] == b" "}

    def read_index(self, shard: str) -> dict[str, tuple[int, int]]:
        """identity -> (offset, length) of its answer in the shard's data file."""
        return {
            key.decode("ascii", "replace"): where
            for key, line in self._index_lines(shard).items()
            if (where := _location(line)) is not None
        }

    def lookup(self, identities: Iterable[str]) -> dict[str, StoredAnswer]:
        """The stored answers among `identities` (the others are not stored, or not readable).

        Per shard touched: one read of its index, then one open of its data file and one pread per answer
        found; only the index lines and answers asked for are parsed (docs/scale.md, "Request store")."""
        wanted: dict[str, set[str]] = {}
        for identity in identities:
            wanted.setdefault(identity[:SHARD_CHARS], set()).add(identity)
        found: dict[str, StoredAnswer] = {}
        directory = os.fspath(self.directory) + os.sep
        for shard, names in wanted.items():
            raw = _read_whole(directory + shard + ".idx")
            if raw:
                hits = _locate(raw, names)
                if hits:
                    _read_answers(directory + shard + ".jsonl", hits, found)
        return found

    def put(self, answers: Iterable[StoredAnswer]) -> int:
        """Store the answers not stored yet (first answer wins); returns how many were added."""
        by_shard: dict[str, dict[str, StoredAnswer]] = {}
        for answer in answers:
            if not _is_identity(answer.identity):
                raise ValueError(f"not a request identity: {answer.identity!r}")
            by_shard.setdefault(answer.identity[:SHARD_CHARS], {}).setdefault(answer.identity, answer)
        if not by_shard:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        added = 0
        for shard, answers_here in sorted(by_shard.items()):
            added += self._append(shard, answers_here)
        return added

    def _lock_shard(self, shard: str) -> int:
        """The shard's data file, open for appending and locked (one writer a shard; released when the fd
        closes, or its process dies). A file that `compact` replaced while we waited is opened again."""
        while True:
            fd = _open_for_append(self._data(shard))
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(self._data(shard)).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _append(self, shard: str, answers: dict[str, StoredAnswer]) -> int:
        data_fd = self._lock_shard(shard)
        try:
            index_fd = _open_for_append(self._index(shard))
            try:
                stored = self._index_lines(shard)  # under the lock: exact
                offset = _end_with_newline(data_fd)
                data_lines: list[bytes] = []
                index_lines: list[bytes] = []
                for identity, answer in answers.items():
                    if identity.encode() in stored:
                        continue
                    line = json.dumps(answer.to_json(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                    if len(line) > MAX_RECORD_BYTES:
                        continue
                    data_lines.append(line)
                    index_lines.append(f"{identity} {offset} {len(line)}".encode() + END + b"\n")
                    offset += len(line)
                if not data_lines:
                    return 0
                # No fsync: the store is a cache beside the durable journals; a line a crash loses or garbles is a
                # miss (every read checks the identity at the offset) and that request is sent again.
                _write_all(data_fd, b"".join(data_lines))
                _end_with_newline(index_fd)
                _write_all(index_fd, b"".join(index_lines))
                return len(data_lines)
            finally:
                os.close(index_fd)
        finally:
            os.close(data_fd)

    def compact(self, keep: set[str], dry_run: bool = False, keep_after: datetime | None = None) -> Compaction:
        """Drop every stored answer whose identity is not in `keep` and that was first answered before
        `keep_after` (None: whatever its age), and torn or duplicate lines.

        Each shard is rebuilt from its data file under its lock (so an index a killed compaction left stale is
        mended too) and replaced atomically, data then index. The new data file is locked before it takes the
        shard's name, and stays locked until its index is in place: a writer that opens the shard meanwhile
        waits for the pair instead of appending to the new data and the old index. A reader in between sees an
        index that does not match the data, which is a miss."""
        dropped = freed = recent = 0
        for shard in self.shards():
            fd = self._lock_shard(shard)
            try:
                data = _read_all(fd)
                index = self._read_index_bytes(shard)
                kept = _kept_lines(data, self._indexed(shard, index, data), keep, keep_after)
                dropped += kept.dropped
                recent += kept.recent
                new_index = b"".join(kept.index_lines)
                freed += len(data) + len(index) - kept.size - len(new_index)
                if dry_run or (len(data) == kept.size and index == new_index):
                    continue
                new_lock: int | None = None
                try:
                    with atomic_open(self._data(shard), "wb", encoding=None) as handle:
                        handle.write(b"".join(kept.lines))
                        new_lock = os.dup(handle.fileno())  # the lock outlives the temp file's own handle
                        fcntl.flock(new_lock, fcntl.LOCK_EX)
                    atomic_write_bytes(self._index(shard), new_index)
                finally:
                    if new_lock is not None:
                        os.close(new_lock)
            finally:
                os.close(fd)
        return Compaction(dropped, freed, recent)

    def _indexed(self, shard: str, raw: bytes, data: bytes) -> dict[str, int]:
        """identity -> offset of its line for the index entries that point at that identity's line in `data`."""
        valid: dict[str, int] = {}
        for name, line in self._index_lines(shard, raw).items():
            where = _location(line)
            if where is not None and where[0] + where[1] <= len(data):
                answer = _parse_answer(data[where[0] : where[0] + where[1]])
                identity = name.decode("ascii", "replace")
                if answer is not None and answer.identity == identity:
                    valid[identity] = where[0]
        return valid

    def count(self) -> int:
        """Stored answers (index entries), over every shard."""
        return sum(len(self._index_lines(shard)) for shard in self.shards())

    def iter_answers(self, shard: str) -> Iterator[StoredAnswer]:
        """Every complete answer line of a shard's data file (for checks and gc), torn lines skipped."""
        try:
            raw = self._data(shard).read_bytes()
        except FileNotFoundError:
            return
        for line in _complete_lines(raw):
            answer = _parse_answer(line)
            if answer is not None:
                yield answer


class Compaction(NamedTuple):
    dropped: int  # answers removed
    freed: int  # bytes (data and index)
    recent: int  # answers no Artifact references, kept because they are younger than the grace period


@dataclass
class _Kept:
    lines: list[bytes]
    index_lines: list[bytes]
    size: int = 0
    dropped: int = 0
    recent: int = 0


def _kept_lines(data: bytes, indexed: dict[str, int], keep: set[str], keep_after: datetime | None) -> _Kept:
    """The complete answer lines of `data` that stay, one an identity (the one its index entry points at, else
    the first), with their new index lines."""
    kept = _Kept([], [])
    seen: set[str] = set()
    start, end = 0, data.rfind(b"\n") + 1
    while start < end:
        stop = data.index(b"\n", start) + 1
        line, at = data[start:stop], start
        start = stop
        answer = _parse_answer(line)
        if answer is None or not _is_identity(answer.identity) or answer.identity in seen:
            continue
        if indexed.get(answer.identity, at) != at:
            continue  # a line its index entry does not point at: a duplicate
        seen.add(answer.identity)
        young = keep_after is not None and _answered_after(answer, keep_after)
        if answer.identity not in keep and not young:
            kept.dropped += 1
            continue
        kept.recent += answer.identity not in keep
        kept.index_lines.append(f"{answer.identity} {kept.size} {len(line)}".encode() + END + b"\n")
        kept.lines.append(line)
        kept.size += len(line)
    return kept


def _answered_after(answer: StoredAnswer, moment: datetime) -> bool:
    """Whether the answer was first stored after `moment` (an unreadable time counts as old)."""
    try:
        answered = datetime.fromisoformat(answer.answered_at)
    except ValueError:
        return False
    if answered.tzinfo is None:
        answered = answered.replace(tzinfo=UTC)
    return answered > moment


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# The read path of lookup(): plain fds (no file objects, no Path per shard), each index searched only for the
# identities asked for, each answer read by pread at the offset its index line gives.


def _read_whole(path: str) -> bytes:
    """A file's bytes (b"" when it does not exist), by one open: an index, read for a lookup."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        chunks = [os.read(fd, READ_AT_ONCE)]  # a shard's whole index at 1,000,000 answers (about 21 KB)
        while len(chunks[-1]) == READ_AT_ONCE:  # a short read of a regular file is its end
            chunks.append(os.read(fd, READ_AT_ONCE))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _locate(raw: bytes, names: set[str]) -> list[tuple[tuple[int, int], str]]:
    """(offset, length) in the data file and identity of each of `names` the index bytes `raw` hold, by
    offset: the first complete index line of an identity wins."""
    if len(names) * FIND_BELOW < len(raw):
        # a few identities in a large shard: search the bytes instead of splitting every line
        found = ((_find_entry(raw, name.encode("ascii", "replace")), name) for name in names)
    else:
        lines = raw[: raw.rfind(b"\n") + 1].split(b"\n")  # complete lines (and a last b"")
        lines.reverse()  # so that the first line of an identity is the one the dict keeps
        first = dict(zip(map(_IDENTITY_PART, lines), lines, strict=True))
        found = ((_first_location(raw, first, name.encode("ascii", "replace")), name) for name in names)
    return sorted((where, name) for where, name in found if where is not None)


def _first_location(raw: bytes, first: dict[bytes, bytes], key: bytes) -> tuple[int, int] | None:
    line = first.get(key)
    if line is None:
        return None
    if line.endswith(END) and line[64:65] == b" " and (where := _location(line)) is not None:
        return where
    return _find_entry(raw, key)  # its first line is torn (its writer died): a later one may be whole


def _read_answers(path: str, hits: list[tuple[tuple[int, int], str]], found: dict[str, StoredAnswer]) -> None:
    """Add to `found` the answer at each hit's place in the data file `path` that is the hit's identity (an
    index that does not match its data, as in the moment `compact` replaces a shard, is a miss)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        for (offset, length), name in hits:
            answer = _parse_answer(os.pread(fd, length, offset))
            if answer is not None and answer.identity == name:
                found[name] = answer
    finally:
        os.close(fd)


def _find_entry(raw: bytes, key: bytes) -> tuple[int, int] | None:
    """The location in the first complete index line of `key` in the index bytes `raw`."""
    start = 0
    while (at := raw.find(key, start)) >= 0:
        start = at + 1
        if at and raw[at - 1] != NEWLINE:
            continue
        end = raw.find(b"\n", at)
        line = raw[at:end] if end >= 0 else b""
        if line.endswith(END) and line[64:65] == b" " and (where := _location(line)) is not None:
            return where
    return None


def _location(line: bytes) -> tuple[int, int] | None:
    parts = line[65 : -len(END)].split(b" ")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def _parse_answer(raw: bytes) -> StoredAnswer | None:
    try:
        # what json.loads does, less its guess of the encoding (the store writes UTF-8) and its regex passes
        text = raw.decode("utf-8")
        data, end = _DECODER.raw_decode(text)
        if text[end:].strip():
            return None
        return StoredAnswer.from_json(data) if isinstance(data, dict) and "id" in data else None
    except (ValueError, TypeError, KeyError):
        return None


def _open_for_append(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, os.O_RDWR | os.O_APPEND)
    os.fchmod(fd, file_mode())  # teammates' pods read and append to it too
    return fd


def _end_with_newline(fd: int) -> int:
    """Complete a torn last line (its writer died mid-append) so that the next line starts on its own;
    returns the file's size, where the next append lands (the caller holds the shard's lock)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        _write_all(fd, b"\n")
        size += 1
    return size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
