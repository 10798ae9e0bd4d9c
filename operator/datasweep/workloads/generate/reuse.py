"""Request-level reuse for the generate worker: answers of identical requests come from the volume's request
store (store/requests.py) instead of the API, and every answer paid for is stored for the next worker.

A reused answer goes into the phase's journal like a received one, marked `reused`: the journal stays the
worker's resume state, and its usage counts apart (savedByReuse), never as spending.

The Artifact's references file lists every identity it uses, appended before the store is read or written
(`datasweep gc` keeps what any Artifact lists): a gc while this worker runs keeps its answers. A gc that
listed the references just before the append is covered by its grace period (answers stored recently stay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datasweep.api.stages.generate import GenerateParams
from datasweep.store.atomic import append_lines_durably
from datasweep.store.layout import SHARED
from datasweep.store.requests import RequestStore, StoredAnswer, request_identity
from datasweep.workloads.generate.backends import ChatRequest, ChatResult
from datasweep.workloads.generate.journal import Journal

log = logging.getLogger("datasweep.generate")

REUSED = "reused"  # journal entry key: the answer came from the request store


def backend_family(params: GenerateParams, model_paths: dict[str, Path] | None = None) -> str:
    """Which answers a request may share: the Batch API and sync chat completions serve the same OpenAI models;
    a compatible server's model names are its own; a local model is its directory."""
    if params.backend in ("openai", "openai-batch"):
        return "openai"
    if params.backend == "transformers":
        paths = sorted((name, str(path)) for name, path in (model_paths or {}).items())
        return f"transformers:{paths}"
    return params.backend


def store_for(output_dir: Path) -> RequestStore | None:
    """The request store of the volume an Artifact directory (<root>/_shared/<Dataset>/<name>) lives on."""
    shared = output_dir.parent.parent
    return RequestStore.under(shared) if shared.name == SHARED else None


class RequestReuse:
    def __init__(
        self, store: RequestStore, family: str, salt: str, lookup: bool = True, references: Path | None = None
    ) -> None:
        self.store = store
        self.family = family
        self.salt = salt
        self.lookup_enabled = lookup
        self.lookup_seconds = 0.0
        self.references = references  # where this Artifact lists the identities it uses (for gc)
        self._identities: dict[str, str] = {}  # custom_id -> identity (unique over the phases)
        self._listed: set[str] | None = None  # what the references file holds (read once)

    def identity(self, request: ChatRequest) -> str:
        known = self._identities.get(request.custom_id)
        if known is None:
            known = self._identities[request.custom_id] = request_identity(self.family, request.body, salt=self.salt)
        return known

    def stored(self, requests: Sequence[ChatRequest]) -> dict[str, StoredAnswer]:
        """custom_id -> the stored answer of each of `requests` that has one (none while lookups are off)."""
        if not self.lookup_enabled or not requests:
            return {}
        started = time.perf_counter()
        identities = {request.custom_id: self.identity(request) for request in requests}
        listing = time.perf_counter()
        self._list(identities.values())  # before the lookup: a gc from now on keeps what it finds
        started += time.perf_counter() - listing  # lookupSeconds counts identities and lookup, not the listing
        try:
            found = self.store.lookup(identities.values())
        except OSError as error:
            log.warning("request store %s unreadable (%s): sending every request", self.store.root, error)
            return {}
        finally:
            self.lookup_seconds += time.perf_counter() - started
        return {custom_id: found[identity] for custom_id, identity in identities.items() if identity in found}

    def fill(self, requests: Sequence[ChatRequest], journal: Journal) -> list[ChatRequest]:
        """Journal the stored answers of `requests` as reused; returns the requests still to send."""
        stored = self.stored(requests)
        for custom_id, answer in stored.items():
            journal.add(_reused_entry(custom_id, answer))
        return [request for request in requests if request.custom_id not in stored]

    def distinct(
        self, todo: Sequence[ChatRequest], requests: Sequence[ChatRequest], journal: Journal
    ) -> tuple[list[ChatRequest], dict[str, list[str]]]:
        """One request of `todo` per identity (none while lookups are off: then every request is a fresh draw).

        A request identical to one the journal answered (of `requests`, in an earlier run) is journaled as
        reused now; the others identical to a request sent are returned as {sent custom_id: their custom_ids},
        for `copy_answers` once the sent one is answered: paid once, whatever the backend."""
        if not self.lookup_enabled:
            return list(todo), {}
        answered = {self.identity(r): r.custom_id for r in requests if r.custom_id in journal}
        sent: dict[str, str] = {}  # identity -> the custom_id sent for it
        copies: dict[str, list[str]] = {}
        send: list[ChatRequest] = []
        for request in todo:
            identity = self.identity(request)
            if identity in answered:
                journal.add(_copied_entry(request.custom_id, identity, journal.done[answered[identity]]))
            elif identity in sent:
                copies.setdefault(sent[identity], []).append(request.custom_id)
            else:
                sent[identity] = request.custom_id
                send.append(request)
        return send, copies

    def copy_answers(self, copies: dict[str, list[str]], journal: Journal) -> None:
        """Journal the answer of each sent request for the identical requests that were not sent."""
        for custom_id, others in copies.items():
            entry = journal.done.get(custom_id)
            if entry is None:
                continue  # it failed: so do they (a rerun sends one of them again)
            for other in others:
                journal.add(_copied_entry(other, self._identities[custom_id], entry))

    def record(self, requests: Sequence[ChatRequest], journal: Journal) -> int:
        """Store the answers this Artifact paid for (the journal's, across restarts) that are not stored yet."""
        answered = [request for request in requests if request.custom_id in journal]
        answers = [
            _stored_answer(self.identity(request), journal.done[request.custom_id])
            for request in answered
            if not journal.done[request.custom_id].get(REUSED)
        ]
        self._list(self.identity(request) for request in answered)  # before the answers are stored
        try:
            return self.store.put(answers)
        except OSError as error:
            log.warning("could not store answers in %s (%s): later runs pay for them again", self.store.root, error)
            return 0

    def _list(self, identities: Iterable[str]) -> None:
        """Append the identities the references file does not hold yet (flushed to disk before returning)."""
        if self.references is None:
            return
        if self._listed is None:
            try:
                self._listed = set(self.references.read_text(encoding="ascii", errors="replace").split())
            except OSError:
                self._listed = set()
        new = sorted(set(identities) - self._listed)
        if not new:
            return
        try:
            append_lines_durably(self.references, new)
        except OSError as error:
            log.warning("could not list request identities in %s (%s): a gc may drop them", self.references, error)
            return
        self._listed.update(new)


def _reused_entry(custom_id: str, answer: StoredAnswer) -> dict[str, Any]:
    result = ChatResult(
        custom_id,
        answer.text,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.finish_reason,
        answer.model,
        answer.system_fingerprint,
    )
    return {**result.journal_entry(), REUSED: True, "identity": answer.identity}


def _copied_entry(custom_id: str, identity: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An identical request's journal entry under another custom_id: not paid again, so counted as reused."""
    return {**entry, "custom_id": custom_id, REUSED: True, "identity": identity}


def _stored_answer(identity: str, entry: dict[str, Any]) -> StoredAnswer:
    """A journal entry (ChatResult.journal_entry) as the store keeps it: the same fields under the identity."""
    return StoredAnswer.from_json({**entry, "id": identity})
