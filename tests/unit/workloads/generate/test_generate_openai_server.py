"""The local OpenAI-compatible server answers in shapes the official SDK's own types validate."""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from datasweep.testing.openai_server import ServerBehavior, answer_for, serve_openai


def request_line(custom_id: str, content: str) -> str:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_sdk_types_validate_every_answer():
    with serve_openai() as server:
        client = OpenAI(base_url=server.url, api_key="test", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Rephrase.\nText: a cat"}]
        )
        completion = ChatCompletion.model_validate(json.loads(raw.http_response.text))
        assert completion.choices[0].message.content == "rephrased: a cat"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 3)

        payload = (request_line("a", "Text: one") + "\n" + request_line("b", "Text: two") + "\n").encode()
        uploaded = client.files.create(file=("in.jsonl", payload), purpose="batch")
        FileObject.model_validate(uploaded.model_dump())
        assert client.files.retrieve(uploaded.id).bytes == len(payload)
        assert client.files.content(uploaded.id).content == payload

        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        statuses = [batch.status]
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            raw_batch = client.batches.with_raw_response.retrieve(batch.id)
            batch = Batch.model_validate(json.loads(raw_batch.http_response.text))
            statuses.append(batch.status)
        assert statuses == ["validating", "in_progress", "finalizing", "completed"]
        assert batch.request_counts is not None
        assert batch.request_counts.completed == 2
        assert batch.output_file_id is not None
        lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
        assert {line["custom_id"] for line in lines} == {"a", "b"}
        for line in lines:
            ChatCompletion.model_validate(line["response"]["body"])
        assert [b.id for b in client.batches.list()] == [batch.id]


def test_cancel_list_pages_and_auth():
    with serve_openai(ServerBehavior(hold_batches=True)) as server:
        client = OpenAI(base_url=server.url, api_key="test", max_retries=0)
        uploaded = client.files.create(file=("in.jsonl", request_line("a", "x").encode()), purpose="batch")
        ids = [
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            for _ in range(3)
        ]
        assert client.batches.retrieve(ids[0]).status == "in_progress"
        assert client.batches.retrieve(ids[0]).status == "in_progress"  # held
        assert client.batches.cancel(ids[0]).status == "cancelling"
        assert client.batches.retrieve(ids[0]).status == "cancelled"
        page = client.batches.list(limit=2)
        assert [b.id for b in page.data] == [ids[2], ids[1]]
        assert [b.id for b in client.batches.list(limit=2)] == list(reversed(ids))  # auto-pagination
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
        anonymous = OpenAI(base_url=server.url, api_key="test", max_retries=0, default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_failed_and_expired_batches():
    behavior = ServerBehavior(fail_next_batches=1, expire_next_batches=1, expire_completed_fraction=0.5)
    with serve_openai(behavior) as server:
        client = OpenAI(base_url=server.url, api_key="test", max_retries=0)
        payload = "".join(request_line(f"r{i}", "Text: x") + "\n" for i in range(4)).encode()
        uploaded = client.files.create(file=("in.jsonl", payload), purpose="batch")
        failed = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        expired = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        failed = client.batches.retrieve(failed.id)
        assert failed.status == "failed"
        assert failed.errors is not None
        assert failed.errors.data
        for _ in range(2):
            expired = client.batches.retrieve(expired.id)
        assert expired.status == "expired"
        assert expired.request_counts is not None
        assert (expired.request_counts.completed, expired.request_counts.failed) == (2, 2)
        assert expired.error_file_id is not None
        errors = [json.loads(line) for line in client.files.content(expired.error_file_id).text.splitlines()]
        assert [e["error"]["code"] for e in errors] == ["batch_expired", "batch_expired"]


def test_deterministic_answers():
    verdict = "Original: a\nRephrased: b\nAnswer KEEP or REJECT."
    assert answer_for([{"role": "user", "content": verdict}], "[[reject]]").startswith("KEEP\n")
    assert answer_for([{"role": "user", "content": verdict + " [[reject]]"}], "[[reject]]").startswith("REJECT\n")
    assert (
        answer_for([{"role": "user", "content": "Rephrase it.\n\nText: the cat sat"}], "x") == "rephrased: the cat sat"
    )
