"""Atomic writes to the shared volume: write a temp name in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

FILE_MODE_ENV = "DATASWEEP_FILE_MODE"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is a set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def file_mode() -> int:
    """Mode of files written here: $DATASWEEP_FILE_MODE (octal, e.g. 0664) as given, else 0666 less the umask.

    mkstemp creates 0600 files; on a shared (NFS/RWX) volume teammates must be able to read what was written.
    """
    configured = os.environ.get(FILE_MODE_ENV, "").strip()
    if configured:
        try:
            mode = int(configured, 8)
        except ValueError:
            raise ValueError(f"${FILE_MODE_ENV}={configured!r} is not an octal file mode such as 0664") from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f"${FILE_MODE_ENV}={configured!r} is not a file mode between 0000 and 0777")
        return mode
    return 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "w",
    encoding: str | None = "utf-8",
    permissions: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success it replaces `path` whole, on error it vanishes.

    The file gets `permissions`, default `file_mode()` (the umask, or $DATASWEEP_FILE_MODE), not mkstemp's 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    wanted = file_mode() if permissions is None else permissions
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, wanted)
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb", encoding=None) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def append_line_durably(path: str | os.PathLike[str], line: str) -> None:
    """Append one line and fsync: used by resumable workers (a record written is a record never redone)."""
    append_lines_durably(path, [line])


def append_lines_durably(path: str | os.PathLike[str], lines: Iterable[str]) -> None:
    """Append whole lines and fsync (one writer a file). A last line a killed writer left without its newline
    is ended first, so that every appended line stands on its own."""
    text = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    if not text:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a+b") as handle:  # open() honours the umask; every write lands at the end
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                text = b"\n" + text
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def publish_tree(staging: Path, target: Path) -> list[str]:
    """Move every entry of `staging` into `target` by rename (no copy: no space needed, nothing half-written
    is ever visible), replacing what `target` holds under the same names; `staging` ends empty and is removed.

    A worker writes its outputs into `staging` (beside or under `target`, on the same filesystem) and calls
    this only once all of them are complete; its manifest, written after, marks the directory complete.
    Returns the names published (for `unpublish` when the manifest cannot be written)."""
    names = sorted(entry.name for entry in staging.iterdir())
    for name in names:
        source, dest = staging / name, target / name
        if dest.is_dir() and not dest.is_symlink():
            # rename() replaces only an empty directory: set the old one aside, then drop it.
            old = staging.with_name(f"{staging.name}.old-{name}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(source, dest)
            shutil.rmtree(old)
        else:
            os.replace(source, dest)
    _fsync_dir(target)
    staging.rmdir()
    return names


def unpublish(target: Path, names: list[str]) -> None:
    """Remove what `publish_tree` put into `target` (the manifest could not follow): no output without it."""
    for name in names:
        path = target / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error behind `error` (itself, or its cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        current = current.__cause__ or current.__context__
    return None


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (its nearest existing ancestor)."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def volume_full_message(path: Path, error: OSError | None = None) -> str:
    """What a worker says when the data volume is full: how much is free where, and the fix."""
    free = free_bytes(path)
    where = f"{free} bytes free at {path}" if free is not None else f"writing {path}"
    # The fix first: the operator shows the first 300 characters of this line on the Artifact.
    failed = f" (failed writing {error.filename})" if error is not None and error.filename else ""
    return f"the data volume is full ({where}): free space or grow the PVC{failed}"
