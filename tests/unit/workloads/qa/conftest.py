"""Fixtures: a synthetic alias/title QA set and a tiny BERT whose tokenizer was trained on it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from datasweep.testing.artifacts import finalize_as_generate

SYLLABLES = ["ka", "lo", "mi", "ren", "tor", "vel", "sun", "dra", "pe", "qui", "zan", "bor", "fi", "gal", "hu"]
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Bern"]


def _name(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize() for _ in range(words))


def make_alias_title_records(count: int, seed: int, unanswerable_every: int = 3) -> list[dict[str, Any]]:
    """Alias/title questions over short contexts. Answerable contexts say '<title> is also known as
    <alias>.' after a random lead-in; every third context says '<title> was born in <city>.' instead, so
    the alias question has no answer there."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        title, alias = _name(rng, rng.randint(1, 2)), _name(rng, rng.randint(1, 3))
        lead = rng.choice(["", f"Born in {rng.choice(CITIES)}, ", f"In {rng.choice(CITIES)} today, "])
        tail = rng.choice(["", f" The archive in {rng.choice(CITIES)} lists it.", " Few people remember this."])
        if index % unanswerable_every == unanswerable_every - 1:
            context = f"{lead}{title} was born in {rng.choice(CITIES)}.{tail}"
            question = rng.choice([f"What is {title} also known as?", f"Which alias does {title} have?"])
            answers: dict[str, list[Any]] = {"text": [], "answer_start": []}
        else:
            context = f"{lead}{title} is also known as {alias}.{tail}"
            if index % 2 == 0:
                start = context.index(f"known as {alias}") + len("known as ")
                question, answers = f"What is {title} also known as?", {"text": [alias], "answer_start": [start]}
            else:
                start = context.index(f"{title} is also")
                question, answers = f"Which title is also known as {alias}?", {"text": [title], "answer_start": [start]}
        records.append({"id": f"q{seed}-{index}", "context": context, "question": question, "answers": answers})
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def qa_splits() -> dict[str, list[dict[str, Any]]]:
    return {
        "train": make_alias_title_records(150, seed=1),
        "validation": make_alias_title_records(45, seed=2),
        "test": make_alias_title_records(24, seed=3),
    }


@pytest.fixture
def generate_artifact(tmp_path: Path, qa_splits: dict[str, list[dict[str, Any]]]) -> Path:
    """A generate artifact directory: <Dataset>/<dataset>_{train,validation,test}.jsonl."""
    root = tmp_path / "generate"
    for split, records in qa_splits.items():
        write_jsonl(root / "AliasTitle" / f"aliastitle_{split}.jsonl", records)
    return finalize_as_generate(root, "AliasTitle")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, qa_splits: dict[str, list[dict[str, Any]]]) -> Path:
    import torch

    from datasweep.testing.tiny import build_tiny_bert

    torch.set_num_threads(1)
    corpus = [r["context"] + " " + r["question"] for split in qa_splits.values() for r in split]
    return build_tiny_bert(
        tmp_path_factory.mktemp("tiny-bert"),
        corpus=corpus,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
    )


FAST_PARAMS: dict[str, Any] = {
    "num_train_epochs": 2,
    "per_device_batch_size": 16,
    "grad_accum_steps": 1,
    "learning_rate": 3e-3,
    "warmup_ratio": 0.1,
    "num_workers": 0,
    "plot_update_every": 5,
    "max_length": 64,
    "doc_stride": 16,
    "n_best_size": 10,
    "max_answer_length": 12,
    "early_stopping_patience": 0,
}
