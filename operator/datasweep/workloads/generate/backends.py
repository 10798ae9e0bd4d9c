"""Chat backends: synchronous chat completions (OpenAI or any compatible server) and local transformers.

Every backend takes the requests still to do and records each answer in the phase's journal as soon as it
arrives; it returns the requests that failed for good (after the SDK's retries) with their error.
The Batch API backend lives in `batch_api.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from datasweep.workloads.generate.inputs import GenerateInputError
from datasweep.workloads.generate.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    custom_id: str
    body: dict[str, Any]  # chat.completions.create keyword arguments (model, messages, sampling)


@dataclass
class ChatResult:
    custom_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    model: str | None = None  # as the API names the model that answered (provenance in the request store)
    system_fingerprint: str | None = None

    def journal_entry(self) -> dict[str, Any]:
        return {
            "custom_id": self.custom_id,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
        }


Failure = tuple[str, str]  # (custom_id, error message)


class Backend(Protocol):
    async def run(self, requests: Sequence[ChatRequest], journal: Journal) -> list[Failure]: ...

    async def aclose(self) -> None: ...


def result_from_completion(custom_id: str, completion: Any) -> ChatResult:
    """A ChatResult from a chat.completion (SDK object or the plain dict of a batch output line)."""
    data = completion if isinstance(completion, dict) else completion.model_dump()
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") or {}
    usage = data.get("usage") or {}
    return ChatResult(
        custom_id=custom_id,
        text=str(message.get("content") or ""),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choices[0].get("finish_reason"),
        model=data.get("model"),
        system_fingerprint=data.get("system_fingerprint"),
    )


def make_async_client(api_key: str, base_url: str | None, max_retries: int, timeout: float) -> AsyncOpenAI:
    # The SDK retries 408/409/429/5xx and connection errors itself, waiting what retry-after(-ms) says
    # (up to 60 s) or exponential backoff with jitter otherwise.
    return AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout)


async def check_endpoint(
    client: AsyncOpenAI, timeout_s: float = 15.0, attempts: int = 3, backoff_s: float = 1.0
) -> None:
    """One cheap request (GET /models) before fanning out: an unreachable or wrong baseURL, or a refused key, is
    one line within seconds instead of minutes of retries. A server without /models is fine, and so is one that
    accepts the connection but is too busy to answer in time: it is reachable, the requests' own timeouts and
    retries deal with it. A refused or timed-out connection is tried `attempts` times (a server still starting)."""
    where = str(client.base_url).rstrip("/")
    for attempt in range(1, attempts + 1):
        try:
            await client.with_options(max_retries=0, timeout=timeout_s).models.list()
            return
        except openai.APITimeoutError as exc:
            # By name: the SDK's transport (httpx, httpx2 since openai 3) names its connect timeout so.
            if type(exc.__cause__).__name__ != "ConnectTimeout":
                log.warning(
                    "the endpoint %s accepted the connection but did not answer GET /models within %.0fs: going on",
                    where,
                    timeout_s,
                )
                return
            unreachable: Exception = exc
        except openai.APIConnectionError as exc:
            unreachable = exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise GenerateInputError(
                f"the endpoint {where} refused the API key ({type(exc).__name__}); check the API key secret"
            ) from exc
        except openai.APIStatusError:
            return  # reachable: servers that do not list models answer 404 here
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "cannot reach the endpoint %s (%s), attempt %d of %d: trying again in %.0fs",
                where,
                type(unreachable).__name__,
                attempt,
                attempts,
                delay,
            )
            await asyncio.sleep(delay)
    raise GenerateInputError(
        f"cannot reach the endpoint {where} ({type(unreachable).__name__}: {unreachable}); check "
        "generation.baseURL and that the server is up"
    ) from unreachable


class ChatCompletionsBackend:
    """`concurrency` requests in flight at once; each retried by the SDK, then reported as failed."""

    def __init__(self, client: AsyncOpenAI, concurrency: int) -> None:
        self.client = client
        self.concurrency = concurrency

    async def run(self, requests: Sequence[ChatRequest], journal: Journal) -> list[Failure]:
        failures: list[Failure] = []
        queue = iter(requests)
        fatal: list[BaseException] = []

        async def worker() -> None:
            for request in queue:
                if fatal:
                    return
                try:
                    # client.post: the SDK's request path (auth, retries, error types) without the
                    # per-call TypedDict transform of `chat.completions.create`, which cost more CPU than
                    # everything else together; our bodies are plain JSON already.
                    completion = await self.client.post("/chat/completions", body=request.body, cast_to=ChatCompletion)
                except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                    fatal.append(exc)
                    return
                except openai.NotFoundError as exc:
                    fatal.append(exc)
                    return
                except openai.APIError as exc:
                    failures.append((request.custom_id, f"{type(exc).__name__}: {exc}"))
                    continue
                journal.add(result_from_completion(request.custom_id, completion).journal_entry())

        workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(requests))))]
        try:
            await asyncio.gather(*workers)
        finally:
            await journal.drain()
        if fatal:
            exc = fatal[0]
            raise GenerateInputError(
                f"the API refused the request ({type(exc).__name__}: {exc}); check the API key secret, "
                "the model name and base_url"
            ) from exc
        return failures

    async def aclose(self) -> None:
        await self.client.close()


class TransformersBackend:
    """Local generation from a model directory: left-padded batches, the chat template when there is one."""

    def __init__(self, model_paths: dict[str, Path], batch_size: int, device: str | None, seed: int | None) -> None:
        self.model_paths = model_paths  # request model name -> directory
        self.batch_size = batch_size
        self.device_name = device
        self.seed = seed
        self.loaded: dict[str, tuple[Any, Any]] = {}
        self.gpu_seconds = 0.0

    def _load(self, name: str) -> tuple[Any, Any]:
        if name not in self.loaded:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self.model_paths[name]
            device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
            model = model.to(device)  # type: ignore[arg-type]
            model.eval()
            self.loaded[name] = (model, tokenizer)
        return self.loaded[name]

    @staticmethod
    def _prompt_text(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
        if getattr(tokenizer, "chat_template", None):
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def _generate(self, chunk: Sequence[ChatRequest]) -> list[ChatResult]:
        import torch

        body = chunk[0].body
        model, tokenizer = self._load(str(body["model"]))
        texts = [self._prompt_text(tokenizer, list(request.body["messages"])) for request in chunk]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        # Seeded from the requests themselves: a resumed run reproduces what a single run would give.
        digest = hashlib.sha256("".join(r.custom_id for r in chunk).encode()).digest()
        torch.manual_seed((self.seed or 0) ^ int.from_bytes(digest[:4], "big"))
        temperature = float(body.get("temperature") or 0.0)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": float(body.get("top_p") or 1.0)}
            if temperature > 0
            else {"do_sample": False}
        )
        started = time.perf_counter()
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=int(body.get("max_tokens") or 256),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        if model.device.type == "cuda":
            self.gpu_seconds += time.perf_counter() - started
        prompt_width = encoded["input_ids"].shape[1]
        results = []
        for row, request in enumerate(chunk):
            generated = output[row, prompt_width:]
            length = int((generated != tokenizer.pad_token_id).sum())
            ended = bool((generated == tokenizer.eos_token_id).any())
            text = tokenizer.decode(generated, skip_special_tokens=True)
            results.append(
                ChatResult(
                    custom_id=request.custom_id,
                    text=text.strip(),
                    prompt_tokens=int(encoded["attention_mask"][row].sum()),
                    completion_tokens=length,
                    finish_reason="stop" if ended else "length",
                )
            )
        return results

    async def run(self, requests: Sequence[ChatRequest], journal: Journal) -> list[Failure]:
        # chunks of one model and one sampling setting, in order
        chunks: list[list[ChatRequest]] = []
        for request in requests:
            key = (request.body["model"], request.body.get("temperature"), request.body.get("max_tokens"))
            last = chunks[-1] if chunks else None
            if (
                last
                and len(last) < self.batch_size
                and (last[0].body["model"], last[0].body.get("temperature"), last[0].body.get("max_tokens")) == key
            ):
                last.append(request)
            else:
                chunks.append([request])
        for chunk in chunks:
            for result in await asyncio.to_thread(self._generate, chunk):
                journal.add(result.journal_entry())
            await journal.drain()
        return []

    async def aclose(self) -> None:
        self.loaded.clear()
