"""A local OpenAI-compatible server for tests, benchmarks and demos (aiohttp, no network, no cost).

It implements what the generate worker uses: `/v1/chat/completions`, `/v1/files` (multipart upload,
retrieve, `/content`) and `/v1/batches` (create, retrieve, cancel, list) with the Batch API's life cycle
validating -> in_progress -> finalizing -> completed | failed | expired | cancelled, output and error files
and request counts. Answers are deterministic so tests can assert on them:

- a *validation* request (its prompt mentions both KEEP and REJECT) is answered `KEEP` or `REJECT` on the
  first line and a reason on the second; REJECT when the prompt contains `reject_marker`;
- any other request is answered `rephrased: <last line of the prompt>` (a `Text: ` prefix dropped).

Faults are injected through `ServerBehavior`: 429 with retry-after, 500s, fixed latency, batches that
expire (part of their requests done) or fail, per-request failures inside a batch, refused batch creates.

    with serve_openai(ServerBehavior(latency_s=0.2)) as server:
        client = OpenAI(base_url=server.url, api_key="test")
        server.counts["POST /v1/chat/completions"]

CLI for demos: `python -m datasweep.testing.openai_server --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

VALIDATION_KEYWORDS = ("KEEP", "REJECT")


@dataclass
class Fault:
    """One injected answer to a chat completion request instead of the real one."""

    status: int
    retry_after: float | None = None
    retry_after_ms: float | None = None
    message: str = "injected fault"


@dataclass
class ServerBehavior:
    latency_s: float = 0.0
    # consumed in order by chat completion requests (one fault per request)
    chat_faults: list[Fault] = field(default_factory=list)
    reject_marker: str = "[[reject]]"
    # Batch API
    hold_batches: bool = False  # batches stay in_progress until released (set False again)
    expire_next_batches: int = 0  # the next N batches expire with only part of their requests done
    expire_completed_fraction: float = 0.5
    fail_next_batches: int = 0  # the next N batches fail validation (no output at all)
    fail_custom_ids_once: set[str] = field(default_factory=set)  # per-request 500 inside a batch, once each
    # requests answered with an error inside a batch on every attempt
    always_fail_custom_ids: set[str] = field(default_factory=set)
    # consumed in order by `POST /v1/batches` (one fault per create), e.g. a 400 or a 429 insufficient_quota
    batch_create_faults: list[Fault] = field(default_factory=list)
    # usage counting: tokens of a text (default: its words); prompts add the chat framing of `message_tokens`
    # per message and `reply_tokens` per request, as OpenAI counts them
    count_tokens: Callable[[str], int] | None = None
    message_tokens: int = 0
    reply_tokens: int = 0
    # what the API answers with, as the real one does: the snapshot that served a model alias (gpt-4o ->
    # gpt-4o-2024-08-06; unlisted names are echoed) and the backend configuration's system_fingerprint
    served_models: dict[str, str] = field(default_factory=dict)
    system_fingerprint: str = "fp_datasweep_test"


def _words(text: str) -> int:
    return len(text.split())


def answer_for(messages: list[dict[str, Any]], reject_marker: str) -> str:
    """The deterministic answer to a chat request (see the module docstring)."""
    user_contents = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    prompt = user_contents[-1] if user_contents else ""
    if all(keyword in prompt for keyword in VALIDATION_KEYWORDS):
        if reject_marker and reject_marker in prompt:
            return "REJECT\nThe rephrased text contains the reject marker."
        return "KEEP\nThe rephrased text keeps the meaning."
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    last = last.removeprefix("Text:").strip()
    return f"rephrased: {last}"


def _error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class _State:
    def __init__(self, behavior: ServerBehavior) -> None:
        self.behavior = behavior
        self.files: dict[str, dict[str, Any]] = {}
        self.file_bytes: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_order: list[str] = []
        self.batch_plan: dict[str, str] = {}  # batch id -> "complete" | "expire" | "fail"
        self.ids = itertools.count(1)
        self.counts: Counter[str] = Counter()
        self.chat_log: list[dict[str, Any]] = []
        self.chat_arrivals: list[float] = []  # time.monotonic() of every chat request
        self.batch_request_log: list[str] = []  # custom ids of every request submitted in a batch
        self.lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):06d}"

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        text = answer_for(messages, self.behavior.reject_marker)
        count = self.behavior.count_tokens or _words
        framing = self.behavior.message_tokens * len(messages) + self.behavior.reply_tokens
        prompt_tokens = sum(count(str(m.get("content") or "")) for m in messages) + framing
        completion_tokens = count(text)
        return {
            "id": self.new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.behavior.served_models.get(str(body.get("model")), str(body.get("model") or "unknown")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": self.behavior.system_fingerprint,
        }

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self.new_id("file")
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        self.files[file_id] = meta
        self.file_bytes[file_id] = data
        return meta

    def run_batch(self, batch: dict[str, Any], done_fraction: float) -> None:
        """Answer the batch's requests: output file for successes, error file for the rest."""
        lines = self.file_bytes[batch["input_file_id"]].decode().splitlines()
        requests = [json.loads(line) for line in lines if line.strip()]
        cutoff = int(len(requests) * done_fraction)
        outputs: list[str] = []
        errors: list[str] = []
        for position, request in enumerate(requests):
            custom_id = request["custom_id"]
            self.batch_request_log.append(custom_id)
            request_id = self.new_id("req")
            if position >= cutoff:
                errors.append(
                    json.dumps(
                        {
                            "id": self.new_id("batch_req"),
                            "custom_id": custom_id,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": "This request could not be executed.",
                            },
                        }
                    )
                )
                continue
            failing = custom_id in self.behavior.always_fail_custom_ids
            if custom_id in self.behavior.fail_custom_ids_once:
                self.behavior.fail_custom_ids_once.discard(custom_id)
                failing = True
            if failing:
                errors.append(
                    json.dumps(
                        {
                            "id": self.new_id("batch_req"),
                            "custom_id": custom_id,
                            "response": {
                                "status_code": 500,
                                "request_id": request_id,
                                "body": _error_body("injected batch request failure", "server_error"),
                            },
                            "error": None,
                        }
                    )
                )
                continue
            outputs.append(
                json.dumps(
                    {
                        "id": self.new_id("batch_req"),
                        "custom_id": custom_id,
                        "response": {
                            "status_code": 200,
                            "request_id": request_id,
                            "body": self.completion(request.get("body") or {}),
                        },
                        "error": None,
                    }
                )
            )
        if outputs:
            batch["output_file_id"] = self.add_file(
                ("\n".join(outputs) + "\n").encode(), f"{batch['id']}_output.jsonl", "batch_output"
            )["id"]
        if errors:
            batch["error_file_id"] = self.add_file(
                ("\n".join(errors) + "\n").encode(), f"{batch['id']}_error.jsonl", "batch_output"
            )["id"]
        batch["request_counts"] = {"total": len(requests), "completed": len(outputs), "failed": len(errors)}

    def advance(self, batch: dict[str, Any]) -> None:
        """One step of the life cycle per retrieve: deterministic for tests, quick for demos."""
        now = int(time.time())
        status = batch["status"]
        plan = self.batch_plan[batch["id"]]
        if status == "validating":
            if plan == "fail":
                batch.update(
                    status="failed",
                    failed_at=now,
                    errors={
                        "object": "list",
                        "data": [{"code": "invalid_request", "message": "injected batch failure", "line": None}],
                    },
                )
            else:
                total = len(self.file_bytes[batch["input_file_id"]].decode().splitlines())
                batch.update(
                    status="in_progress",
                    in_progress_at=now,
                    request_counts={"total": total, "completed": 0, "failed": 0},
                )
        elif status == "in_progress":
            if self.behavior.hold_batches:
                return
            if plan == "expire":
                self.run_batch(batch, self.behavior.expire_completed_fraction)
                batch.update(status="expired", expired_at=now)
            else:
                batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            self.run_batch(batch, 1.0)
            batch.update(status="completed", completed_at=now)
        elif status == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)


