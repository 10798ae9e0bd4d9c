"""`datasweep results` on what the real workers write: a temperature sweep of the real generate worker
(against the local OpenAI-compatible test server) followed by the real qa stage on a tiny BERT, all through
`datasweep run`; then the headline metrics per point, sorted, as csv/json, and a plot of F1 vs temperature."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import experiment_yaml
from click.testing import CliRunner, Result
from tests.unit.workloads.qa.conftest import FAST_PARAMS, make_alias_title_records, write_jsonl

from datasweep.cli.main import cli
from datasweep.store.manifest import read_manifest

BATCH = "batch_20250103_qatemp"


def _cli(*args: str | Path, expect: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, openai_server: Any) -> Path:
    import torch

    from datasweep.testing.tiny import build_tiny_bert

    torch.set_num_threads(1)
    workspace = tmp_path_factory.mktemp("results")
    splits = {
        "train": make_alias_title_records(60, seed=1),
        "validation": make_alias_title_records(18, seed=2),
    }
    for split, records in splits.items():
        write_jsonl(workspace / "raw" / f"aliastitle_{split}.jsonl", records)
    corpus = [r["context"] + " rephrased: " + r["question"] for rs in splits.values() for r in rs]
    build_tiny_bert(workspace / "models" / "bert", corpus=corpus, max_position_embeddings=128)
    spec = {
        "batch": BATCH,
        "datasets": [{"name": "AliasTitle", "source": {"path": "raw"}}],
        "generation": {
            "backend": "openai-compatible",
            "baseURL": openai_server.url,
            "model": "gpt-4o",
            "temperature": [0.5, 0.9],
            "options": {"concurrency": 4, "rephrase_fields": ["question"]},
        },
        "validation": {"model": "gpt-4o", "temperature": 0.0},
        "training": [
            {
                "name": "qa",
                "kind": "qa",
                "baseModel": {"path": "models/bert"},
                "params": {**FAST_PARAMS, "num_train_epochs": 1, "plot_update_every": 1000},
            }
        ],
    }
    experiment = workspace / "qa-temperature.yaml"
    experiment.write_text(experiment_yaml("qa-temperature", spec), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", "test-key")
        patch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
        run = _cli("run", experiment, "--root", workspace / "store", "-j", "2")
    (workspace / "run.out").write_text(run.output, encoding="utf-8")
    return workspace


def test_results_show_qa_metrics_per_point_as_the_worker_wrote_them(sweep: Path) -> None:
    root = sweep / "store"
    rows = json.loads(_cli("results", BATCH, "--root", root, "-o", "json").stdout)
    assert [(r["stage"], r["temperature"], r["phase"]) for r in rows] == [("qa", 0.5, "Ready"), ("qa", 0.9, "Ready")]
    for row in rows:
        manifest = read_manifest(next(root.glob(f"_shared/AliasTitle/{row['semanticName']}/train/qa-*")))
        assert manifest is not None
        assert row["f1"] == round(manifest.extra["dev"]["f1"], 4)
        assert row["em"] == round(manifest.extra["dev"]["exact"], 4)
        assert row["threshold"] == round(manifest.extra["null_threshold"], 4)
    by_experiment = json.loads(_cli("results", "qa-temperature", "--root", root, "-o", "json").stdout)
    assert by_experiment == rows
    table = _cli("results", BATCH, "--root", root).output
    assert "batch batch_20250103_qatemp: 2 qa results" in table
    assert "F1" in table
    assert "THRESHOLD" in table


def test_results_of_the_generate_stage_sorted_as_csv(sweep: Path) -> None:
    root = sweep / "store"
    text = _cli("results", BATCH, "--root", root, "--stage", "generate", "--sort", "-temperature", "-o", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["temperature"] for r in rows] == ["0.9", "0.5"]
    for row in rows:
        manifest = read_manifest(root / "_shared" / "AliasTitle" / row["semanticName"])
        assert manifest is not None
        kept = sum(c["kept"] for c in manifest.extra["counts"].values())
        assert (int(row["kept"]), int(row["rejected"])) == (kept, 78 - kept)
        assert int(row["tokens"]) == manifest.usage.prompt_tokens + manifest.usage.completion_tokens > 0
    bad = _cli("results", BATCH, "--root", root, "--sort", "nonsense", expect=2)
    assert "--sort nonsense: no such column" in bad.output
    assert "f1" in bad.output


def test_results_plot_f1_across_temperature(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "f1.png"
    result = _cli("results", BATCH, "--root", sweep / "store", "--plot", "f1", "--axis", "temperature", "--out", out)
    assert f"wrote {out} (2 points)" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = _cli("results", "batch_20990101_none", "--root", sweep / "store", expect=2)
    assert "neither a batch nor an experiment" in unknown.output


def test_worker_logs_carry_plain_progress_lines(sweep: Path) -> None:
    from datasweep.local.runner import last_progress_line

    logs = sorted((sweep / "store" / ".datasweep" / "logs").glob("*.log"))
    latest = [line for log in logs if (line := last_progress_line(log))]
    assert any(line.startswith("validate: 78/78 requests (") and "tokens" in line for line in latest), latest
    assert sum(line.startswith("qa: ") and " steps (" in line and "loss" in line for line in latest) == 2, latest
    assert not any("\x1b" in log.read_text(encoding="utf-8") for log in logs)


def test_run_shows_every_phase_finish_of_each_worker(sweep: Path) -> None:
    """Not a sample of the latest line: a phase that ends between two reads of the log still shows its end."""
    out = (sweep / "run.out").read_text(encoding="utf-8").splitlines()
    for phase in ("generate", "validate"):
        finished = [line for line in out if f": {phase}: 78/78 requests (" in line]
        assert len(finished) == 2, out  # one per temperature
    assert sum(": qa: " in line and " steps (" in line for line in out) >= 2, out
