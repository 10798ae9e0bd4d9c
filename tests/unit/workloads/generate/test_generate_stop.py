"""SIGTERM (a suspended or deleted Job) ends the generate worker cleanly: the requests in flight are cancelled,
every answer received is on disk in the journal, the exit code is 143, and a rerun sends only what was in
flight. An openai-batch run cancels its remote batches; they count as no attempt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import ServerBehavior, serve_openai
from datasweep.workloads.generate.backends import ChatCompletionsBackend, ChatRequest, make_async_client
from datasweep.workloads.generate.journal import Journal
from datasweep.workloads.generate.worker import run_generate, run_phase
from datasweep.workloads.stopping import Stopped, run_until_stopped

from .conftest import make_spec, read_jsonl, write_jsonl, write_spec

CHAT = "POST /v1/chat/completions"


def test_sigterm_cancels_the_work_after_its_cleanup_and_exits_143() -> None:
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(Stopped) as stopped:
        asyncio.run(run_until_stopped(work()))
    assert time.monotonic() - started < 10
    assert cleaned == [True]
    assert stopped.value.code == 143
    assert str(stopped.value) == "stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_mid_phase_leaves_every_received_answer_in_the_journal(tmp_path: Path) -> None:
    requests = [
        ChatRequest(f"gen:train:{i}:text", {"model": "m", "messages": [{"role": "user", "content": f"t{i}"}]})
        for i in range(60)
    ]
    with serve_openai(ServerBehavior(latency_s=0.05)) as server:
        journal_path = tmp_path / "generate.jsonl"

        async def phase() -> Journal:
            journal = Journal(journal_path)
            backend = ChatCompletionsBackend(make_async_client("k", server.url, 0, 10.0), concurrency=4)

            async def stop_midway() -> None:
                while len(journal.done) < 10:
                    await asyncio.sleep(0.005)
                os.kill(os.getpid(), signal.SIGTERM)

            asyncio.get_running_loop().create_task(stop_midway())
            await run_phase(backend, requests, journal, "generate")
            return journal

        with pytest.raises(Stopped):
            asyncio.run(run_until_stopped(phase()))
        sent = server.counts[CHAT]
    on_disk = read_jsonl(journal_path)
    assert 10 <= len(on_disk) < len(requests)
    assert len({entry["custom_id"] for entry in on_disk}) == len(on_disk)
    assert sent - len(on_disk) <= 4  # only the requests in flight were not journaled


def test_the_worker_stops_on_sigterm_and_a_rerun_resends_only_what_was_in_flight(api_key: str, tmp_path: Path) -> None:
    source = tmp_path / "src"
    total = 40
    write_jsonl(source / "copa_train.jsonl", [{"id": f"r{i}", "text": f"sentence {i}"} for i in range(total)])
    concurrency = 4
    with serve_openai(ServerBehavior(latency_s=0.05)) as server:
        spec = make_spec(tmp_path, source, {"base_url": server.url, "validation": None, "concurrency": concurrency})
        spec_file = write_spec(spec, tmp_path / "spec.yaml")
        journal = spec.output_path / ".work" / "generate.jsonl"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "datasweep", "worker", "generate", "--spec", str(spec_file)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (journal.exists() and len(journal.read_text().splitlines()) >= 8):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the worker did not start answering"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 143, stderr
        assert "stopped by SIGTERM" in stderr
        assert "a rerun sends only the rest" in stderr
        assert read_manifest(spec.output_path) is None
        answered = len(read_jsonl(journal))
        first_run = server.counts[CHAT]
        assert first_run - answered <= concurrency  # every answer received was journaled
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert server.counts[CHAT] - total <= concurrency  # paid twice: at most those in flight at the stop
    assert len(read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")) == total


def test_a_stopped_batch_run_cancels_its_batches_which_count_as_no_attempt(
    api_key: str, spec_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    behavior = ServerBehavior(hold_batches=True)
    with serve_openai(behavior) as server:
        params = {
            "backend": "openai-batch",
            "poll_interval": 0.01,
            "max_poll_interval": 0.02,
            "base_url": server.url,
            "validation": None,
            "max_batch_attempts": 1,  # a cancelled batch counted as an attempt would fail the rerun
        }
        spec = spec_factory(params)

        def stop_when_submitted() -> None:
            deadline = time.monotonic() + 30
            while not any(b["status"] == "in_progress" for b in list(server.batches.values())):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_when_submitted, daemon=True).start()
        with pytest.raises(Stopped):
            run_generate(spec)
        (batch,) = server.batches.values()
        assert batch["status"] == "cancelling"  # stopped spending
        assert server.counts["POST /v1/batches/{batch_id}/cancel"] == 1
        state = json.loads((spec.output_path / ".work" / "batches-generate.json").read_text())
        assert state["submissions"][0]["stopped"] is True

        behavior.hold_batches = False
        run_generate(spec)  # polls the cancelled batch to its end, then sends its requests again
        statuses = [b["status"] for b in server.batches.values()]
        assert statuses == ["cancelled", "completed"]
    assert read_manifest(spec.output_path) is not None
    assert len(read_jsonl(spec.output_path / "Copa" / "copa_train.jsonl")) == 6
