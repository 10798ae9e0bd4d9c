"""The OpenAI Batch API backend: pay half price, never pay twice.

State (`.work/batches-<phase>.json`, written atomically) records every submission: the custom ids it
carries, the uploaded input file, and the batch id. The batch id is persisted right after
`batches.create` and before any polling, so a restarted worker resumes polling the same batch. A crash
in the instant between create and persist is covered too: every batch carries `metadata.datasweep_key`,
and a submission with an input file but no batch id is looked up by that key before anything is resent.
The key is unique per artifact: `<fingerprint>:<run>:<phase>:<n>`, where `run` is a random id kept in the
state file, so datasets whose directories share a semantic name (Copa and CB) never adopt each other's
batch, and neither does a forced regeneration of the same fingerprint.

Terminal batches (completed, expired, cancelled, failed) are ingested: output lines are joined on
custom_id into the journal, ids found in the error file (or nowhere) are resubmitted, and only those,
up to `max_batch_attempts` submissions per id in one round. A run that finds ids whose attempts an earlier
run used up (it failed; the cause may be fixed now: a retried Job, a corrected Artifact) starts a new round:
those are sent again, never the answered ones.

The raw files stay in the artifact for audit (seed 001 keeps them): `batch_api/<phase>-<n>_input.jsonl`
(what was uploaded), `batch_api/<batch id>_output.jsonl` and `_errors.jsonl` (as downloaded) and
`batch_api/<batch id>.json` (the batch object when it ended).

A stop (SIGTERM: the Job suspended or deleted) cancels the batches in flight, to stop spending; they are marked
`stopped` and count as no attempt, and a resumed run polls them to their end, keeps what they answered and sends
the rest again. Ctrl-C (SIGINT, a local run) leaves them running: a rerun resumes polling them.

A refused `batches.create` (400, quota, auth) ends the run with the API's message (exit 2): the uploaded
input file is kept in the state, and a rerun submits it without uploading again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import openai
from openai import AsyncOpenAI

from datasweep.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from datasweep.workloads import stopping
from datasweep.workloads.generate.backends import ChatRequest, Failure, result_from_completion
from datasweep.workloads.generate.inputs import GenerateFailed, GenerateInputError
from datasweep.workloads.generate.journal import Journal

log = logging.getLogger(__name__)

ENDPOINT: Final = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
CRASH_ENV = "DATASWEEP_TEST_CRASH_AT"
RAW_DIR = "batch_api"


class InjectedCrash(BaseException):
    """Raised at a named point when DATASWEEP_TEST_CRASH_AT names it (tests of resume)."""


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        raise InjectedCrash(name)


def api_error_message(exc: openai.APIError) -> str:
    """The API's own message (`error.message` of the body), else the SDK's text, on one line."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or exc.message or exc)
    return " ".join(text.split())


