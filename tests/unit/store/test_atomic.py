"""Atomically written files are readable by the team: the umask decides, or $DATASWEEP_FILE_MODE."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasweep.store.atomic import (
    FILE_MODE_ENV,
    append_line_durably,
    append_lines_durably,
    atomic_write_json,
    atomic_write_text,
    file_mode,
)
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


def test_publish_tree_moves_everything_in_replacing_files_and_directories(tmp_path: Path) -> None:
    from datasweep.store.atomic import publish_tree, unpublish

    target = tmp_path / "artifact"
    (target / "Copa").mkdir(parents=True)
    (target / "Copa" / "stale.jsonl").write_text("old")
    (target / "report.json").write_text("old")
    (target / "train").mkdir()  # a nested stage: not staged, never touched
    staging = target / ".work" / "publish"
    (staging / "Copa").mkdir(parents=True)
    (staging / "Copa" / "copa_train.jsonl").write_text("new")
    (staging / "report.json").write_text("new")
    published = publish_tree(staging, target)
    assert published == ["Copa", "report.json"]
    assert sorted(p.name for p in (target / "Copa").iterdir()) == ["copa_train.jsonl"]
    assert (target / "report.json").read_text() == "new"
    assert (target / "train").is_dir()
    assert not staging.exists()
    assert sorted(p.name for p in (target / ".work").iterdir()) == []  # no set-aside copy left
    unpublish(target, published)
    assert sorted(p.name for p in target.iterdir()) == [".work", "train"]


def test_disk_full_finds_enospc_behind_other_errors() -> None:
    import errno

    from datasweep.store.atomic import disk_full

    full = OSError(errno.ENOSPC, "No space left on device")
    outer = RuntimeError("while writing")
    outer.__cause__ = full
    assert disk_full(outer) is full
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    assert disk_full(PermissionError(errno.EACCES, "Permission denied")) is None


def test_volume_full_message_names_the_free_space_the_path_and_the_fix(tmp_path: Path) -> None:
    import errno

    from datasweep.store.atomic import volume_full_message

    where = tmp_path / "not" / "yet" / "there"  # its nearest existing ancestor is measured
    message = volume_full_message(where, OSError(errno.ENOSPC, "No space left", str(where / "x.jsonl")))
    assert message.startswith("the data volume is full (")
    assert f" bytes free at {where})" in message
    assert message.endswith(f"): free space or grow the PVC (failed writing {where / 'x.jsonl'})")


def test_appended_lines_stand_on_their_own_after_a_torn_last_line(tmp_path):
    path = tmp_path / "list.txt"
    append_lines_durably(path, ["a", "b\n"])
    with path.open("a") as handle:
        handle.write("half-written")  # a writer killed mid-append
    append_lines_durably(path, ["c"])
    append_line_durably(path, "d")
    append_lines_durably(path, [])
    assert path.read_text().splitlines() == ["a", "b", "half-written", "c", "d"]
