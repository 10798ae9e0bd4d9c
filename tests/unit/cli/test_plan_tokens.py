"""plan's token numbers against a real run: prompts counted with the model's tiktoken encoding match what the
server bills exactly; completions are bounded by max_tokens; without the encoding plan says it estimates.

tiktoken cannot download o200k_base here (no network), so the tests register a small byte-level BPE under
that name: a real tiktoken Encoding, used by plan through tiktoken's own lookup (gpt-4o -> o200k_base) and by
the test server to bill the same requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copa_dataset, generation

from conftest import Invoke
from datasweep.store.manifest import read_manifest
from datasweep.testing.openai_server import OpenAITestServer, ServerBehavior, serve_openai
from datasweep.workloads.generate import tokens

tiktoken = pytest.importorskip("tiktoken")

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"th", b"the", b" t", b" th", b" the", b"he", b"in", b" a", b"an", b"er", b"re", b"on", b" o"]


def small_encoding() -> Any:
    ranks = {bytes([i]): i for i in range(256)}
    for merge in MERGES:
        ranks[merge] = len(ranks)
    return tiktoken.Encoding(name="o200k_base", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


@pytest.fixture
def fresh_counters() -> Iterator[None]:
    tokens.counter_for.cache_clear()
    tokens._encoding.cache_clear()
    yield
    tokens.counter_for.cache_clear()
    tokens._encoding.cache_clear()


@pytest.fixture
def encoding(monkeypatch: pytest.MonkeyPatch, fresh_counters: None) -> Any:
    enc = small_encoding()
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "o200k_base", enc)
    return enc


@pytest.fixture
def billing_server(encoding: Any) -> Iterator[OpenAITestServer]:
    behavior = ServerBehavior(
        count_tokens=lambda text: len(encoding.encode(text)),
        message_tokens=tokens.TOKENS_PER_MESSAGE,
        reply_tokens=tokens.TOKENS_PER_REPLY,
    )
    with serve_openai(behavior) as server:
        yield server


def _spec(server: OpenAITestServer, validation: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "batch": "batch_20250101_tokens",
        "datasets": copa_dataset(),
        "generation": generation(server.url, temperature=0.7),
    }
    if validation:
        spec["validation"] = {"model": "gpt-4o", "temperature": 0.0}
    return spec


def _generate_usage(root: Path) -> dict[str, Any]:
    (directory,) = [p.parent for p in root.glob("_shared/Copa/*/manifest.json")]
    manifest = read_manifest(directory)
    assert manifest is not None
    metadata = json.loads((directory / "experiment_metadata.json").read_text())
    return {"total": manifest.usage, "by_split": metadata["usage"]["by_split"]}


def test_prompt_tokens_are_counted_exactly_and_completions_bounded(
    billing_server: OpenAITestServer, workspace: Path, write_experiment: Any, invoke: Invoke
) -> None:
    experiment = write_experiment("tokens", _spec(billing_server, validation=False))
    root = workspace / "root"
    plan = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)
    totals = plan["totals"]
    assert totals["tokenCounting"] == ["tiktoken o200k_base"]
    assert totals["tokensAreUpperBound"] is True
    invoke("run", experiment, "--root", root)
    real = _generate_usage(root)["total"]
    assert real.requests == 5  # 3 + 1 + 1 Copa records, one field each
    # the same requests, the same tokenizer, the same framing: the prompt side is not estimated but counted
    assert totals["promptTokens"] == real.prompt_tokens
    assert totals["completionTokens"] == 5 * 256 >= real.completion_tokens
    assert totals["costUsd"] >= real.cost_usd
    # the likely figure (each rephrasing as long as its original) is far nearer the real spend than the bound
    real_tokens = real.prompt_tokens + real.completion_tokens
    bound = totals["promptTokens"] + totals["completionTokens"]
    assert totals["likelyTokens"] is not None
    assert abs(totals["likelyTokens"] - real_tokens) * 5 < bound - real_tokens

    table = invoke("plan", experiment, "--root", workspace / "other-root").stdout
    assert "(upper bound)" in table
    assert "counted with tiktoken o200k_base, plus the chat framing" in table
    assert "max_tokens per request (256 per generation)" in table


def test_with_validation_the_bound_holds_and_names_both_phases(
    billing_server: OpenAITestServer, workspace: Path, write_experiment: Any, invoke: Invoke
) -> None:
    experiment = write_experiment("tokens-val", _spec(billing_server, validation=True))
    root = workspace / "root"
    totals = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)["totals"]
    invoke("run", experiment, "--root", root)
    usage = _generate_usage(root)
    real = usage["total"]
    assert real.requests == 10
    generation_prompt = sum(s["phases"]["generation"]["prompt_tokens"] for s in usage["by_split"].values())
    validation_prompt = sum(s["phases"]["validation"]["prompt_tokens"] for s in usage["by_split"].values())
    assert generation_prompt + validation_prompt == real.prompt_tokens
    assert real.prompt_tokens < totals["promptTokens"]  # the generated text is counted at max_tokens
    assert totals["completionTokens"] == 5 * 256 + 5 * 64 >= real.completion_tokens
    real_tokens = real.prompt_tokens + real.completion_tokens
    assert real_tokens < totals["likelyTokens"] < totals["promptTokens"] + totals["completionTokens"]
    table = invoke("plan", experiment, "--root", workspace / "other-root").stdout
    assert "256 per generation, 64 per validation" in table
    assert f"likely: about {totals['likelyTokens']:,} tokens" in table
    assert "a validation prompt counts the generated text at max_tokens" in table


def test_without_the_encoding_file_plan_says_it_estimates(
    monkeypatch: pytest.MonkeyPatch, fresh_counters: None, workspace: Path, write_experiment: Any, invoke: Invoke
) -> None:
    def offline(name: str) -> Any:
        raise ConnectionError(f"cannot fetch {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    spec = {"batch": "batch_20250101_tokens", "datasets": copa_dataset(), "generation": generation(None)}
    experiment = write_experiment("tokens-offline", spec)
    plan = json.loads(invoke("plan", experiment, "--root", workspace / "root", "-o", "json").stdout)
    assert plan["totals"]["tokensAreUpperBound"] is False
    (method,) = plan["totals"]["tokenCounting"]
    assert method.startswith("4 bytes per token, an estimate: tiktoken could not fetch its o200k_base file")
    assert "$TIKTOKEN_CACHE_DIR" in method
    table = invoke("plan", experiment, "--root", workspace / "root").stdout
    assert "completion tokens (estimate)" in table
    assert "prompt tokens are estimated, not counted" in table


def test_a_local_model_is_counted_with_its_own_tokenizer(
    workspace: Path, write_experiment: Any, invoke: Invoke, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The transformers backend: plan counts each prompt as the model's chat template renders it, exactly what
    the worker then reports; completions stay bounded by max_tokens."""
    import torch

    from datasweep.testing.tiny import build_tiny_llama

    torch.set_num_threads(1)
    build_tiny_llama(workspace / "models" / "tiny-llama")
    spec = {
        "batch": "batch_20250101_tokens",
        "datasets": copa_dataset(),
        "generation": {
            "backend": "transformers",
            "model": "tiny-llama",
            "modelPath": {"path": "models/tiny-llama"},
            "maxTokens": 4,
            "temperature": 0.0,
        },
    }
    experiment = write_experiment("tokens-local", spec)
    root = workspace / "root"
    totals = json.loads(invoke("plan", experiment, "--root", root, "-o", "json").stdout)["totals"]
    (method,) = totals["tokenCounting"]
    assert method.startswith("the tokenizer of ")
    assert method.endswith("tiny-llama")
    assert totals["tokensAreUpperBound"] is True
    invoke("run", experiment, "--root", root)
    real = _generate_usage(root)["total"]
    assert real.requests == 5
    assert totals["promptTokens"] == real.prompt_tokens
    assert totals["completionTokens"] == 5 * 4 >= real.completion_tokens
