"""Fixtures of the generate tests: a small Copa-like dataset, worker specs, the local OpenAI server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datasweep.api.worker import WorkerSpec, dump_worker_spec
from datasweep.testing.openai_server import OpenAITestServer, ServerBehavior, serve_openai

REJECT = "[[reject]]"


def copa_records(count: int, split: str, reject_every: int = 0) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        text = f"{split} premise number {index}."
        if reject_every and index % reject_every == 0:
            text += f" {REJECT}"
        records.append({"idx": index, "text": text, "question": "cause", "label": index % 2})
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Copa with train (6 records, every 3rd one marked for rejection) and validation (3); no test split."""
    source = tmp_path / "source" / "copa"
    write_jsonl(source / "copa_train.jsonl", copa_records(6, "train", reject_every=3))
    write_jsonl(source / "copa_validation.jsonl", copa_records(3, "validation"))
    return source


def make_spec(
    tmp_path: Path, source_dir: Path, params: dict[str, Any], name: str = "out", dataset: str = "Copa"
) -> WorkerSpec:
    fingerprint = hashlib.sha256(json.dumps([name, params], sort_keys=True).encode()).hexdigest()
    return WorkerSpec.model_validate(
        {
            "stage": "generate",
            "artifact": f"copa-temp07-{fingerprint[:12]}",
            "fingerprint": fingerprint,
            "dataset": dataset,
            "semanticName": "temp07_topp10_gpt4o",
            "outputDir": str(tmp_path / name),
            "sourceDir": str(source_dir),
            "params": params,
            "batch": "batch_20241229_temperature",
            "experiment": "copa-temperature",
        }
    )


def write_spec(spec: WorkerSpec, path: Path) -> Path:
    path.write_text(dump_worker_spec(spec), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    return "sk-test"


@pytest.fixture
def openai_server() -> Iterator[OpenAITestServer]:
    with serve_openai(ServerBehavior()) as server:
        yield server


@pytest.fixture
def spec_factory(tmp_path: Path, dataset_dir: Path) -> Callable[..., WorkerSpec]:
    def factory(params: dict[str, Any], name: str = "out") -> WorkerSpec:
        return make_spec(tmp_path, dataset_dir, params, name=name)

    return factory
