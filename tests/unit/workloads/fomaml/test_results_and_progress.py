"""What `datasweep results` and a Job's log show for a real fomaml stage: query loss before/after adaptation
from the manifest, and plain progress lines (steps, query loss, ETA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.cli.results import headline_metrics
from datasweep.store.manifest import read_manifest
from datasweep.store.progress import read_progress

from .test_cli import TRAIN_PARAMS, _spec


def test_fomaml_headline_metrics_and_progress_lines(tiny_model: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("DATASWEEP_PROGRESS_INTERVAL", "0")
    spec = _spec(tmp_path, tiny_model, TRAIN_PARAMS)
    result = CliRunner().invoke(cli, ["worker", "fomaml", "--spec", str(spec)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("fomaml: ")]
    assert [line.split(" (")[0] for line in lines] == ["fomaml: 1/2 steps", "fomaml: 2/2 steps"]
    assert "query_loss" in lines[-1]
    out = Path(yaml.safe_load(spec.read_text())["outputDir"])
    manifest = read_manifest(out)
    assert manifest is not None
    metrics = headline_metrics("fomaml", manifest, out)
    results = json.loads((out / "eval_results.json").read_text())
    assert metrics["queryLossBefore"] == round(results["mean_before_loss"], 4)
    assert metrics["queryLossAfter"] == round(results["mean_after_loss"], 4)
    assert metrics["steps"] == 2
    # the worker's last report, what the operator shows in the Artifact's status
    report = read_progress(out)
    assert report is not None
    assert (report.phase, report.unit, report.done, report.total) == ("fomaml", "steps", 2, 2)
    assert report.loss is not None
