"""The generate worker through the OpenAI Batch API: submit, poll, join, resubmit only failures, resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate.backends import ChatRequest
from datasweep.workloads.generate.batch_api import CRASH_ENV, InjectedCrash, split_into_batches
from datasweep.workloads.generate.inputs import GenerateFailed
from datasweep.workloads.generate.worker import run_generate

from .conftest import make_spec, read_jsonl, write_jsonl

FAST_POLL = {"backend": "openai-batch", "poll_interval": 0.01, "max_poll_interval": 0.02}


def batch_params(url: str, **extra):
    return {**FAST_POLL, "base_url": url, **extra}


def test_batch_rephrase_and_validate(api_key, spec_factory):
    with serve_openai() as server:
        spec = spec_factory(batch_params(server.url, model="gpt-4o-mini"))
        manifest = run_generate(spec)
        # one batch per phase, no sync requests, every request sent exactly once
        assert server.counts["POST /v1/batches"] == 2
        assert server.counts["POST /v1/files"] == 2
        assert server.counts["POST /v1/chat/completions"] == 0
        assert Counter(server.batch_request_log).most_common(1)[0][1] == 1
        assert len(server.batch_request_log) == 18
        batches = list(server.batches.values())
    assert all(b["completion_window"] == "24h" for b in batches)
    kept = read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")
    assert [r["idx"] for r in kept] == [1, 2, 4, 5]
    assert kept[0]["text"] == "rephrased: train premise number 1."
    metadata = json.loads((spec.output_path / "experiment_metadata.json").read_text())
    assert metadata["lineage"]["batch_ids"] == {"generate": [batches[0]["id"]], "validate": [batches[1]["id"]]}
    # the Batch API bills half price
    gen = metadata["usage"]["by_split"]["train"]["phases"]["generation"]
    full = (gen["prompt_tokens"] * 0.15 + gen["completion_tokens"] * 0.60) / 1e6
    assert gen["cost_usd"] == pytest.approx(full / 2, abs=1e-6)
    assert manifest.usage.requests == 18


def test_expired_batch_resubmits_only_unfinished_requests(api_key, spec_factory):
    behavior = ServerBehavior(expire_next_batches=1, expire_completed_fraction=0.5)
    with serve_openai(behavior) as server:
        spec = spec_factory(batch_params(server.url, validation=None))
        run_generate(spec)
        statuses = [b["status"] for b in server.batches.values()]
        sent = Counter(server.batch_request_log)
        assert statuses == ["expired", "completed"]
        # the first batch answered 4 of 9; only the other 5 went into the second batch
        second_input = server.state.file_bytes[list(server.batches.values())[1]["input_file_id"]]
        assert len(second_input.decode().splitlines()) == 5
        assert sum(sent.values()) == 9 + 5
        assert max(sent.values()) == 2
    assert len(read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")) == 6


def test_partial_failures_are_resubmitted_alone(api_key, spec_factory):
    failing = {"gen:train:1:text", "gen:validation:2:text"}
    with serve_openai(ServerBehavior(fail_custom_ids_once=set(failing))) as server:
        spec = spec_factory(batch_params(server.url, validation=None))
        run_generate(spec)
        batches = list(server.batches.values())
        assert len(batches) == 2
        assert batches[0]["request_counts"] == {"total": 9, "completed": 7, "failed": 2}
        resent = server.state.file_bytes[batches[1]["input_file_id"]].decode().splitlines()
        assert {json.loads(line)["custom_id"] for line in resent} == failing
    assert len(read_jsonl(spec.output_path / "Copa" / "copa_validation.jsonl")) == 3


def test_failed_batch_then_attempts_exhausted_fails_without_marking_complete(api_key, spec_factory):
    behavior = ServerBehavior(always_fail_custom_ids={"gen:train:0:text"})
    with serve_openai(behavior) as server:
        spec = spec_factory(batch_params(server.url, validation=None, max_batch_attempts=2))
        with pytest.raises(GenerateFailed, match="1 of 9 requests failed"):
            run_generate(spec)
        assert server.counts["POST /v1/batches"] == 2
    assert read_manifest(spec.output_path) is None


def test_restart_resumes_the_same_batch(api_key, spec_factory, monkeypatch):
    """A worker killed after submitting polls the same batch when restarted: nothing is submitted twice."""
    with serve_openai() as server:
        spec = spec_factory(batch_params(server.url, validation=None))
        monkeypatch.setenv(CRASH_ENV, "batch-submitted")
        with pytest.raises(InjectedCrash):
            run_generate(spec)
        state = json.loads((spec.output_path / ".work" / "batches-generate.json").read_text())
        (first,) = state["submissions"]
        assert first["batch_id"] in server.batches
        assert server.batches[first["batch_id"]]["status"] == "validating"  # never polled
        monkeypatch.delenv(CRASH_ENV)
        run_generate(spec)
        assert server.counts["POST /v1/batches"] == 1
        assert server.counts["POST /v1/files"] == 1
        assert server.batches[first["batch_id"]]["status"] == "completed"
        assert len(server.batch_request_log) == 9
    assert read_manifest(spec.output_path) is not None


def test_crash_between_create_and_persist_finds_the_batch_by_metadata(api_key, spec_factory, monkeypatch):
    with serve_openai() as server:
        spec = spec_factory(batch_params(server.url, validation=None))
        monkeypatch.setenv(CRASH_ENV, "batch-created")
        with pytest.raises(InjectedCrash):
            run_generate(spec)
        state = json.loads((spec.output_path / ".work" / "batches-generate.json").read_text())
        assert state["submissions"][0]["batch_id"] is None  # the id never reached the disk
        monkeypatch.delenv(CRASH_ENV)
        run_generate(spec)
        assert server.counts["POST /v1/batches"] == 1
        assert server.counts["GET /v1/batches"] >= 1  # looked up by metadata.datasweep_key
        assert len(server.batch_request_log) == 9


def test_recovery_key_is_unique_per_artifact(api_key, tmp_path, dataset_dir, monkeypatch):
    """Issue 15, defect 5: Copa and CB share the semantic directory name; a CB worker that crashed between
    `batches.create` and saving the id must find its own batch, not Copa's newer one with the same key."""
    cb_source = tmp_path / "source" / "cb"
    write_jsonl(cb_source / "cb_train.jsonl", [{"idx": i, "text": f"cb hypothesis {i}."} for i in range(3)])
    with serve_openai() as server:
        params = batch_params(server.url, validation=None)
        copa = make_spec(tmp_path, dataset_dir, params, name="Copa/temp07_topp10_gpt4o")
        cb = make_spec(tmp_path, cb_source, params, name="CB/temp07_topp10_gpt4o", dataset="CB")
        monkeypatch.setenv(CRASH_ENV, "batch-created")
        with pytest.raises(InjectedCrash):
            run_generate(cb)
        monkeypatch.delenv(CRASH_ENV)
        run_generate(copa)  # its batch is newer: listed first
        run_generate(cb)
        assert server.counts["POST /v1/batches"] == 2  # CB adopted its own batch, nobody paid twice
        keys = [b["metadata"]["datasweep_key"] for b in server.batches.values()]
    assert len(set(keys)) == 2
    assert keys[0].startswith(cb.fingerprint)
    assert keys[1].startswith(copa.fingerprint)
    texts = [r["text"] for r in read_jsonl(cb.output_path / "CB" / "cb_train.jsonl")]
    assert texts == [f"rephrased: cb hypothesis {i}." for i in range(3)]


