"""Request-level reuse: a generate worker on the shared layout sends only requests no identical request answered."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from datasweep.store.manifest import read_manifest
from datasweep.store.progress import REQUEST_REUSE_KEY, ProgressReport, RequestReuseCounts, read_progress
from datasweep.store.requests import Compaction, RequestStore, StoredAnswer, referenced_identities
from datasweep.workloads.generate.backends import ChatCompletionsBackend
from datasweep.workloads.generate.worker import run_generate
from datasweep.workloads.progress import recording_progress

from .conftest import copa_records, make_spec, read_jsonl, write_jsonl

CHAT = "POST /v1/chat/completions"


def shared_spec(tmp_path, source, server, name, **params):
    """A worker spec whose outputDir is <root>/_shared/Copa/<name>, as the operator and the local runner lay out."""
    return make_spec(
        tmp_path, source, {"base_url": server.url, "temperature": 0.7, **params}, name=f"root/_shared/Copa/{name}"
    )


def sent(server) -> int:
    return server.counts[CHAT]


def test_a_second_point_with_identical_requests_sends_none(api_key, openai_server, tmp_path, dataset_dir):
    first = run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "first"))
    assert sent(openai_server) == 18
    assert first.extra["savedByReuse"]["requests"] == 0
    assert first.usage.requests == 18
    assert RequestStore.under(tmp_path / "root" / "_shared").count() == 18

    # another fingerprint (a changed operational knob would not make one; a new name stands for any other point)
    second_spec = shared_spec(tmp_path, dataset_dir, openai_server, "second", concurrency=3)
    second = run_generate(second_spec)
    assert sent(openai_server) == 18  # nothing more
    assert second.usage.requests == 0
    assert second.usage.prompt_tokens == 0
    saved = second.extra["savedByReuse"]
    assert saved["requests"] == 18
    assert saved["promptTokens"] == first.usage.prompt_tokens
    assert saved["costUsd"] > 0
    out = second_spec.output_path
    assert read_jsonl(out / "Copa" / "copa_train.jsonl") == read_jsonl(
        tmp_path / "root/_shared/Copa/first/Copa/copa_train.jsonl"
    )
    metadata = json.loads((out / "experiment_metadata.json").read_text())
    assert metadata["usage"]["savedByReuse"]["requests"] == 18


def test_a_grown_dataset_sends_only_the_new_rows(api_key, openai_server, tmp_path, dataset_dir):
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "before"))
    assert sent(openai_server) == 18
    grown = tmp_path / "grown"
    shutil.copytree(dataset_dir, grown)
    write_jsonl(grown / "copa_train.jsonl", copa_records(8, "train", reject_every=3))  # 2 more rows
    manifest = run_generate(shared_spec(tmp_path, grown, openai_server, "after"))
    assert sent(openai_server) == 18 + 2 * 2  # generation + validation of the 2 new rows
    assert manifest.usage.requests == 4
    assert manifest.extra["savedByReuse"]["requests"] == 18
    assert manifest.extra["counts"]["train"]["records"] == 8


def test_a_changed_validation_prompt_sends_no_generation_request(api_key, openai_server, tmp_path, dataset_dir):
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "before"))
    judge = {"prompt": "Strict judge. KEEP or REJECT?\nOriginal: {original}\nRephrased: {rephrased}"}
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "after", validation=judge))
    prompts = [entry["messages"][-1]["content"] for entry in openai_server.chat_log[18:]]
    assert len(prompts) == 9
    assert all(prompt.startswith("Strict judge.") for prompt in prompts)


def test_regenerating_a_deleted_artifact_sends_nothing(api_key, openai_server, tmp_path, dataset_dir, capsys):
    spec = shared_spec(tmp_path, dataset_dir, openai_server, "gone")
    run_generate(spec)
    kept = read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")
    shutil.rmtree(spec.output_path)  # journals included
    capsys.readouterr()
    manifest = run_generate(spec)
    assert sent(openai_server) == 18
    # each phase answered by the store still ends with its line in the log (`datasweep run` prints it)
    log = capsys.readouterr().err
    assert "generate: 9/9 requests (" in log, log
    assert "validate: 9/9 requests (" in log, log
    assert manifest.extra["savedByReuse"]["requests"] == 18
    assert read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl") == kept
    assert read_manifest(spec.output_path) is not None


def test_request_reuse_off_sends_every_request_and_cache_version_salts(api_key, openai_server, tmp_path, dataset_dir):
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "first"))
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "fresh", requestReuse=False))
    assert sent(openai_server) == 36
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "salted", cache_version="2"))
    assert sent(openai_server) == 54


def test_an_output_dir_outside_the_shared_layout_has_no_store(api_key, openai_server, tmp_path, dataset_dir):
    for name in ("a", "b"):
        run_generate(make_spec(tmp_path, dataset_dir, {"base_url": openai_server.url}, name=name))
    assert sent(openai_server) == 36
    assert not list(Path(tmp_path).rglob(".requests"))


def test_the_batch_api_submits_only_what_the_store_lacks(api_key, openai_server, tmp_path, dataset_dir):
    # sync chat completions and the Batch API serve the same models: one family, one store
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "sync", backend="openai"))
    grown = tmp_path / "grown"
    shutil.copytree(dataset_dir, grown)
    write_jsonl(grown / "copa_train.jsonl", copa_records(8, "train", reject_every=3))
    batch = {"backend": "openai-batch", "poll_interval": 0.01, "max_poll_interval": 0.02}
    manifest = run_generate(shared_spec(tmp_path, grown, openai_server, "batch", **batch))
    assert sorted(openai_server.batch_request_log) == [
        "gen:train:6:text",
        "gen:train:7:text",
        "val:train:6:text",
        "val:train:7:text",
    ]
    assert manifest.extra["savedByReuse"]["requests"] == 18
    # and what the batches answered is stored for the next point
    again = run_generate(shared_spec(tmp_path, grown, openai_server, "again", backend="openai"))
    assert again.usage.requests == 0
    assert sent(openai_server) == 18


def test_a_gc_while_a_worker_runs_keeps_what_it_looked_up_and_stored(
    api_key, openai_server, tmp_path, dataset_dir, monkeypatch
):
    shared = tmp_path / "root" / "_shared"
    store = RequestStore.under(shared)
    # generation only: a gc may drop answers no Artifact lists yet (the next phase's), which costs, never breaks
    before = shared_spec(tmp_path, dataset_dir, openai_server, "before", validation=None)
    run_generate(before)
    shutil.rmtree(before.output_path)  # its 9 answers: listed by no Artifact now
    orphan = "f" * 64
    store.put([StoredAnswer(orphan, "nobody uses me")])
    gcs: list[Compaction] = []

    def gc() -> None:  # the worst gc: no grace period, right after the worker touched the store
        gcs.append(store.compact(referenced_identities(shared), keep_after=None))

    lookup, put = RequestStore.lookup, RequestStore.put

    def lookup_then_gc(self: RequestStore, identities: Iterable[str]) -> dict[str, StoredAnswer]:
        found = lookup(self, identities)
        gc()
        return found

    def put_then_gc(self: RequestStore, answers: Iterable[StoredAnswer]) -> int:
        added = put(self, answers)
        gc()
        return added

    monkeypatch.setattr(RequestStore, "lookup", lookup_then_gc)
    monkeypatch.setattr(RequestStore, "put", put_then_gc)
    grown = tmp_path / "grown"
    shutil.copytree(dataset_dir, grown)
    write_jsonl(grown / "copa_train.jsonl", copa_records(8, "train", reject_every=3))  # 2 more rows
    manifest = run_generate(shared_spec(tmp_path, grown, openai_server, "running", validation=None))
    assert manifest.extra["savedByReuse"]["requests"] == 9
    assert sent(openai_server) == 9 + 2
    assert gcs[0].dropped == 1  # the gcs ran: the first dropped the orphan, and nothing the worker uses
    assert sum(c.dropped for c in gcs) == 1
    assert store.lookup([orphan]) == {}
    listed = referenced_identities(shared)
    assert len(listed) == 11
    assert set(store.lookup(listed)) == listed
    assert store.count() == 11


def test_answers_stored_after_a_gc_read_the_references_stay_for_the_grace_period(
    api_key, openai_server, tmp_path, dataset_dir
):
    shared = tmp_path / "root" / "_shared"
    store = RequestStore.under(shared)
    references = referenced_identities(shared)  # a gc lists the references before the worker starts...
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "running"))
    # ...and compacts once it has stored its answers: too late to see them listed, not too late to see them young
    assert store.compact(references, dry_run=True, keep_after=None).dropped == 18
    kept = store.compact(references, keep_after=datetime.now(UTC) - timedelta(hours=24))
    assert (kept.dropped, kept.recent) == (0, 18)
    assert store.count() == 18


@pytest.mark.parametrize("backend", ["openai-batch", "openai"])
def test_identical_requests_of_one_artifact_are_paid_once_and_fill_both(api_key, openai_server, tmp_path, backend):
    source = tmp_path / "duplicates" / "copa"
    records = copa_records(4, "train")
    records.append({**records[1], "idx": 99})  # row 1's text again, under another id
    write_jsonl(source / "copa_train.jsonl", records)
    params = {"backend": backend, "poll_interval": 0.01, "max_poll_interval": 0.02}
    manifest = run_generate(shared_spec(tmp_path, source, openai_server, "duplicates", **params))
    if backend == "openai-batch":
        assert sorted(openai_server.batch_request_log) == [
            f"{phase}:train:{index}:text" for phase in ("gen", "val") for index in range(4)
        ]
    else:
        assert sent(openai_server) == 2 * 4
    assert manifest.usage.requests == 2 * 4
    assert manifest.extra["savedByReuse"]["requests"] == 2  # row 99's generation and validation
    rows = {row["idx"]: row for row in read_jsonl(tmp_path / "root/_shared/Copa/duplicates/Copa/copa_train.jsonl")}
    assert set(rows) == {0, 1, 2, 3, 99}
    assert rows[99]["text"] == rows[1]["text"] != records[1]["text"]  # the one answer fills both


def test_a_resumed_worker_takes_an_identical_answered_requests_answer(api_key, openai_server, tmp_path):
    source = tmp_path / "duplicates" / "copa"
    records = copa_records(2, "train")
    write_jsonl(source / "copa_train.jsonl", [*records, {**records[1], "idx": 99}])
    spec = shared_spec(tmp_path, source, openai_server, "resumed", validation=None, requestReuse=False)
    run_generate(spec)  # lookups off: every request is a fresh draw, sent
    assert sent(openai_server) == 3
    journal = spec.output_path / ".work" / "generate.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("".join(line + "\n" for line in lines if '"gen:train:99:text"' not in line))
    (spec.output_path / "manifest.json").unlink()  # as if it died before its last answer was journaled
    shutil.rmtree(tmp_path / "root" / "_shared" / ".requests")  # and before it stored its answers
    spec.params["requestReuse"] = True
    manifest = run_generate(spec)
    assert sent(openai_server) == 3  # row 99 took row 1's answer from the journal
    assert manifest.extra["counts"]["train"]["records"] == 3
    entries = {entry["custom_id"]: entry for entry in read_jsonl(journal)}
    assert entries["gen:train:99:text"]["reused"] is True
    assert entries["gen:train:99:text"]["text"] == entries["gen:train:1:text"]["text"]


def test_the_reuse_report_is_in_the_progress_file_before_anything_is_sent(
    api_key, openai_server, tmp_path, dataset_dir, monkeypatch
):
    run_generate(shared_spec(tmp_path, dataset_dir, openai_server, "before"))  # 9 rows, 18 requests
    grown = tmp_path / "grown"
    shutil.copytree(dataset_dir, grown)
    write_jsonl(grown / "copa_train.jsonl", copa_records(8, "train", reject_every=3))  # 2 more rows
    spec = shared_spec(tmp_path, grown, openai_server, "after")
    seen: list[tuple[str, int, ProgressReport | None]] = []
    send = ChatCompletionsBackend.run

    async def run(self, requests, journal):
        seen.append((requests[0].custom_id.split(":")[0], sent(openai_server), read_progress(spec.output_path)))
        return await send(self, requests, journal)

    monkeypatch.setattr(ChatCompletionsBackend, "run", run)
    with recording_progress(spec.output_path):
        manifest = run_generate(spec)
    (phase, chats, report), (judge_phase, _, later) = seen
    assert (phase, chats, judge_phase) == ("gen", 18, "val")
    assert report is not None
    assert later is not None
    saved = manifest.extra["savedByReuse"]
    assert report.request_reuse is not None
    assert report.request_reuse.model_copy(update={"saved_usd": None}) == RequestReuseCounts(
        requests=22,
        stored=18,
        to_send=4,
        rows=11,
        rows_reused=9,
        saved_tokens=saved["promptTokens"] + saved["completionTokens"],
    )
    assert report.request_reuse.saved_usd == pytest.approx(saved["costUsd"], abs=1e-5)  # savedByReuse: per split
    # the judge's lookup found nothing more; the 2 new rows' generations were sent meanwhile
    assert later.request_reuse == report.request_reuse.model_copy(update={"to_send": 2})
    final = manifest.extra[REQUEST_REUSE_KEY]
    assert (final["stored"], final["toSend"], final["rowsReused"]) == (18, 0, 9)
