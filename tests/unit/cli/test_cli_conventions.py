"""Command-line conventions: `-o wide|name`, `--no-headers`, plain ASCII tables when piped, global flags
before the command (`kubectl datasweep -n NS batches`), shell completion, the operator's logging flags."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import copa_dataset, fake_worker_command, generation
from click.testing import CliRunner

from conftest import Invoke
from datasweep.cli.main import cli, hoist_global_flags, main

BATCH = "batch_20250105_conventions"


@pytest.fixture
def store(workspace: Path, write_experiment: Callable[..., Path], invoke: Invoke) -> Path:
    spec = {"batch": BATCH, "datasets": copa_dataset(), "generation": generation(None, temperature=[0.5, 0.7])}
    root = workspace / "root"
    invoke("run", write_experiment("conv", spec), "--root", root, "--worker-command", fake_worker_command())
    return root


def test_output_name_wide_and_no_headers(store: Path, invoke: Invoke) -> None:
    assert invoke("batches", "--root", store, "-o", "name").stdout == f"{BATCH}\n"
    assert invoke("batch", BATCH, "--root", store, "-o", "name").stdout.split() == [
        "Copa/temp05_topp10_gpt4o",
        "Copa/temp07_topp10_gpt4o",
    ]
    names = invoke("artifacts", "--root", store, "-o", "name").stdout.split()
    assert names == [a["name"] for a in json.loads(invoke("artifacts", "--root", store, "-o", "json").stdout)]
    wide = invoke("artifacts", "--root", store, "-o", "wide").stdout
    assert "FINGERPRINT" in wide
    assert "_shared/Copa/temp05_topp10_gpt4o" in wide
    assert "DATASETS" in invoke("batches", "--root", store, "-o", "wide").stdout
    bare = invoke("batches", "--root", store, "--no-headers").stdout
    assert bare.split() == [BATCH, "1", "2", "0", "2"]  # batch, experiments, points, reused, ready


def test_piped_tables_are_plain_ascii(store: Path, invoke: Invoke) -> None:
    for command in (["batches"], ["batch", BATCH], ["artifacts"], ["gc"]):
        text = invoke(*command, "--root", store).stdout
        assert text.isascii(), text


def test_global_flags_before_the_command(store: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    assert hoist_global_flags(["-n", "research", "batches", "-o", "json"]) == [
        "batches",
        "-n",
        "research",
        "-o",
        "json",
    ]
    assert hoist_global_flags(["--context=kind", "--cluster", "gc"]) == ["gc", "--context=kind", "--cluster"]
    assert hoist_global_flags(["batches", "-n", "x"]) == ["batches", "-n", "x"]
    monkeypatch.setattr(sys, "argv", ["kubectl-datasweep", "--root", str(store), "batches", "-o", "name"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{BATCH}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, invoke: Invoke) -> None:
    script = invoke("completion", shell).stdout
    assert "_DATASWEEP_COMPLETE" in script


def test_completion_completes_commands() -> None:
    env = {"_DATASWEEP_COMPLETE": "bash_complete", "COMP_WORDS": "datasweep res", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], prog_name="datasweep", env=env)
    assert "plain,resolve" in result.output
    assert "plain,results" in result.output


def test_user_facing_help_never_says_seed(invoke: Invoke) -> None:
    from datasweep.cli.main import COMMANDS

    for command in COMMANDS:
        assert "seed" not in invoke(command, "--help").stdout.lower(), command
    for stage in ("generate", "fomaml", "moe-steer", "qa"):
        text = invoke("worker", stage, "--help").stdout.lower()
        assert "seed 0" not in text, stage
        assert "the seed" not in text, stage
