"""Shared fixtures: a tiny Llama built from a config and synthetic multi-task records."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from datasweep.testing.artifacts import finalize_as_generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DATASWEEP_DEVICE", "cpu")

WORDS = ["yes", "no", "true", "false", "cat", "alias"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasweep.testing.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def synthetic_records(n_tasks: int = 3, per_task: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """Records of a generate-like dataset: each task answers with its own words."""
    rng = random.Random(seed)
    records = []
    for task in range(n_tasks):
        for index in range(per_task):
            records.append(
                {
                    "id": f"{task}-{index}",
                    "task": f"task{task}",
                    "question": f"question {rng.randint(0, 999)} {index}",
                    "answer": f"{WORDS[task % 6]} {WORDS[(task + 1) % 6]} {index}",
                    "level": f"Level {index % 3}",
                    "time": 1000 - index,
                }
            )
    return records


def write_generate_artifact(root: Path, records: list[dict[str, Any]], dataset: str = "Copa") -> Path:
    """A generate artifact directory: <Dataset>/<dataset>_{train,validation,test}.jsonl."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": records[0::3], "validation": records[1::3], "test": records[2::3]}
    for split, rows in splits.items():
        with (folder / f"{dataset.lower()}_{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return finalize_as_generate(root, dataset)


PREP_PARAMS: dict[str, Any] = {
    "task_key": "task",
    "prompt_template": "Q: {question}\nA:",
    "response_template": " {answer}",
    "k_shots": [2],
}
