"""Request-level reuse end to end on one machine: `datasweep run` with the real generate worker against the local
OpenAI-compatible test server, counting the chat requests the server received."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, generation, write_copa

from datasweep.store.requests import RequestStore

CHAT = "POST /v1/chat/completions"


def manifests(root: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((root / "_shared" / "Copa").glob("*/manifest.json"))]


def test_a_dataset_grown_by_10_percent_sends_only_the_new_rows(workspace, write_experiment, invoke, openai_server):
    source = write_copa(workspace / "raw" / "superglue" / "copa", rows=20)  # 20 + 1 + 1 records
    spec = {
        "batch": "batch_20241229_reuse",
        "datasets": copa_dataset(),
        "generation": generation(openai_server.url, temperature=0.7),
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }
    experiment = write_experiment("copa-reuse", spec)
    root = workspace / "root"

    start = openai_server.counts[CHAT]
    invoke("run", experiment, "--root", root)
    assert openai_server.counts[CHAT] - start == 2 * 22  # generation + validation of every record

    write_copa(source, rows=22)  # two more train rows: a new dataset hash, a new point
    planned = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    (estimate,) = [stage["estimate"] for stage in planned["stages"]]
    assert (estimate["requests"], estimate["storedRequests"]) == (2 * 2, 2 * 22)
    assert estimate["savedByReuseUsd"] is None  # a self-hosted model is unpriced
    assert planned["totals"]["storedRequests"] == 2 * 22
    table = invoke("plan", experiment, "--root", root).stdout
    assert "4 to send, 44 stored" in table
    start = openai_server.counts[CHAT]
    invoke("run", experiment, "--root", root)
    assert openai_server.counts[CHAT] - start == 2 * 2
    grown = [m for m in manifests(root) if m["extra"]["savedByReuse"]["requests"]]
    assert len(manifests(root)) == 2
    assert len(grown) == 1
    assert grown[0]["extra"]["savedByReuse"]["requests"] == 2 * 22
    assert grown[0]["usage"]["requests"] == 2 * 2
    assert grown[0]["extra"]["counts"]["train"]["records"] == 22

    # the opt-out: at another temperature (a new point) the validation requests are the stored ones (the test
    # server's rephrasing does not depend on it), yet with requestReuse off every request is sent
    fresh = {**spec, "generation": {**spec["generation"], "options": {"concurrency": 4, "requestReuse": False}}}
    fresh["generation"]["temperature"] = 0.5
    start = openai_server.counts[CHAT]
    invoke("run", write_experiment("copa-fresh", fresh), "--root", root)
    assert openai_server.counts[CHAT] - start == 2 * 24

    # gc: once the fresh point leaves its batch, its Artifact goes, and so do the answers only it used
    store = RequestStore.under(root / "_shared")
    assert store.count() == 2 * 24 + 24  # the fresh point's validation answers were stored already
    invoke("unlink", "batch_20241229_reuse", "--experiment", "copa-fresh", "--root", root)
    recent = json.loads(invoke("gc", "--root", root, "-o", "json").stdout)["requestStore"]
    assert (recent["answers"], recent["keptRecent"]) == (0, 24)  # answered within --keep-recent (24h)
    dry = json.loads(invoke("gc", "--root", root, "--keep-recent", "0", "-o", "json").stdout)
    assert dry["requestStore"]["answers"] == 24
    assert dry["requestStore"]["bytes"] > 0
    assert store.count() == 72
    invoke("gc", "--root", root, "--keep-recent", "0", "--yes")
    assert store.count() == 48  # every answer the two kept points used

    # the cluster's way: only the request store of a volume mounted at --root, keeping what any Artifact
    # directory on it lists (no registry involved); here one directory removed by hand frees its answers
    grown = next(
        p
        for p in (root / "_shared" / "Copa").iterdir()
        if (p / "manifest.json").is_file()
        and json.loads((p / "manifest.json").read_text())["extra"]["savedByReuse"]["requests"]
    )
    shutil.rmtree(grown)
    dry_run = invoke("gc", "--request-store", "--root", root, "--keep-recent", "0")
    assert "4 stored answers no Artifact lists" in dry_run.stdout
    assert "pass --yes" in dry_run.stderr
    assert store.count() == 48
    done = json.loads(
        invoke("gc", "--request-store", "--root", root, "--keep-recent", "0", "--yes", "-o", "json").stdout
    )
    assert (done["dryRun"], done["requestStore"]["answers"]) == (False, 4)
    assert store.count() == 44


def test_gc_request_store_and_keep_recent_name_the_fix_for_bad_input(workspace, invoke):
    no_root = invoke("gc", "--request-store", "--cluster", expect=2)
    assert "pass --root DIR" in no_root.output
    not_a_volume = invoke("gc", "--request-store", "--root", workspace, expect=2)
    assert "no _shared/ directory" in not_a_volume.output
    bad = invoke("gc", "--root", workspace, "--keep-recent", "a day", expect=2)
    assert "write it like 24h" in bad.output
    bare = invoke("gc", "--root", workspace, "--keep-recent", "24", expect=2)
    assert "write it like 24h" in bare.output


def test_why_and_watch_say_how_many_requests_of_a_grown_point_are_stored(
    workspace, write_experiment, invoke, openai_server
):
    source = write_copa(workspace / "raw" / "superglue" / "copa", rows=20)  # 20 + 1 + 1 records
    generate = generation(openai_server.url, temperature=0.0)
    generate["options"]["prices"] = {"gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0}}
    spec = {
        "batch": "batch_20241229_reusewhy",
        "datasets": copa_dataset(),
        "generation": generate,
        "validation": {"model": "gpt-4o", "temperature": 0.0},
    }
    experiment = write_experiment("copa-why", spec)
    root = workspace / "root"
    invoke("run", experiment, "--root", root)
    write_copa(source, rows=22)

    planned = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    (estimate,) = [stage["estimate"] for stage in planned["stages"]]
    assert (estimate["rows"], estimate["rowsReused"]) == (24, 22)
    saved = estimate["savedByReuseUsd"]
    assert saved > 0
    why = invoke("why", experiment, "Copa/temp00_topp10_gpt4o", "--root", root).stdout
    assert f"request store: 44 of 48 requests stored (${saved:.4f} saved), 22 of 24 rows fully; 4 to send" in why
    (stage,) = json.loads(invoke("why", experiment, "--root", root, "-o", "json").stdout)["stages"]
    assert stage["status"] == "miss"
    assert stage["requestReuse"] == {
        "requests": 48,
        "stored": 44,
        "toSend": 4,
        "rows": 24,
        "rowsReused": 22,
        "savedTokens": stage["requestReuse"]["savedTokens"],
        "savedUsd": saved,
    }
    assert stage["requestReuse"]["savedTokens"] > 0

    start = openai_server.counts[CHAT]
    ran = invoke("run", experiment, "--root", root)
    assert openai_server.counts[CHAT] - start == 4
    assert f"the request store answered 44 of 48 requests, ${saved:.4f} saved" in ran.output
    grown = [m for m in manifests(root) if m["extra"]["savedByReuse"]["requests"]]
    assert len(grown) == 1
    final = grown[0]["extra"]["requestReuse"]
    assert (final["stored"], final["toSend"], final["rowsReused"], final["savedUsd"]) == (44, 0, 22, saved)
    assert final["savedUsd"] == pytest.approx(grown[0]["extra"]["savedByReuse"]["costUsd"], abs=1e-5)  # per split
    # the worker's progress file said it before sending, and kept it to the end
    (directory,) = [
        path.parent
        for path in (root / "_shared" / "Copa").glob("*/manifest.json")
        if json.loads(path.read_text())["extra"]["savedByReuse"]["requests"]
    ]
    progress = json.loads((directory / ".progress.json").read_text())
    assert progress["requestReuse"]["stored"] == 44

    watched = invoke("watch", "copa-why", "--root", root, "--once").stdout
    assert f"44 requests from the request store (${saved:.4f} saved, 22 rows wholly)" in watched