def test_large_inputs_are_split_by_count_and_bytes():
    requests = [
        ChatRequest(f"gen:train:{i}:text", {"model": "m", "messages": [{"role": "user", "content": "x" * 100}]})
        for i in range(10)
    ]
    by_count = split_into_batches(requests, max_requests=4, max_bytes=10**6)
    assert [len(chunk) for chunk in by_count] == [4, 4, 2]
    line_bytes = len(by_count[0][0][1].encode())
    by_bytes = split_into_batches(requests, max_requests=50_000, max_bytes=3 * line_bytes)
    assert [len(chunk) for chunk in by_bytes] == [3, 3, 3, 1]


def test_split_batches_end_to_end(api_key, spec_factory):
    with serve_openai() as server:
        spec = spec_factory(batch_params(server.url, validation=None, max_batch_requests=4))
        run_generate(spec)
        assert server.counts["POST /v1/batches"] == 3
        assert len(server.batch_request_log) == 9
    metadata = json.loads((spec.output_path / "experiment_metadata.json").read_text())
    assert len(metadata["lineage"]["batch_ids"]["generate"]) == 3


def test_a_rerun_after_the_attempts_ran_out_sends_the_failed_requests_again(api_key, spec_factory):
    """Issue 22: the attempts of a run that gave up do not carry over; after a fix the rerun sends exactly the
    failed requests again (never the answered ones) and completes."""
    failing = "gen:train:0:text"
    behavior = ServerBehavior(always_fail_custom_ids={failing})
    with serve_openai(behavior) as server:
        spec = spec_factory(batch_params(server.url, validation=None, max_batch_attempts=2))
        with pytest.raises(GenerateFailed, match="1 of 9 requests failed"):
            run_generate(spec)
        assert Counter(server.batch_request_log)[failing] == 2
        assert server.counts["POST /v1/batches"] == 2
        behavior.always_fail_custom_ids.clear()  # the cause is fixed (a quota raised, a bad request corrected)
        manifest = run_generate(spec)
        assert server.counts["POST /v1/batches"] == 3
        third = list(server.batches.values())[2]
        resent = server.state.file_bytes[third["input_file_id"]].decode().splitlines()
        assert [json.loads(line)["custom_id"] for line in resent] == [failing]
        assert Counter(server.batch_request_log)[failing] == 3
        assert max(count for custom_id, count in Counter(server.batch_request_log).items() if custom_id != failing) == 1
    assert manifest.usage.requests == 9
    assert read_manifest(spec.output_path) is not None