def request_line(request: ChatRequest) -> str:
    return json.dumps(
        {"custom_id": request.custom_id, "method": "POST", "url": ENDPOINT, "body": request.body},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def split_into_batches(
    requests: Sequence[ChatRequest], max_requests: int, max_bytes: int
) -> list[list[tuple[ChatRequest, str]]]:
    """Consecutive chunks of at most `max_requests` lines and `max_bytes` bytes of jsonl."""
    chunks: list[list[tuple[ChatRequest, str]]] = []
    size = 0
    for request in requests:
        line = request_line(request) + "\n"
        length = len(line.encode())
        if length > max_bytes:
            raise GenerateInputError(
                f"request {request.custom_id} alone is {length} bytes, over the batch limit of {max_bytes}"
            )
        if not chunks or len(chunks[-1]) >= max_requests or size + length > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append((request, line))
        size += length
    return chunks


class BatchState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.submissions: list[dict[str, Any]] = []
        self.run = uuid.uuid4().hex[:12]
        self.round = 0  # attempts count within a round; a rerun after the attempts ran out starts the next
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.submissions = list(saved.get("submissions", []))
            self.run = str(saved.get("run") or self.run)
            self.round = int(saved.get("round") or 0)

    def save(self) -> None:
        atomic_write_json(self.path, {"run": self.run, "round": self.round, "submissions": self.submissions})

    def attempts(self) -> Counter[str]:
        """Submissions per custom id in the current round; a batch cancelled by a stop (SIGTERM) is not an attempt."""
        counts: Counter[str] = Counter()
        for submission in self.submissions:
            if int(submission.get("round") or 0) == self.round and not submission.get("stopped"):
                counts.update(submission["custom_ids"])
        return counts


class BatchBackend:
    def __init__(
        self,
        client: AsyncOpenAI,
        state_path: Path,
        phase: str,
        *,
        fingerprint: str,
        raw_dir: Path | None = None,
        poll_interval: float,
        max_poll_interval: float,
        max_attempts: int,
        max_requests: int,
        max_bytes: int,
        completion_window: str = "24h",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.state = BatchState(state_path)
        self.phase = phase
        self.fingerprint = fingerprint
        self.raw_dir = raw_dir
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.max_attempts = max_attempts
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.completion_window = completion_window
        self.sleep = sleep
        self.batch_ids: list[str] = []

    async def _find_by_key(self, key: str) -> str | None:
        async for batch in self.client.batches.list(limit=100):
            if (batch.metadata or {}).get("datasweep_key") == key:
                return batch.id
        return None

    async def _submit(self, chunk: list[tuple[ChatRequest, str]]) -> dict[str, Any]:
        number = len(self.state.submissions) + 1
        key = f"{self.fingerprint}:{self.state.run}:{self.phase}:{number}"
        submission: dict[str, Any] = {
            "key": key,
            "custom_ids": [request.custom_id for request, _ in chunk],
            "input_file_id": None,
            "batch_id": None,
            "status": "uploading",
            "ingested": False,
            "round": self.state.round,
        }
        self.state.submissions.append(submission)
        self.state.save()
        payload = "".join(line for _, line in chunk).encode()
        if self.raw_dir is not None:
            atomic_write_bytes(self.raw_dir / f"{self.phase}-{number:03d}_input.jsonl", payload)
        uploaded = await self.client.files.create(file=(f"{self.phase}-{number}.jsonl", payload), purpose="batch")
        submission["input_file_id"] = uploaded.id
        self.state.save()
        await self._create(submission)
        return submission

    async def _create(self, submission: dict[str, Any]) -> None:
        try:
            batch = await self.client.batches.create(
                input_file_id=submission["input_file_id"],
                endpoint=ENDPOINT,
                completion_window=self.completion_window,  # type: ignore[arg-type]
                metadata={"datasweep_key": submission["key"]},
            )
        except openai.APIStatusError as exc:
            where = (
                f"the uploaded input file {submission['input_file_id']} ({len(submission['custom_ids'])} requests) "
                "is kept and a rerun submits it again"
            )
            message = f"batches.create refused (HTTP {exc.status_code}): {api_error_message(exc)}; {where}"
            if exc.status_code < 500:  # 400 invalid, 401/403 key, 404, 429 quota: retrying now cannot help
                raise GenerateInputError(message) from exc
            raise GenerateFailed(message) from exc
        crash_point("batch-created")
        submission["batch_id"] = batch.id
        submission["status"] = batch.status
        self.state.save()  # persisted before the first poll: a restart resumes this batch
        log.info("submitted batch %s (%d requests)", batch.id, len(submission["custom_ids"]))
        crash_point("batch-submitted")

    async def _recover(self, submission: dict[str, Any]) -> bool:
        """A submission interrupted before its batch id was saved: find the batch or drop the submission."""
        if submission["input_file_id"] is not None:
            found = await self._find_by_key(submission["key"])
            if found is not None:
                submission["batch_id"] = found
                self.state.save()
                log.info("recovered batch %s of %s", found, submission["key"])
                return True
            await self._create(submission)
            return True
        submission["ingested"] = True  # never sent: forget it, its ids go back to pending
        submission["status"] = "abandoned"
        submission["custom_ids"] = []
        self.state.save()
        return False

    async def _download(self, file_id: str | None, raw_name: str) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = await self.client.files.content(file_id)
        if self.raw_dir is not None:
            atomic_write_text(self.raw_dir / raw_name, content.text)
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def _ingest(self, submission: dict[str, Any], batch: Any, journal: Journal) -> dict[str, str]:
        """Join outputs on custom_id into the journal; return the ids that failed, with why."""
        expected = set(submission["custom_ids"])
        failed: dict[str, str] = {}
        if self.raw_dir is not None:
            atomic_write_json(self.raw_dir / f"{batch.id}.json", batch.model_dump(mode="json"))
        for line in await self._download(batch.output_file_id, f"{batch.id}_output.jsonl"):
            custom_id = str(line.get("custom_id"))
            if custom_id not in expected:
                continue
            response = line.get("response") or {}
            if response.get("status_code") == 200 and not line.get("error"):
                journal.add(result_from_completion(custom_id, response.get("body") or {}).journal_entry())
            else:
                failed[custom_id] = f"status {response.get('status_code')}: {line.get('error') or response.get('body')}"
        for line in await self._download(batch.error_file_id, f"{batch.id}_errors.jsonl"):
            custom_id = str(line.get("custom_id"))
            if custom_id in expected and custom_id not in journal:
                error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error")
                failed[custom_id] = f"{batch.status}: {error}"
        await journal.drain()
        for custom_id in expected:
            if custom_id not in journal and custom_id not in failed:
                reason = batch.errors.model_dump() if batch.errors else "no output"
                failed[custom_id] = f"batch {batch.id} {batch.status}: {reason}"
        submission["status"] = batch.status
        submission["ingested"] = True
        submission["failed"] = len(failed)
        self.state.save()
        log.info(
            "batch %s %s: %d answered, %d to resubmit",
            batch.id,
            batch.status,
            len(expected) - len(failed),
            len(failed),
        )
        return failed

    async def run(self, requests: Sequence[ChatRequest], journal: Journal) -> list[Failure]:
        active: list[dict[str, Any]] = []  # the submissions in flight, kept current by `_run`
        try:
            return await self._run(requests, journal, active)
        except asyncio.CancelledError:
            if stopping.received() == signal.SIGTERM:  # a stop (suspended or deleted Job), not Ctrl-C
                await self._cancel(active)
            raise

    async def _cancel(self, active: list[dict[str, Any]], timeout_s: float = 10.0) -> None:
        """Cancel the batches in flight: stop spending. Marked `stopped`, they are no attempt of their requests;
        a resumed run polls them to their end (cancelled), keeps what they answered and sends the rest again."""
        for submission in active:
            submission["stopped"] = True
        self.state.save()

        async def cancel(batch_id: str) -> None:
            try:  # all at once, within the pod's grace period (30 s by default)
                await asyncio.wait_for(self.client.batches.cancel(batch_id), timeout_s)
                log.info("cancelled batch %s (stopped)", batch_id)
            except (openai.APIError, TimeoutError) as exc:  # it runs on; a resumed run ingests it as it ends
                log.warning("cancelling batch %s failed: %s", batch_id, exc)

        await asyncio.gather(*(cancel(submission["batch_id"]) for submission in active))

    async def _run(
        self, requests: Sequence[ChatRequest], journal: Journal, active: list[dict[str, Any]]
    ) -> list[Failure]:
        by_id = {request.custom_id: request for request in requests if request.custom_id not in journal}
        for submission in self.state.submissions:
            if submission["ingested"]:
                continue
            if submission["batch_id"] is None and not await self._recover(submission):
                continue
            active.append(submission)
            self.batch_ids.append(submission["batch_id"])
        in_flight = {custom_id for submission in active for custom_id in submission["custom_ids"]}
        attempts = self.state.attempts()
        used_up = [c for c in by_id if c not in in_flight and attempts[c] >= self.max_attempts]
        if used_up:  # an earlier run gave up on these: this rerun (after a fix) sends them again
            self.state.round += 1
            self.state.save()
            log.info(
                "%s: %d request(s) used up their %d Batch API attempts in an earlier run: sending them again "
                "(round %d)",
                self.phase,
                len(used_up),
                self.max_attempts,
                self.state.round + 1,
            )
        last_errors: dict[str, str] = {}
        final_failures: list[Failure] = []
        while True:
            in_flight = {custom_id for submission in active for custom_id in submission["custom_ids"]}
            attempts = self.state.attempts()
            to_send: list[ChatRequest] = []
            for custom_id, request in by_id.items():
                if custom_id in journal or custom_id in in_flight:
                    continue
                if attempts[custom_id] >= self.max_attempts:
                    if custom_id not in {f[0] for f in final_failures}:
                        final_failures.append((custom_id, last_errors.get(custom_id, "batch attempts exhausted")))
                    continue
                to_send.append(request)
            for chunk in split_into_batches(to_send, self.max_requests, self.max_bytes):
                submission = await self._submit(chunk)
                active.append(submission)
                self.batch_ids.append(submission["batch_id"])
            if not active:
                break
            delay = self.poll_interval
            while active:
                await self.sleep(delay)
                delay = min(delay * 1.5, self.max_poll_interval)
                still_active = []
                for submission in active:
                    try:
                        batch = await self.client.batches.retrieve(submission["batch_id"])
                    except openai.APIError as exc:  # transient beyond the SDK's retries: poll again later
                        log.warning("polling batch %s failed: %s", submission["batch_id"], exc)
                        still_active.append(submission)
                        continue
                    if batch.status in TERMINAL:
                        last_errors.update(await self._ingest(submission, batch, journal))
                        continue
                    if batch.status != submission["status"]:
                        submission["status"] = batch.status
                        self.state.save()
                    still_active.append(submission)
                ended = len(still_active) < len(active)
                active[:] = still_active
                if ended:
                    break  # resubmit what failed while the rest keep running
        return final_failures

    async def aclose(self) -> None:
        await self.client.close()
