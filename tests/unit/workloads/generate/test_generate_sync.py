"""The generate worker through synchronous chat completions (OpenAI and OpenAI-compatible) end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import Fault, ServerBehavior, serve_openai
from datasweep.workloads.generate.worker import run_generate

from .conftest import make_spec, read_jsonl, write_jsonl, write_spec


def test_rephrase_and_validate_writes_the_artifact_layout(api_key, openai_server, spec_factory):
    spec = spec_factory({"base_url": openai_server.url, "model": "gpt-4o", "temperature": 0.7})
    manifest = run_generate(spec)
    out = spec.output_path

    kept = read_jsonl(out / "Copa" / "copa_train.jsonl")
    rejected = read_jsonl(out / "rejected" / "copa_train.jsonl")
    assert [r["idx"] for r in kept] == [1, 2, 4, 5]
    assert [r["idx"] for r in rejected] == [0, 3]
    first = kept[0]
    assert first["text"] == "rephrased: train premise number 1."
    assert first["original_text"] == "train premise number 1."
    assert first["question"] == "cause"
    assert first["label"] == 1
    assert first["validation"]["verdict"] == "keep"
    assert rejected[0]["validation"] == {
        "verdict": "reject",
        "reason": "The rephrased text contains the reject marker.",
    }
    assert len(read_jsonl(out / "Copa" / "copa_validation.jsonl")) == 3
    assert not (out / "Copa" / "copa_test.jsonl").exists()

    # one generation + one validation request per record, nothing more
    assert openai_server.counts["POST /v1/chat/completions"] == 2 * 9

    metadata = json.loads((out / "experiment_metadata.json").read_text())
    assert metadata["fingerprint"] == spec.fingerprint
    assert metadata["batch"] == "batch_20241229_temperature"
    assert metadata["semantic_name"] == "temp07_topp10_gpt4o"
    assert metadata["params"]["temperature"] == 0.7
    assert len(metadata["params"]["prompt_sha256"]) == 64
    assert metadata["lineage"]["source_files"]["train"]["records"] == 6
    train_usage = metadata["usage"]["by_split"]["train"]
    assert train_usage["requests"] == 12
    assert train_usage["prompt_tokens"] > 0
    assert train_usage["completion_tokens"] > 0
    assert train_usage["cost_usd"] > 0  # gpt-4o is in the default price table
    assert metadata["usage"]["cost_complete"] is True
    config = yaml.safe_load((out / "generation_config.yaml").read_text())
    assert config["generation"]["model"] == "gpt-4o"
    assert config["validation"]["model"] == "gpt-4o"
    assert "Copa" in (out / "README.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["train"] == {"records": 6, "generated": 6, "kept": 4, "rejected": 2, "skipped": {}}

    assert read_manifest(out) is not None
    assert manifest.usage.requests == 18
    assert manifest.usage.prompt_tokens == metadata["usage"]["prompt_tokens"]
    assert manifest.usage.cost_usd == pytest.approx(metadata["usage"]["cost_usd"])
    assert manifest.extra["usage_by_split"]["validation"]["requests"] == 6
    assert (out / ".fingerprint").read_text().strip() == spec.fingerprint

    # a rerun of a complete artifact does nothing and pays nothing
    run_generate(spec)
    assert openai_server.counts["POST /v1/chat/completions"] == 18


def test_price_override_and_no_validation(api_key, openai_server, spec_factory):
    spec = spec_factory(
        {
            "base_url": openai_server.url,
            "model": "my-model",
            "validation": None,
            "prices": {"my-model": {"input_per_million": 1000000.0, "output_per_million": 0.0}},
        }
    )
    manifest = run_generate(spec)
    kept = read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")
    assert len(kept) == 6  # no judge: everything kept
    assert kept[0]["validation"] is None
    assert openai_server.counts["POST /v1/chat/completions"] == 9
    # 1 USD per prompt token
    assert manifest.usage.cost_usd == pytest.approx(manifest.usage.prompt_tokens)


def test_code_scenarios_through_openai_compatible(api_key, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")  # a self-hosted server needs no key
    source = tmp_path / "slices"
    slices = [
        {"id": "f1", "type": "function", "code": "def add(a, b):\n    return a + b"},
        {"id": "c1", "type": "class", "code": "class Stack:\n    pass"},
        {"id": "f2", "type": "function", "code": "def sub(a, b):\n    return a - b"},
        {"id": "m1", "type": "module", "code": "import os"},
        {"id": "f3", "type": "function", "code": "def mul(a, b):\n    return a * b"},
    ]
    write_jsonl(source / "slices_train.jsonl", slices)
    with serve_openai() as server:
        spec = make_spec(
            tmp_path,
            source,
            {
                "task": "code-scenarios",
                "backend": "openai-compatible",
                "base_url": server.url,
                "model": "qwen-coder",
                "max_scenario1": 2,
                "validation": None,
            },
            dataset="Slices",
        )
        manifest = run_generate(spec)
        assert server.counts["POST /v1/chat/completions"] == 3
    records = read_jsonl(spec.output_path / "Slices" / "slices_train.jsonl")
    assert [(r["id"], r["scenario"]) for r in records] == [
        ("f1", "scenario1"),
        ("c1", "scenario2"),
        ("f2", "scenario1"),
    ]
    assert records[0]["response"] == "rephrased: return a + b"
    assert records[1]["code"] == "class Stack:\n    pass"
    report = json.loads((spec.output_path / "report.json").read_text())
    assert report["splits"]["train"]["skipped"] == {"type module": 1, "scenario1 cap 2": 1}
    assert manifest.usage.cost_usd == 0.0  # self-hosted and unpriced


def test_429_retry_after_is_honoured_and_500_retried(api_key, tmp_path):
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": "a", "text": "one"}])
    behavior = ServerBehavior(
        chat_faults=[Fault(429, retry_after=0.6), Fault(429, retry_after_ms=300), Fault(500), Fault(503)]
    )
    with serve_openai(behavior) as server:
        spec = make_spec(tmp_path, source, {"base_url": server.url, "validation": None, "concurrency": 1})
        run_generate(spec)
        assert server.counts["POST /v1/chat/completions"] == 5  # 429, 429, 500, 503, then the answer
        arrivals = server.state.chat_arrivals
    # the SDK waited at least what retry-after / retry-after-ms said before retrying
    assert arrivals[1] - arrivals[0] >= 0.6
    assert arrivals[2] - arrivals[1] >= 0.3
    assert read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")[0]["text"] == "rephrased: one"


def test_retries_exhausted_fail_with_exit_1_and_keep_answers(api_key, tmp_path):
    from click.testing import CliRunner

    from datasweep.workloads.generate.cli import main

    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}])
    behavior = ServerBehavior(chat_faults=[Fault(500), Fault(500)])
    with serve_openai(behavior) as server:
        spec = make_spec(
            tmp_path, source, {"base_url": server.url, "validation": None, "concurrency": 1, "max_retries": 1}
        )
        spec_file = write_spec(spec, tmp_path / "spec.yaml")
        result = CliRunner().invoke(main, ["--spec", str(spec_file)])
        assert result.exit_code == 1, result.output
        assert "failed after retries" in result.output
        assert read_manifest(spec.output_path) is None  # partial output is never marked complete
        answered = read_jsonl(spec.output_path / ".work" / "generate.jsonl")
        assert [entry["custom_id"] for entry in answered] == ["gen:train:b:text"]
        # the rerun only sends the failed request
        before = server.counts["POST /v1/chat/completions"]
        result = CliRunner().invoke(main, ["--spec", str(spec_file)])
        assert result.exit_code == 0, result.output
        assert server.counts["POST /v1/chat/completions"] - before == 1


def test_resume_after_kill_repeats_only_requests_in_flight(api_key, tmp_path):
    """SIGKILL the worker mid-run; the restart sends only what was never answered (plus at most those in flight)."""
    source = tmp_path / "src"
    total = 40
    write_jsonl(source / "copa_train.jsonl", [{"id": f"r{i}", "text": f"sentence {i}"} for i in range(total)])
    concurrency = 4
    with serve_openai(ServerBehavior(latency_s=0.05)) as server:
        spec = make_spec(tmp_path, source, {"base_url": server.url, "validation": None, "concurrency": concurrency})
        spec_file = write_spec(spec, tmp_path / "spec.yaml")
        journal = spec.output_path / ".work" / "generate.jsonl"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "datasweep.workloads.generate", "--spec", str(spec_file)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if journal.exists() and len(journal.read_text().splitlines()) >= 8:
                    break
                if process.poll() is not None:
                    break
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        assert read_manifest(spec.output_path) is None
        answered_before = {entry["custom_id"] for entry in read_jsonl(journal)}
        assert 8 <= len(answered_before) < total
        first_run_requests = server.counts["POST /v1/chat/completions"]

        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    texts = Counter(body["messages"][-1]["content"].rsplit("Text: ", 1)[-1] for body in server.chat_log)
    repeated = [text for text, count in texts.items() if count > 1]
    # only requests that were in flight (sent, answer not yet journaled) at the kill are sent again
    in_flight = first_run_requests - len(answered_before)
    assert len(repeated) <= in_flight <= 2 * concurrency
    assert not any(f"sentence {cid.split(':')[2][1:]}" in repeated for cid in answered_before)
    assert server.counts["POST /v1/chat/completions"] == total + len(repeated)
    assert len(read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")) == total
