"""A worker's progress file: summed over its phases, written at a bounded rate, read back tolerantly."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasweep.store.progress import (
    PROGRESS_NAME,
    ProgressReport,
    RequestReuseCounts,
    read_progress,
    write_progress,
)
from datasweep.workloads import progress as progress_module
from datasweep.workloads.progress import Progress, plan_progress, recording_progress, report_request_reuse


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DATASWEEP_PROGRESS_FILE_INTERVAL", "0")
    with recording_progress(tmp_path):
        yield tmp_path
    assert progress_module._FILE is None  # the block ends, the recording ends


def _read(directory: Path) -> ProgressReport:
    report = read_progress(directory)
    assert report is not None
    return report


def test_phases_are_summed_so_nothing_goes_backwards(recording: Path) -> None:
    plan_progress(20)  # 10 generate + 10 validate requests
    seen: list[ProgressReport] = []
    generate = Progress("generate", 10, "requests", stream=io.StringIO())
    for done in range(1, 11):
        generate.update(done, tokens=done * 100, cost=done * 0.01)
        seen.append(_read(recording))
    generate.close()
    validate = Progress("validate", 10, "requests", stream=io.StringIO())
    for done in range(1, 11):
        validate.update(done, tokens=done * 10, cost=None)
        seen.append(_read(recording))
    validate.close()
    final = _read(recording)
    assert (final.phase, final.unit, final.done, final.total) == ("validate", "requests", 20, 20)
    assert final.tokens == 1000 + 100
    assert final.cost_usd == pytest.approx(0.10)  # the judge's model is unpriced: None adds nothing
    assert final.eta_seconds == 0.0
    assert seen[9].done == 10
    assert seen[9].total == 20
    for before, after in itertools.pairwise(seen):
        assert after.done >= before.done
        assert (after.tokens or 0) >= (before.tokens or 0)
        assert (after.cost_usd or 0) >= (before.cost_usd or 0)


def test_a_phase_found_done_by_a_resumed_worker_still_counts(recording: Path) -> None:
    plan_progress(8)
    generate = Progress("generate", 4, "requests", initial=4, stream=io.StringIO())  # answered before the restart
    generate.update(4, tokens=40, cost=0.5)
    generate.close()
    assert generate.stream.getvalue().startswith("generate: 4/4 requests (")  # the log still shows its end
    validate = Progress("validate", 4, "requests", initial=1, stream=io.StringIO())
    validate.update(2, tokens=5, cost=0.1)
    report = _read(recording)
    assert (report.done, report.total, report.tokens) == (6, 8, 45)
    assert report.cost_usd == pytest.approx(0.6)
    assert report.fraction == pytest.approx(0.75)


def test_training_reports_steps_and_the_last_loss(recording: Path) -> None:
    steps = Progress("fomaml", 100, "steps", stream=io.StringIO())
    steps.update(40, query_loss=1.25)
    report = _read(recording)
    assert (report.unit, report.done, report.total, report.loss) == ("steps", 40, 100, 1.25)
    assert report.tokens is None
    assert report.cost_usd is None


def test_writes_are_bounded_by_the_interval_and_the_end_is_always_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASWEEP_PROGRESS_FILE_INTERVAL", "3600")
    with recording_progress(tmp_path):
        bar = Progress("qa", 50, "steps", stream=io.StringIO())
        bar.update(1, loss=2.0)  # the first report is written at once
        for done in range(2, 50):
            bar.update(done, loss=1.0)
        assert _read(tmp_path).done == 1
        bar.close()
        assert _read(tmp_path).done == 49


def test_no_file_unless_the_worker_asks_and_a_volume_error_never_fails_the_work(tmp_path: Path) -> None:
    bar = Progress("generate", 2, "requests", stream=io.StringIO())
    bar.update(1)
    bar.close()
    assert not (tmp_path / PROGRESS_NAME).exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with recording_progress(blocked) as recorder:
        other = Progress("generate", 2, "requests", stream=io.StringIO())
        other.update(1)  # the write fails: logged once, the worker goes on
        other.close()
        assert recorder.warned


def test_reader_answers_none_for_a_missing_or_foreign_file(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    (tmp_path / PROGRESS_NAME).write_text("{not json")
    assert read_progress(tmp_path) is None
    (tmp_path / PROGRESS_NAME).write_text(json.dumps({"done": -1}))
    assert read_progress(tmp_path) is None
    write_progress(tmp_path, ProgressReport(phase="generate", unit="requests", done=3, total=4, cost_usd=0.25))
    assert read_progress(tmp_path) == ProgressReport(phase="generate", unit="requests", done=3, total=4, cost_usd=0.25)
    assert not [p for p in tmp_path.iterdir() if p.name != PROGRESS_NAME]  # atomic: no temp file left


def test_request_reuse_is_written_at_once_and_kept_in_every_later_report(tmp_path: Path) -> None:
    reuse = RequestReuseCounts(requests=20, stored=12, to_send=8, rows=10, rows_reused=6, saved_tokens=300)
    with recording_progress(tmp_path):  # the default interval: only the reuse report and the final one land now
        plan_progress(20)
        report_request_reuse(reuse, "generate", 6)  # after the store's lookup, before anything is sent
        first = _read(tmp_path)
        assert (first.phase, first.done, first.total, first.request_reuse) == ("generate", 6, 20, reuse)
        generate = Progress("generate", 10, "requests", initial=6, stream=io.StringIO())
        generate.update(10)
        generate.close()
    assert _read(tmp_path).request_reuse == reuse
    raw = json.loads((tmp_path / PROGRESS_NAME).read_text())
    assert raw["requestReuse"]["rowsReused"] == 6
    assert "savedUsd" not in raw["requestReuse"]  # unpriced: left out, as every absent field


def test_a_report_without_request_reuse_still_reads(tmp_path: Path) -> None:
    (tmp_path / PROGRESS_NAME).write_text(json.dumps({"phase": "qa", "unit": "steps", "done": 1, "total": 2}))
    assert _read(tmp_path).request_reuse is None  # an older worker's file, or another stage's
