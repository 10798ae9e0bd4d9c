"""Seed 001 parity: the Batch API's raw files kept in the artifact, a refused create, and the seed's
--list-active / --check-status / --download-results against the API (the test server)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import Fault, ServerBehavior, serve_openai
from datasweep.workloads.generate.batch_api import CRASH_ENV, InjectedCrash
from datasweep.workloads.generate.worker import run_generate

from .conftest import write_spec

FAST_POLL = {"backend": "openai-batch", "poll_interval": 0.01, "max_poll_interval": 0.02}


def test_raw_batch_files_are_kept_in_the_artifact(api_key, spec_factory):
    with serve_openai() as server:
        spec = spec_factory({**FAST_POLL, "base_url": server.url})
        manifest = run_generate(spec)
        batches = list(server.batches.values())
        uploaded = {b["id"]: server.state.file_bytes[b["input_file_id"]] for b in batches}
        outputs = {b["id"]: server.state.file_bytes[b["output_file_id"]] for b in batches}
    raw = spec.output_path / "batch_api"
    assert (raw / "generate-001_input.jsonl").read_bytes() == uploaded[batches[0]["id"]]
    assert (raw / "validate-001_input.jsonl").read_bytes() == uploaded[batches[1]["id"]]
    for batch in batches:
        assert (raw / f"{batch['id']}_output.jsonl").read_bytes() == outputs[batch["id"]]
        assert json.loads((raw / f"{batch['id']}.json").read_text())["status"] == "completed"
    listed = {entry.path for entry in manifest.files}
    assert f"batch_api/{batches[0]['id']}_output.jsonl" in listed


def test_error_file_is_kept_too(api_key, spec_factory):
    with serve_openai(ServerBehavior(fail_custom_ids_once={"gen:train:1:text"})) as server:
        spec = spec_factory({**FAST_POLL, "base_url": server.url, "validation": None})
        run_generate(spec)
        first = next(iter(server.batches.values()))
        errors = server.state.file_bytes[first["error_file_id"]]
    assert (spec.output_path / "batch_api" / f"{first['id']}_errors.jsonl").read_bytes() == errors


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        (Fault(400, message="Enqueued token limit reached for gpt-4o in organization org-x."), "token limit"),
        (Fault(429, message="You exceeded your current quota, please check your plan and billing details."), "quota"),
    ],
)
def test_refused_batch_create_is_one_line_exit_2_and_nothing_is_lost(api_key, spec_factory, tmp_path, fault, shown):
    behavior = ServerBehavior(batch_create_faults=[fault])
    with serve_openai(behavior) as server:
        spec = spec_factory({**FAST_POLL, "base_url": server.url, "validation": None, "max_retries": 0})
        path = write_spec(spec, tmp_path / "worker.yaml")
        result = CliRunner().invoke(cli, ["worker", "generate", "--spec", str(path)])
        assert result.exit_code == 2
        assert "Traceback" not in result.output
        error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1
        assert f"HTTP {fault.status}" in error_lines[0]
        assert fault.message in error_lines[0]
        assert shown in error_lines[0]
        assert server.counts["POST /v1/files"] == 1
        # the rerun submits the same uploaded file: no second upload, one batch, every request once
        result = CliRunner().invoke(cli, ["worker", "generate", "--spec", str(path)])
        assert result.exit_code == 0, result.output
        assert server.counts["POST /v1/files"] == 1
        assert len(server.batches) == 1
        assert len(server.batch_request_log) == 9
    assert read_manifest(spec.output_path) is not None


def _batches(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["worker", "generate", "batches", *args], env=env)
    return result.exit_code, result.output


def test_list_active_check_status_and_download_results(api_key, spec_factory, tmp_path, monkeypatch):
    with serve_openai(ServerBehavior(hold_batches=True)) as server:
        spec = spec_factory({**FAST_POLL, "base_url": server.url, "validation": None})
        monkeypatch.setenv(CRASH_ENV, "batch-submitted")
        with pytest.raises(InjectedCrash):
            run_generate(spec)  # submitted, never polled: the batch is active
        monkeypatch.delenv(CRASH_ENV)
        (batch_id,) = server.batches
        url = ["--base-url", server.url]

        code, output = _batches("--list-active", *url)
        assert code == 0, output
        assert batch_id in output
        assert "validating" in output
        assert spec.fingerprint in output  # the datasweep key names the artifact
        code, output = _batches("--list-active", "--json", *url)
        assert [row["id"] for row in json.loads(output)] == [batch_id]

        code, output = _batches("--download-results", batch_id, "--output-dir", str(tmp_path / "dl"), *url)
        assert code == 2
        assert "no output or error file yet" in output

        server.behavior.hold_batches = False
        run_generate(spec)  # resumes the same batch to completion
        code, output = _batches("--check-status", batch_id, *url)
        assert code == 0, output
        status = json.loads(output)
        assert status["status"] == "completed"
        assert status["request_counts"]["completed"] == 9
        code, output = _batches("--list-active", *url)
        assert "no active batches" in output

        config = tmp_path / "config.json"
        config.write_text(json.dumps({"api_key": "sk-from-config"}), encoding="utf-8")
        code, output = _batches(
            "--download-results", batch_id, "--output-dir", str(tmp_path / "dl"), "--config", str(config), *url
        )
        assert code == 0, output
        results = (tmp_path / "dl" / f"batch_results_{batch_id}.jsonl").read_bytes()
        assert results == server.state.file_bytes[server.batches[batch_id]["output_file_id"]]
        assert json.loads((tmp_path / "dl" / f"batch_job_{batch_id}.json").read_text())["id"] == batch_id

        code, output = _batches("--check-status", "batch-nope", *url)
        assert code == 2
        assert "HTTP 404" in output
        code, output = _batches(*url)
        assert code == 2
        assert "exactly one of" in output


def _slices(prefix: str, kinds: str) -> list[dict[str, str]]:
    return [
        {"type": {"f": "function", "c": "class"}[kind], "code": f"def {prefix}{i}(): pass"}
        for i, kind in enumerate(kinds)
    ]


def test_any_jsonl_of_reviewed_slices_with_caps_overall(api_key, tmp_path):
    """Seed 001 reads every *.jsonl in the reviewed-slices directory and caps each scenario overall."""
    from datasweep.store.layout import dataset_files

    from .conftest import make_spec, read_jsonl, write_jsonl

    source = tmp_path / "2.reviewed_slices"
    write_jsonl(source / "repo_a.jsonl", _slices("a", "ffc"))
    write_jsonl(source / "repo_b.jsonl", _slices("b", "ffcc"))
    (source / "notes.txt").write_text("not a slice file", encoding="utf-8")
    params = {"task": "code-scenarios", "validation": None, "max_scenario1": 3, "max_scenario2": 2}
    with serve_openai() as server:
        spec = make_spec(tmp_path, source, {**params, "base_url": server.url}, dataset="Slices")
        run_generate(spec)
        assert server.counts["POST /v1/chat/completions"] == 5
    records = read_jsonl(spec.output_path / "Slices" / "slices_train.jsonl")
    # file order, then line order; ids are <file stem>:<line> (the slices have no id field)
    assert [(r["code"], r["scenario"]) for r in records] == [
        ("def a0(): pass", "scenario1"),
        ("def a1(): pass", "scenario1"),
        ("def a2(): pass", "scenario2"),
        ("def b0(): pass", "scenario1"),
        ("def b2(): pass", "scenario2"),
    ]
    report = json.loads((spec.output_path / "report.json").read_text())
    assert report["splits"]["train"]["skipped"] == {"scenario1 cap 3": 1, "scenario2 cap 2": 1}
    # the planner's content hash covers every file the worker read
    files = dataset_files(source, "Slices")
    assert [path.name for path in files.files] == ["repo_a.jsonl", "repo_b.jsonl"]
    before = files.sha256
    write_jsonl(source / "repo_c.jsonl", _slices("c", "f"))
    assert dataset_files(source, "Slices").sha256 != before


def test_caps_per_split_option(api_key, tmp_path):
    from .conftest import make_spec, read_jsonl, write_jsonl

    source = tmp_path / "slices"
    write_jsonl(source / "slices_train.jsonl", _slices("t", "ff"))
    write_jsonl(source / "slices_validation.jsonl", _slices("v", "ff"))
    params = {"task": "code-scenarios", "validation": None, "max_scenario1": 1}
    with serve_openai() as server:
        overall = make_spec(tmp_path, source, {**params, "base_url": server.url}, name="overall", dataset="Slices")
        run_generate(overall)
        split = make_spec(
            tmp_path, source, {**params, "base_url": server.url, "caps_per_split": True}, name="split", dataset="Slices"
        )
        run_generate(split)
    assert len(read_jsonl(overall.output_path / "Slices" / "slices_train.jsonl")) == 1
    assert not (overall.output_path / "Slices" / "slices_validation.jsonl").exists() or not read_jsonl(
        overall.output_path / "Slices" / "slices_validation.jsonl"
    )
    assert len(read_jsonl(split.output_path / "Slices" / "slices_train.jsonl")) == 1
    assert len(read_jsonl(split.output_path / "Slices" / "slices_validation.jsonl")) == 1
