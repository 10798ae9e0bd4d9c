"""The generate worker on a full data volume (ENOSPC) and killed before it publishes: a clear message naming the
free space and the fix, in the log and the termination message, and never a partial output beside the resume
state (outputs are written into `.work/publish/` and renamed into place once complete, the manifest last)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate import worker
from datasweep.workloads.generate.cli import main
from datasweep.workloads.generate.journal import Journal

from .conftest import make_spec, write_jsonl, write_spec


def enospc(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path else None)


def visible(directory: Path) -> list[str]:
    """What a reader of the artifact directory sees: everything but the claim and the resume state."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.fixture
def setup(api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    log = tmp_path / "termination-log"
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(log))
    source = tmp_path / "src"
    for split in ("train", "validation"):
        write_jsonl(source / f"copa_{split}.jsonl", [{"id": str(i), "text": f"{split} {i}"} for i in range(2)])
    with serve_openai(ServerBehavior()) as server:
        spec = make_spec(tmp_path, source, {"base_url": server.url, "validation": None})
        yield spec, write_spec(spec, tmp_path / "spec.yaml"), log, server


def test_a_full_volume_while_compiling_fails_clearly_and_publishes_nothing(setup, monkeypatch):  # type: ignore[no-untyped-def]
    spec, spec_file, log, server = setup
    written: list[Path] = []
    original = worker._write_jsonl

    def write_then_fill(path: Path, records: list[dict[str, object]]) -> None:
        if written:  # the second file does not fit
            raise enospc(path)
        original(path, records)
        written.append(path)

    monkeypatch.setattr(worker, "_write_jsonl", write_then_fill)
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code == 1, result.output
    message = log.read_text()
    assert message.startswith("failed: the data volume is full ("), message
    assert " bytes free at " in message
    assert str(spec.output_path) in message
    assert "free space or grow the PVC" in message
    assert message in result.output
    out = spec.output_path
    assert read_manifest(out) is None
    assert visible(out) == [], "a partial output was published"
    assert written
    assert not written[0].exists(), "the staging directory was left behind"
    assert not (out / ".work" / worker.PUBLISH_DIR).exists()
    # Freed: the rerun resumes from the journal (no request paid twice) and publishes everything.
    monkeypatch.setattr(worker, "_write_jsonl", original)
    before = server.counts["POST /v1/chat/completions"]
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code == 0, result.output
    assert server.counts["POST /v1/chat/completions"] == before
    assert read_manifest(out) is not None
    assert "Copa" in visible(out)
    assert "report.json" in visible(out)


def test_a_manifest_that_does_not_fit_takes_the_published_outputs_back(setup, monkeypatch):  # type: ignore[no-untyped-def]
    spec, spec_file, log, _ = setup

    def full(*args: object, **kwargs: object) -> None:
        raise enospc(spec.output_path / "manifest.json")

    monkeypatch.setattr(worker, "finalize_artifact", full)
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code == 1, result.output
    assert "the data volume is full" in log.read_text()
    assert "manifest.json" in log.read_text()
    assert visible(spec.output_path) == []


def test_a_full_volume_while_journaling_stops_and_says_so(setup, monkeypatch):  # type: ignore[no-untyped-def]
    spec, spec_file, log, _ = setup

    def full(self: Journal, lines: list[str]) -> None:
        raise enospc(self.path)

    monkeypatch.setattr(Journal, "_write", full)
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code == 1, result.output
    assert "the data volume is full" in log.read_text()
    assert "generate.jsonl" in log.read_text()
    assert visible(spec.output_path) == []


def test_a_journal_whose_write_failed_refuses_more_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    monkeypatch.setattr(Journal, "_write", lambda self, lines: (_ for _ in ()).throw(enospc()))

    async def run() -> None:
        journal.add({"custom_id": "a"})
        with pytest.raises(OSError) as raised:
            await journal.drain()
        assert raised.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            journal.add({"custom_id": "b"})  # not paid for: it could not be recorded

    asyncio.run(run())
    journal.close()


def test_other_os_errors_are_not_reported_as_a_full_volume(setup, monkeypatch):  # type: ignore[no-untyped-def]
    _, spec_file, log, _ = setup

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(worker, "finalize_artifact", denied)
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code != 0
    assert isinstance(result.exception, PermissionError)
    assert not log.exists() or "volume is full" not in log.read_text()


def test_a_staging_directory_left_by_a_killed_attempt_is_discarded(setup):  # type: ignore[no-untyped-def]
    spec, spec_file, _, _ = setup
    leftover = spec.output_path / ".work" / worker.PUBLISH_DIR / "Copa"
    leftover.mkdir(parents=True)
    (leftover / "copa_train.jsonl").write_text('{"half": ')  # killed while compiling
    (leftover / "stale.jsonl").write_text("{}\n")
    result = CliRunner().invoke(main, ["--spec", str(spec_file)])
    assert result.exit_code == 0, result.output
    published = sorted(p.name for p in (spec.output_path / "Copa").iterdir())
    assert published == ["copa_train.jsonl", "copa_validation.jsonl"]
    assert not (spec.output_path / ".work" / worker.PUBLISH_DIR).exists()
