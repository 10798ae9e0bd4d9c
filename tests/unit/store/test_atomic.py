"""Atomically written files are readable by the team: the umask decides, or $DATASWEEP_FILE_MODE."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasweep.store.atomic import FILE_MODE_ENV, atomic_write_json, atomic_write_text, file_mode
from datasweep.store.layout import claim_generate_dir


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_honour_the_umask_not_mkstemps_0600(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FILE_MODE_ENV, raising=False)
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "b.json") == 0o644
    os.umask(0o002)
    atomic_write_text(tmp_path / "c.txt", "x")
    assert _mode(tmp_path / "c.txt") == 0o664
    rel = claim_generate_dir(tmp_path, "Copa", "temp07", "f" * 64)
    assert _mode(tmp_path / rel / ".fingerprint") == 0o664


def test_configured_mode_wins_and_a_bad_one_is_named(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FILE_MODE_ENV, "0660")
    atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o660
    monkeypatch.setenv(FILE_MODE_ENV, "rw-r--r--")
    with pytest.raises(ValueError, match=FILE_MODE_ENV):
        file_mode()
