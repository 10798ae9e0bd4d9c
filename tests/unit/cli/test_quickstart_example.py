"""examples/quickstart: the quick start's Copa sample and Experiment run end to end on one machine (the real
generate worker against the local OpenAI-compatible server); tests/e2e/test_chart_install.py plans it on a
cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart"

COPA_FIELDS = {"premise", "choice1", "choice2", "question", "label", "idx"}


def test_the_sample_is_copa_shaped() -> None:
    for split, rows in (("train", 8), ("validation", 4), ("test", 4)):
        records = [json.loads(line) for line in (QUICKSTART / "sources" / "copa" / f"copa_{split}.jsonl").open()]
        assert len(records) == rows
        for record in records:
            assert set(record) == COPA_FIELDS
            assert record["question"] in ("cause", "effect")
            assert record["label"] in (0, 1)


def test_the_quickstart_experiment_runs(
    tmp_path: Path, invoke: Any, openai_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = yaml.safe_load((QUICKSTART / "copa-quickstart.yaml").read_text())
    # what deploy.md says for an OpenAI-compatible server
    body["spec"]["generation"].update(backend="openai-compatible", baseURL=openai_server.url)
    experiment = tmp_path / "copa-quickstart.yaml"
    experiment.write_text(yaml.safe_dump(body))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    root = tmp_path / "store"
    invoke("run", experiment, "--data-dir", QUICKSTART, "--root", root)
    listed = json.loads(invoke("batches", "--root", root, "-o", "json").stdout)
    assert [(b["points"], b["ready"]) for b in listed] == [(2, 2)]
    paths = json.loads(invoke("paths", "--root", root, "--format", "json").stdout)
    assert len(paths) == 2
    for row in paths:
        rephrased = [json.loads(line) for line in (Path(row["data"]["path"]) / "copa_train.jsonl").open()]
        assert len(rephrased) == 8
        assert all(r["premise"] == "rephrased: " + r["original_premise"] for r in rephrased)