class OpenAITestServer:
    """The server in a background thread on 127.0.0.1 (free port unless given)."""

    def __init__(self, behavior: ServerBehavior | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behavior = behavior or ServerBehavior()
        self.state = _State(self.behavior)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---- what tests read ----
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def counts(self) -> Counter[str]:
        return self.state.counts

    @property
    def chat_log(self) -> list[dict[str, Any]]:
        return self.state.chat_log

    @property
    def batches(self) -> dict[str, dict[str, Any]]:
        return self.state.batches

    @property
    def batch_request_log(self) -> list[str]:
        return self.state.batch_request_log

    # ---- handlers ----
    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_and_count], client_max_size=512 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}", self._file)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel_batch)
        return app

    @web.middleware
    async def _auth_and_count(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        # Count a request once it has fully arrived: one cut off mid-body (its client killed) is never served,
        # as the real API would not serve or bill it. aiohttp keeps the body for the handler; multipart uploads
        # are streamed by their handler, so they are counted on arrival.
        if not request.content_type.startswith("multipart/"):
            await request.read()
        with self.state.lock:
            self.state.counts[f"{request.method} {template}"] += 1
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response(
                _error_body("missing API key", "invalid_request_error", "invalid_api_key"), status=401
            )
        response: web.StreamResponse = await handler(request)
        return response

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self.state.lock:
            self.state.chat_log.append(body)
            self.state.chat_arrivals.append(time.monotonic())
            fault = self.behavior.chat_faults.pop(0) if self.behavior.chat_faults else None
        if self.behavior.latency_s:
            await asyncio.sleep(self.behavior.latency_s)
        if fault is not None:
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            error_type = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            return web.json_response(
                _error_body(fault.message, error_type, error_type), status=fault.status, headers=headers
            )
        if not body.get("messages"):
            return web.json_response(
                _error_body("messages is required", "invalid_request_error", param="messages"), status=400
            )
        return web.json_response(self.state.completion(body))

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        purpose = str(form.get("purpose") or "")
        if upload is None or not hasattr(upload, "file"):
            return web.json_response(_error_body("file is required", "invalid_request_error", param="file"), status=400)
        data = upload.file.read()
        if purpose == "batch":
            for number, line in enumerate(data.decode().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if not isinstance(entry["custom_id"], str) or not isinstance(entry["body"], dict):
                        raise TypeError("custom_id must be a string and body an object")
                except (ValueError, KeyError, TypeError):
                    return web.json_response(
                        _error_body(f"line {number} is not a batch request", "invalid_request_error"),
                        status=400,
                    )
        with self.state.lock:
            meta = self.state.add_file(data, str(getattr(upload, "filename", "upload")), purpose)
        return web.json_response(meta)

    async def _file(self, request: web.Request) -> web.Response:
        meta = self.state.files.get(request.match_info["file_id"])
        if meta is None:
            return web.json_response(_error_body("no such file", "invalid_request_error"), status=404)
        return web.json_response(meta)

    async def _file_content(self, request: web.Request) -> web.Response:
        data = self.state.file_bytes.get(request.match_info["file_id"])
        if data is None:
            return web.json_response(_error_body("no such file", "invalid_request_error"), status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self.state.lock:
            fault = self.behavior.batch_create_faults.pop(0) if self.behavior.batch_create_faults else None
        if fault is not None:
            error_type = {400: "invalid_request_error", 429: "insufficient_quota"}.get(fault.status, "server_error")
            return web.json_response(_error_body(fault.message, error_type, error_type), status=fault.status)
        input_file_id = body.get("input_file_id")
        if input_file_id not in self.state.files:
            return web.json_response(
                _error_body("input_file_id not found", "invalid_request_error", param="input_file_id"),
                status=400,
            )
        if body.get("completion_window") != "24h" or body.get("endpoint") != "/v1/chat/completions":
            return web.json_response(
                _error_body("completion_window must be 24h, endpoint /v1/chat/completions", "invalid_request_error"),
                status=400,
            )
        now = int(time.time())
        with self.state.lock:
            batch_id = self.state.new_id("batch")
            if self.behavior.fail_next_batches > 0:
                self.behavior.fail_next_batches -= 1
                plan = "fail"
            elif self.behavior.expire_next_batches > 0:
                self.behavior.expire_next_batches -= 1
                plan = "expire"
            else:
                plan = "complete"
            self.state.batch_plan[batch_id] = plan
            batch: dict[str, Any] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "errors": None,
                "input_file_id": input_file_id,
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + 24 * 3600,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }
            self.state.batches[batch_id] = batch
            self.state.batch_order.append(batch_id)
        return web.json_response(batch)

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        with self.state.lock:
            batch = self.state.batches.get(request.match_info["batch_id"])
            if batch is None:
                return web.json_response(_error_body("no such batch", "invalid_request_error"), status=404)
            self.state.advance(batch)
            return web.json_response(dict(batch))

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        with self.state.lock:
            batch = self.state.batches.get(request.match_info["batch_id"])
            if batch is None:
                return web.json_response(_error_body("no such batch", "invalid_request_error"), status=404)
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch.update(status="cancelling", cancelling_at=int(time.time()))
            return web.json_response(dict(batch))

    async def _list_batches(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self.state.lock:
            ordered = list(reversed(self.state.batch_order))
            if after in ordered:
                ordered = ordered[ordered.index(after) + 1 :]
            page = [dict(self.state.batches[batch_id]) for batch_id in ordered[:limit]]
            has_more = len(ordered) > limit
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": has_more,
            }
        )

    # ---- life cycle ----
    def start(self) -> OpenAITestServer:
        self._thread = threading.Thread(target=self._serve, name="openai-test-server", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"test server failed to start: {self._error}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            runner = web.AppRunner(self.build_app(), access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, backlog=1024)
            loop.run_until_complete(site.start())
            self._runner = runner
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_openai(behavior: ServerBehavior | None = None, port: int = 0) -> Iterator[OpenAITestServer]:
    """Run the test server on 127.0.0.1 for the duration of the block."""
    server = OpenAITestServer(behavior, port=port)
    with server:
        yield server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible server (chat, files, batches) for demos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat completion")
    parser.add_argument("--reject-marker", default="[[reject]]", help="validation prompts containing it are rejected")
    args = parser.parse_args(argv)
    server = OpenAITestServer(
        ServerBehavior(latency_s=args.latency, reject_marker=args.reject_marker), args.host, args.port
    )
    web.run_app(server.build_app(), host=args.host, port=args.port, print=lambda *_: None)


if __name__ == "__main__":
    print("datasweep test OpenAI server: base URL http://HOST:PORT/v1 (any API key)", flush=True)
    main()
