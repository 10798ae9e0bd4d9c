"""Chain fixtures: datasets shaped like the seed recipes, the real generate worker against the test OpenAI
server (validation rejecting some records), and tiny models trained on the same words."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datasweep.api.worker import WorkerSpec, dump_worker_spec
from datasweep.testing import datasets
from datasweep.testing.openai_server import OpenAITestServer, serve_openai

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DATASWEEP_DEVICE", "cpu")

# Every third record of every split carries the reject marker: validation rejects it.
SOURCES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "AliasTitle": {
        "train": datasets.alias_title_records(48, seed=1, reject_every=3),
        "validation": datasets.alias_title_records(18, seed=2, reject_every=3),
        "test": datasets.alias_title_records(9, seed=3, reject_every=3),
    },
    "Meta": {
        "train": datasets.task_records(30, seed=1, reject_every=3),
        "validation": datasets.task_records(9, seed=2, reject_every=3),
        "test": datasets.task_records(9, seed=3, reject_every=3),
    },
    "Safety": {
        "train": datasets.safety_pair_records(18, seed=1, reject_every=3),
        "test": datasets.safety_pair_records(6, seed=2, reject_every=3),
    },
}
REPHRASE_FIELDS = {"AliasTitle": ["question"], "Meta": ["question"], "Safety": ["goal"]}
CORPUS = datasets.corpus(*(records for splits in SOURCES.values() for records in splits.values()))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAITestServer]:
    with serve_openai() as server:
        yield server


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasweep.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("llama"), corpus=CORPUS)


@pytest.fixture(scope="session")
def tiny_olmoe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasweep.testing.tiny import build_tiny_olmoe

    return build_tiny_olmoe(tmp_path_factory.mktemp("olmoe"), corpus=CORPUS)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasweep.testing.tiny import build_for_kind

    return build_for_kind("qa", tmp_path_factory.mktemp("bert"), corpus=CORPUS)


def spec_for(stage: str, dataset: str, output: Path, params: dict[str, Any], **fields: Any) -> WorkerSpec:
    fingerprint = hashlib.sha256(f"{stage}:{dataset}:{output}".encode()).hexdigest()
    return WorkerSpec.model_validate(
        {
            "stage": stage,
            "artifact": f"{dataset.lower()}-{stage}-{fingerprint[:12]}",
            "fingerprint": fingerprint,
            "dataset": dataset,
            "semanticName": "temp07_topp10_gpt4o",
            "outputDir": str(output),
            "params": params,
            **fields,
        }
    )


def write_spec(spec: WorkerSpec, path: Path) -> Path:
    path.write_text(dump_worker_spec(spec), encoding="utf-8")
    return path


@pytest.fixture
def generated(tmp_path: Path, openai_server: OpenAITestServer) -> Callable[[str], Path]:
    """Run the real generate worker (rephrase + validation) on one source; returns the artifact directory."""
    from datasweep.workloads.generate.worker import run_generate

    def run(dataset: str) -> Path:
        source = datasets.write_splits(tmp_path / "raw" / dataset.lower(), dataset, SOURCES[dataset])
        output = tmp_path / "_shared" / dataset / "temp07_topp10_gpt4o"
        params = {
            "backend": "openai-compatible",
            "base_url": openai_server.url,
            "model": "gpt-4o",
            "rephrase_fields": REPHRASE_FIELDS[dataset],
        }
        run_generate(spec_for("generate", dataset, output, params, sourceDir=str(source)))
        return output

    return run
