"""`datasweep watch` on what the real local runner and generate worker wrote (the local OpenAI test server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, fake_worker_command, generation, write_copa

from conftest import Invoke
from datasweep.cli.watch import snapshot_of_experiment
from datasweep.store.manifest import read_manifest
from datasweep.store.progress import read_progress

BATCH = "batch_20250107_watch"


def spec(base_url: str | None, **grid: Any) -> dict[str, Any]:
    section = generation(base_url, **grid)
    if base_url is not None:  # a self-hosted endpoint costs what it is priced at
        section["options"]["prices"] = {"gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0}}
    return {"batch": BATCH, "datasets": copa_dataset(), "generation": section}


def test_a_finished_sweep_with_its_dollars_and_the_workers_last_reports(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke, openai_server: Any
) -> None:
    pytest.importorskip("datasweep.workloads.generate.worker", reason="the generate worker is not in this tree")
    root = workspace / "root"
    experiment = write_experiment("watch-done", {**spec(openai_server.url, temperature=[0.5, 0.7])})
    invoke("run", experiment, "--root", root, "--jobs", "2")
    manifests = [read_manifest(d) for d in sorted((root / "_shared" / "Copa").iterdir())]
    assert all(m is not None for m in manifests)
    paid = round(sum(m.usage.cost_usd for m in manifests if m is not None), 6)
    tokens = sum(m.usage.prompt_tokens + m.usage.completion_tokens for m in manifests if m is not None)
    assert paid > 0

    # each worker left its last report: the whole stage done, what it spent
    for directory in sorted((root / "_shared" / "Copa").iterdir()):
        last = read_progress(directory)
        assert last is not None
        assert (last.unit, last.done) == ("requests", last.total)
        assert last.total > 0
        assert (last.cost_usd or 0) > 0

    text = invoke("watch", "watch-done", "--root", root, "--once").stdout
    assert text.startswith("watch-done: 2 points: 2 succeeded, 0 running, 0 pending, 0 failed; 100% done; ")
    assert f"${paid:.4f} so far ({tokens:,} tokens)" in text
    assert "finished" in text
    snapshot = json.loads(invoke("watch", "watch-done", "--root", root, "--once", "-o", "json").stdout)
    assert snapshot["finished"] is True
    assert snapshot["progress"]["costUsd"] == pytest.approx(paid)
    # followed (not --once), a finished sweep prints once and exits with its outcome
    assert "finished" in invoke("watch", "watch-done", "--root", root, "--interval", "0.5").stdout


def test_failures_with_their_reason_and_exit_code_1(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    experiment = write_experiment("watch-fail", spec(None, temperature=[0.5, 0.7]))
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command("fail"), expect=1)
    result = invoke("watch", "watch-fail", "--root", root, "--once", expect=1)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("watch-fail: 2 points: 0 succeeded, 0 running, 0 pending, 2 failed; 0% done")
    assert "finished with failures" in lines[0]
    failed = [line for line in lines if line.startswith("  FAILED ")]
    assert len(failed) == 2
    assert "(generate): WorkerFailed: simulated failure: the model diverged (log: " in failed[0]
    assert invoke("watch", "watch-fail", "--root", root, expect=1).exit_code == 1


def test_an_unknown_experiment_is_named_with_the_known_ones(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    root = workspace / "root"
    invoke(
        "run",
        write_experiment("known", spec(None, temperature=0.5)),
        "--root",
        root,
        "--worker-command",
        fake_worker_command(),
    )
    result = invoke("watch", "nope", "--root", root, "--once", expect=2)
    assert "no experiment 'nope' in the local store" in result.output
    assert "(it has: known)" in result.output
    assert "no such directory" in invoke("watch", "x", "--root", workspace / "missing", expect=2).output


def test_a_running_sweep_mid_run_then_followed_to_the_end(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    """A slow server (latency per request): `watch --once` sees requests done, dollars and a percent between
    0 and 100 while the real worker runs; `watch` then follows it until it finishes."""
    pytest.importorskip("datasweep.workloads.generate.worker", reason="the generate worker is not in this tree")
    from datasweep.testing.openai_server import ServerBehavior, serve_openai

    write_copa(workspace / "raw" / "superglue" / "copa", rows=30)
    root = workspace / "root"
    with serve_openai(ServerBehavior(latency_s=0.25)) as server:
        experiment = write_experiment("watch-live", spec(server.url, temperature=[0.5, 0.7]))
        env = {**os.environ, "DATASWEEP_PROGRESS_FILE_INTERVAL": "0"}
        run = subprocess.Popen(
            [sys.executable, "-m", "datasweep", "run", str(experiment), "--root", str(root)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            mid = None
            deadline = time.monotonic() + 120
            while mid is None and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                if not (root / ".datasweep" / "artifacts").is_dir():
                    continue
                looked = invoke("watch", "watch-live", "--root", root, "--once", "-o", "json", expect=None)
                if looked.exit_code != 0:
                    continue  # not registered yet
                snapshot = json.loads(looked.stdout)
                if snapshot["running"] and 0 < snapshot["progress"]["requestsDone"] < 64:
                    mid = snapshot
            assert mid is not None, "never saw the sweep mid-run"
            assert mid["finished"] is False
            assert mid["progress"]["requestsTotal"] == 32  # the running point's requests (one job at a time)
            assert 0 <= mid["progress"]["percent"] < 100
            assert mid["progress"]["costUsd"] > 0
            followed = invoke("watch", "watch-live", "--root", root, "--interval", "0.5")
        finally:
            if run.poll() is None:
                run.wait(timeout=120)
        assert run.returncode == 0, run.stderr.read().decode() if run.stderr else ""
    lines = followed.stdout.splitlines()
    assert lines[-1].startswith("watch-live: 2 points: 2 succeeded")
    assert lines[-1].endswith("finished")
    assert len(lines) >= 2  # it printed while the sweep ran, then the end


def test_a_cluster_experiment_status_reads_as_a_snapshot() -> None:
    obj = {
        "metadata": {"name": "sweep", "generation": 2},
        "status": {
            "observedGeneration": 2,
            "batch": "batch-x",
            "conditions": [{"type": "Planned", "status": "True"}],
            "counts": {"points": 4, "pending": 1, "running": 2, "succeeded": 0, "failed": 1},
            "progress": {"percent": 37, "summary": "37%", "cost": "$0.0100", "costUsd": 0.01, "etaSeconds": 90},
            "failures": {"total": 1, "items": [{"artifact": "g1", "stage": "generate", "reason": "JobFailed"}]},
        },
    }
    snapshot = snapshot_of_experiment(obj)
    assert not snapshot.finished
    assert snapshot.exit_code == 1
    assert snapshot.lines() == [
        "sweep: 4 points: 0 succeeded, 2 running, 1 pending, 1 failed; 37% done; $0.0100 so far (0 tokens); ETA 1m30s",
        "  FAILED g1 (generate): JobFailed",
    ]
    stale = {**obj, "metadata": {"name": "sweep", "generation": 3}}
    assert snapshot_of_experiment(stale).headline() == "sweep: not planned yet"
    invalid = {
        "metadata": {"name": "bad", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Planned", "status": "False", "reason": "InvalidSpec", "message": "spec.datasets: empty"},
                {"type": "Failed", "status": "True", "reason": "InvalidSpec"},
            ],
        },
    }
    bad = snapshot_of_experiment(invalid)
    assert bad.finished
    assert bad.exit_code == 1
    assert bad.headline() == "bad: FAILED: InvalidSpec: spec.datasets: empty"
