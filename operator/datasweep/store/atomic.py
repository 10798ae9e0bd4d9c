"""Atomic writes to the shared volume: write a temp name in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as handle:  # open() honours the umask
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
