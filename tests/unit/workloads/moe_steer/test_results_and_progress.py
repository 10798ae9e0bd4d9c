"""What `datasweep results` and a Job's log show for a real moe-steer stage: the risk-difference summary
from risk_diff.json, the loss from the manifest, and plain progress lines (steps, loss, ETA)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from datasweep.cli.main import cli
from datasweep.cli.results import headline_metrics
from datasweep.store.manifest import read_manifest
from datasweep.store.progress import read_progress

from .test_cli import _spec


def test_moe_steer_headline_metrics_and_progress_lines(tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, tiny_olmoe, paired_artifact, max_per_layer=2)
    env = {"DATASWEEP_TERMINATION_LOG": str(tmp_path / "term"), "DATASWEEP_PROGRESS_INTERVAL": "0"}
    result = CliRunner().invoke(cli, ["worker", "moe-steer", "--spec", str(spec)], env=env)
    assert result.exit_code == 0, result.output
    assert any(line.startswith("moe-steer: 2/2 steps (") and "loss" in line for line in result.output.splitlines())
    out = tmp_path / "out"
    manifest = read_manifest(out)
    assert manifest is not None
    metrics = headline_metrics("moe-steer", manifest, out)
    ranking = json.loads((out / "risk_diff.json").read_text())["ranking"]
    selected = [row["risk_diff_mean"] for row in ranking if row["selected"]]
    assert metrics["experts"] == 3
    assert metrics["riskDiffTop"] == round(ranking[0]["risk_diff_mean"], 4)
    assert metrics["riskDiffSelectedMin"] == round(min(selected), 4)
    assert metrics["finalLoss"] == round(json.loads((out / "training_metadata.json").read_text())["final_loss"], 4)
    assert metrics["steps"] == 2
    report = read_progress(out)  # the worker's last report: steps and the last loss
    assert report is not None
    assert (report.unit, report.done, report.total) == ("steps", 2, 2)
    assert report.loss is not None
