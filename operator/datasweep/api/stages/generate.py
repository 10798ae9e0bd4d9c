"""Parameters of the `generate` stage (SPEC 6.1): rephrase + validate, or code scenarios (seed 001).

The operator maps one grid point of `spec.generation` + `spec.validation` onto these snake_case keys.
Fields listed in `OPERATIONAL_FIELDS` change how the work is done, never what it produces: they stay out
of the fingerprint. Every other field changes the result.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator

from datasweep.api._base import ParamsModel

GenerateTask = Literal["rephrase", "code-scenarios"]
GenerateBackend = Literal["openai", "openai-batch", "openai-compatible", "transformers"]

DEFAULT_REPHRASE_PROMPT = (
    "Rephrase the following text so that it keeps exactly the same meaning but uses different words. "
    "Answer with the rephrased text only.\n\nText: {text}"
)
DEFAULT_VALIDATION_PROMPT = (
    "You check rephrasings. Does the rephrased text keep the meaning of the original text?\n"
    "Original: {original}\nRephrased: {rephrased}\n"
    "Answer KEEP or REJECT on the first line, then a one-sentence reason."
)
DEFAULT_SCENARIO1_PROMPT = (
    "Write a realistic usage scenario (a user request and the expected behaviour) for the following function.\n\n{code}"
)
DEFAULT_SCENARIO2_PROMPT = (
    "Write a realistic usage scenario (a user request and the expected behaviour) for the following class.\n\n{code}"
)

# Longest prompt template, in characters (as spec.generation.prompt.text): every Job carries its worker spec in
# the Artifact object, and an object over the API server's ~1.5 MB request limit could never be created.
MAX_PROMPT_CHARS = 65536

# Fields that never change the produced data, each with the reason: excluded from the fingerprint by the
# planner. Every other field is fingerprinted (tests/unit/core/test_fingerprint_coverage.py checks both).
OPERATIONAL_FIELDS: dict[str, str] = {
    "backend": "how requests are sent (sync, Batch API, local); the model name and sampling settings decide the text",
    "base_url": "where the model named by `model` is served, not which model it is",
    "api_key_env": "where the worker finds its credential",
    "concurrency": "requests in flight; every request is independent",
    "max_retries": "retries of failed requests; a served request is the same request",
    "request_timeout": "how long one HTTP request may take",
    "poll_interval": "Batch API polling cadence",
    "max_poll_interval": "Batch API polling cadence",
    "max_batch_attempts": "how often failed Batch API requests are resubmitted before the worker gives up",
    "max_batch_requests": "how requests are split into batches; each request is independent",
    "max_batch_bytes": "how requests are split into batches; each request is independent",
    "completion_window": "Batch API deadline; a completed request does not depend on it",
    "prices": "cost estimate only, never the data",
    "transformers_batch_size": "prompts per forward pass (left-padded, masked); sampling is a random draw either way",
    "device": "where the local model runs",
    "request_reuse": "answers stored by an identical request are the same draw (docs/workloads/generate.md)",
    "cache_version": "salts request identities in the request store; the fingerprint takes spec.cacheVersion itself",
}


class PriceEntry(ParamsModel):
    """USD per million tokens."""

    input_per_million: float = Field(ge=0, description="USD per 1M prompt tokens")
    output_per_million: float = Field(ge=0, description="USD per 1M completion tokens")


class ValidationParams(ParamsModel):
    """The judge that keeps or rejects each generated text (SPEC: validation model, temperature, prompt)."""

    model: str = Field(default="gpt-4o", description="Validation model name (served by the same backend)")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Validation sampling temperature")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Validation nucleus sampling")
    max_tokens: int = Field(default=64, ge=1, le=32768, description="Longest verdict + reason, in tokens")
    prompt: str = Field(
        default=DEFAULT_VALIDATION_PROMPT,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Validation template; fields: every record field plus {original}, {rephrased}, {field}",
    )


class GenerateParams(ParamsModel):
    task: GenerateTask = Field(default="rephrase", description="rephrase (+ validate) or code-scenarios")
    backend: GenerateBackend = Field(
        default="openai",
        description="openai (sync chat completions), openai-batch (Batch API), openai-compatible "
        "(base_url: vLLM, llama.cpp, ollama) or transformers (local model directory)",
    )
    base_url: str | None = Field(
        default=None, description="API base URL (…/v1); required for openai-compatible, optional otherwise"
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",  # an environment variable name the Job can set
        description="Environment variable holding the API key (set by the Job from a Secret)",
    )
    model: str = Field(default="gpt-4o", min_length=1, description="Generation model name")
    model_path: str | None = Field(
        default=None,
        description="transformers backend: local model directory; defaults to the worker spec's baseModel, "
        "then to `model` when it is a directory",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Generation sampling temperature")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Generation nucleus sampling")
    max_tokens: int = Field(default=256, ge=1, le=131072, description="Longest generated text, in tokens")
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2, description="OpenAI frequency penalty")
    presence_penalty: float = Field(default=0.0, ge=-2, le=2, description="OpenAI presence penalty")
    seed: int | None = Field(
        default=None, description="Sampling seed sent to the API (best effort) and used by transformers"
    )
    system_prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="Optional system message before every prompt"
    )
    prompt: str = Field(
        default=DEFAULT_REPHRASE_PROMPT,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Generation template (str.format style, literal braces doubled); rephrase fields: every "
        "record field plus {text} (the value being rephrased) and {field} (its name); code-scenarios: every "
        "slice field plus {code} and {scenario}",
    )
    validation: ValidationParams | None = Field(
        default_factory=ValidationParams, description="Validation step; null skips it (every record kept)"
    )
    # rephrase
    rephrase_fields: list[str] = Field(
        default_factory=lambda: ["text"],
        min_length=1,
        description="rephrase: record fields rephrased (one request each); the original is kept as original_<field>",
    )
    id_field: str | None = Field(
        default=None,
        description="Record field holding the id; default: `id`, then `idx`, then the line number",
    )
    # code-scenarios (seed 001)
    type_field: str = Field(default="type", min_length=1, description="code-scenarios: slice type field")
    code_field: str = Field(default="code", min_length=1, description="code-scenarios: slice code field")
    scenario2_prompt: str = Field(
        default=DEFAULT_SCENARIO2_PROMPT,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="code-scenarios: template for class slices (scenario2); `prompt` is used for functions",
    )
    max_scenario1: int | None = Field(
        default=None,
        ge=0,
        description="code-scenarios: cap on function slices (scenario1), over all files (default) or per split",
    )
    max_scenario2: int | None = Field(
        default=None,
        ge=0,
        description="code-scenarios: cap on class slices (scenario2), over all files (default) or per split",
    )
    caps_per_split: bool = Field(
        default=False,
        description="code-scenarios: apply max_scenario1 / max_scenario2 to each split separately instead of "
        "overall (in file order: train, validation, test)",
    )
    # operational (never in the fingerprint, see OPERATIONAL_FIELDS)
    concurrency: int = Field(default=16, ge=1, le=1024, description="Requests in flight (sync backends)")
    max_retries: int = Field(
        default=6, ge=0, le=50, description="SDK retries per request on 408/409/429/5xx (honours retry-after)"
    )
    request_timeout: float = Field(default=120.0, gt=0, description="Seconds per HTTP request")
    poll_interval: float = Field(default=10.0, gt=0, description="Batch API: first poll delay, seconds")
    max_poll_interval: float = Field(default=300.0, gt=0, description="Batch API: longest poll delay, seconds")
    max_batch_attempts: int = Field(
        default=3, ge=1, le=20, description="Batch API: submissions per request before giving up"
    )
    max_batch_requests: int = Field(
        default=50_000, ge=1, le=50_000, description="Batch API: requests per batch (OpenAI limit 50,000)"
    )
    max_batch_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        le=200 * 1024 * 1024,
        description="Batch API: bytes of request jsonl per batch (OpenAI limit 200 MB)",
    )
    completion_window: Literal["24h"] = Field(default="24h", description="Batch API completion window")
    prices: dict[str, PriceEntry] = Field(
        default_factory=dict,
        description="Price overrides by model name (USD per 1M tokens), merged over the default table",
    )
    transformers_batch_size: int = Field(default=8, ge=1, le=1024, description="transformers: prompts per step")
    device: str | None = Field(default=None, description="transformers: torch device (default cuda if available)")
    request_reuse: bool = Field(
        default=True,
        validation_alias=AliasChoices("requestReuse", "request_reuse"),  # the CRD spelling, or snake_case
        description="Use answers of identical requests stored on the volume instead of paying for them again "
        "(options.requestReuse: off for fresh samples); answers are stored either way",
    )
    cache_version: str = Field(
        default="1", max_length=64, description="spec.cacheVersion (set by the planner): salts request identities"
    )

    @model_validator(mode="before")
    @classmethod
    def _task_default_prompt(cls, data: Any) -> Any:
        # the default generation prompt depends on the task; an explicit prompt always wins
        if isinstance(data, dict) and data.get("prompt") is None:
            data = {key: value for key, value in data.items() if key != "prompt"}
            if data.get("task") == "code-scenarios":
                data["prompt"] = DEFAULT_SCENARIO1_PROMPT
        return data

    @model_validator(mode="after")
    def _check_backend(self) -> GenerateParams:
        if self.backend == "openai-compatible" and not self.base_url:
            raise ValueError("backend openai-compatible needs base_url (e.g. http://vllm:8000/v1)")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("max_poll_interval must be >= poll_interval")
        return self
