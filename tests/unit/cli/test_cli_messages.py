"""Messages name the field as the user wrote it, once, in one line where it is bad input (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_helpers import copa_dataset, fake_worker_command, generation

from conftest import Invoke

BATCH = "batch_20250104_messages"


def spec(**generation_overrides: Any) -> dict[str, Any]:
    return {
        "batch": BATCH,
        "datasets": copa_dataset(),
        "generation": {**generation(None, temperature=[0.5, 0.7]), **generation_overrides},
    }


def test_an_option_is_named_where_it_was_written(write_experiment: Callable[..., Path], invoke: Invoke) -> None:
    result = invoke("plan", write_experiment("msg", spec(options={"concurrency": 0})), expect=2)
    assert "spec.generation.options.concurrency: Input should be greater than or equal to 1" in result.output
    assert "spec.generation.concurrency" not in result.output


def test_union_internals_do_not_leak_and_lists_use_brackets(
    write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    result = invoke("plan", write_experiment("msg", spec(temperature="hot")), expect=2)
    assert "spec.generation.temperature: " in result.output
    assert "temperature.float" not in result.output
    assert "list[float]" not in result.output
    assert " or " in result.output  # the alternatives of the union, in one entry
    broken = spec()
    broken["datasets"] = [{"source": {"path": "raw/superglue/copa"}}]
    result = invoke("plan", write_experiment("msg", broken), expect=2)
    assert "spec.datasets[0].name: Field required" in result.output


def test_bad_yaml_names_the_file_and_line(workspace: Path, invoke: Invoke) -> None:
    bad = workspace / "bad.yaml"
    bad.write_text("apiVersion: datasweep.io/v1alpha1\nkind: Experiment\nspec: {datasets: [\n", encoding="utf-8")
    result = invoke("plan", bad, expect=2)
    assert f"{bad}:4:1: not valid YAML" in result.output


def test_an_unwritable_root_or_dest_is_one_line_exit_2(
    workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke
) -> None:
    blocker = workspace / "a-file"
    blocker.write_text("not a directory\n")
    experiment = write_experiment("msg", spec(temperature=0.5))
    result = invoke("run", experiment, "--root", blocker / "store", expect=2)
    assert "cannot write the local store" in result.output
    assert "Traceback" not in result.output
    root = workspace / "root"
    invoke("run", experiment, "--root", root, "--worker-command", fake_worker_command())
    result = invoke("publish", "temp05_topp10_gpt4o", "--dest", blocker / "legacy", "--root", root, expect=2)
    assert f"--dest {blocker / 'legacy'}: cannot write" in result.output
    assert "Traceback" not in result.output


def test_the_same_data_error_is_printed_once_with_its_head(
    write_experiment: Callable[..., Path], invoke: Invoke, workspace: Path
) -> None:
    experiment = write_experiment("msg", spec())
    result = invoke(
        "run", experiment, "--root", workspace / "root", "--worker-command", fake_worker_command("data-error"), expect=1
    )
    assert result.output.count("FAILED generate") == 2
    assert result.output.count("field 'text' to rephrase is missing") == 1
    assert "set params.rephrase_fields" in result.output
    assert "(the same output ended 1 more failed stage(s) above)" in result.output


def test_an_unreachable_base_url_fails_every_point_at_once_named_once(
    write_experiment: Callable[..., Path], invoke: Invoke, workspace: Path
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    experiment = write_experiment("msg", spec(backend="openai-compatible", baseURL=url))
    result = invoke("run", experiment, "--root", workspace / "root", expect=1)
    assert result.output.count(f"cannot reach the endpoint {url}") == 1
    assert result.output.count("FAILED generate") == 2
