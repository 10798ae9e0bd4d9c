"""The generate worker with local transformers generation (a tiny random Llama built from a config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasweep.workloads.generate.worker import run_generate

from .conftest import make_spec, read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from datasweep.testing.tiny import build_tiny_llama

    torch.set_num_threads(1)
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_rephrase_and_validate_with_transformers(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local model needs no key
    source = tmp_path / "src"
    write_jsonl(source / "copa_train.jsonl", [{"id": i, "text": f"The man broke his toe {i}."} for i in range(3)])
    write_jsonl(source / "copa_test.jsonl", [{"id": "t0", "text": "He dropped a hammer on his foot."}])
    params = {
        "backend": "transformers",
        "model": "tiny-llama",
        "model_path": str(tiny_llama),
        "max_tokens": 6,
        "temperature": 0.7,
        "seed": 3,
        "transformers_batch_size": 2,
        "validation": {"model": "tiny-llama", "max_tokens": 4},
    }
    spec = make_spec(tmp_path, source, params)
    manifest = run_generate(spec)
    out = spec.output_path
    kept = read_jsonl(out / "Copa" / "copa_train.jsonl") if (out / "Copa" / "copa_train.jsonl").exists() else []
    rejected_path = out / "rejected" / "copa_train.jsonl"
    rejected = read_jsonl(rejected_path) if rejected_path.exists() else []
    # a random model's verdicts are noise, but every record is accounted for, with its id and original
    assert sorted(r["id"] for r in kept + rejected) == [0, 1, 2]
    assert all(r["original_text"].startswith("The man broke his toe") for r in kept + rejected)
    assert all(r["validation"]["verdict"] in ("keep", "reject") for r in kept + rejected)
    generated = read_jsonl(out / ".work" / "generate.jsonl")
    assert len(generated) == 4
    assert all(0 < entry["completion_tokens"] <= 6 for entry in generated)
    assert manifest.usage.requests == 8
    assert manifest.usage.cost_usd == 0.0
    metadata = json.loads((out / "experiment_metadata.json").read_text())
    assert metadata["usage"]["by_split"]["test"]["requests"] == 2

    # same seed, same requests: a fresh run reproduces the generated texts
    again = make_spec(tmp_path, source, params, name="again")
    run_generate(again)
    assert [e["text"] for e in read_jsonl(again.output_path / ".work" / "generate.jsonl")] == [
        e["text"] for e in generated
    ]


def test_code_scenarios_with_transformers_from_base_model(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASWEEP_TERMINATION_LOG", "/dev/null")
    source = tmp_path / "src"
    write_jsonl(
        source / "code_train.jsonl",
        [
            {"id": "f", "type": "function", "code": "def f():\n    return 1"},
            {"id": "c", "type": "class", "code": "class C:\n    pass"},
        ],
    )
    spec = make_spec(
        tmp_path,
        source,
        {"task": "code-scenarios", "backend": "transformers", "model": "tiny", "max_tokens": 5, "validation": None},
        dataset="Code",
    )
    spec = spec.model_copy(update={"base_model": str(tiny_llama)})  # the model comes from the spec's baseModel
    run_generate(spec)
    records = read_jsonl(spec.output_path / "Code" / "code_train.jsonl")
    assert [(r["id"], r["scenario"]) for r in records] == [("f", "scenario1"), ("c", "scenario2")]
    assert all(isinstance(r["response"], str) for r in records)
