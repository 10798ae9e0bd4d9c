"""Helpers shared by the CLI tests (imported by name; conftest.py holds the fixtures)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


def write_copa(directory: Path, rows: int = 3) -> Path:
    """A SuperGLUE-Copa-like source in the seed's layout: copa_{train,validation,test}.jsonl."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", rows), ("validation", 1), ("test", 1)):
        with (directory / f"copa_{split}.jsonl").open("w", encoding="utf-8") as handle:
            for index in range(count):
                record = {"id": f"{split}-{index}", "text": f"The man broke his toe ({split} {index})."}
                handle.write(json.dumps(record) + "\n")
    return directory


def fake_model(directory: Path) -> Path:
    """A directory that passes as a saved model before anything runs (its config.json); the fake worker loads
    nothing from it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}", encoding="utf-8")
    return directory


def experiment_yaml(name: str, spec: dict[str, Any]) -> str:
    obj = {"apiVersion": "datasweep.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec}
    return yaml.safe_dump(obj, sort_keys=False)


def generation(base_url: str | None, **grid: Any) -> dict[str, Any]:
    """spec.generation against the local OpenAI-compatible test server (or plain `openai` for plans)."""
    section: dict[str, Any] = {"model": "gpt-4o", **grid}
    if base_url is None:
        section["backend"] = "openai"
    else:
        section.update(backend="openai-compatible", baseURL=base_url, options={"concurrency": 4})
    return section


def copa_dataset() -> list[dict[str, Any]]:
    return [{"name": "Copa", "source": {"pvc": "raw-data", "path": "raw/superglue/copa"}}]


def fake_worker_command(mode: str = "ok") -> str:
    """`--worker-command` for runner tests that need control over a worker (fail, slow)."""
    return f"{sys.executable} {FAKE_WORKER} --mode {mode}"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")
