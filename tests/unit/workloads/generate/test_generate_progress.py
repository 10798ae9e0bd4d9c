"""Long generation steps are not silent: a wrong baseURL fails at once in one line; progress lines (requests
done/total, rate, ETA, tokens, cost) are plain text when not on a terminal, as in a Job's `kubectl logs`."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from datasweep.workloads.generate.cli import main

from .conftest import write_spec


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_progress_lines_count_requests_tokens_and_cost(api_key, openai_server, spec_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASWEEP_PROGRESS_INTERVAL", "0")
    spec = spec_factory({"base_url": openai_server.url, "model": "gpt-4o", "temperature": 0.7})
    result = CliRunner().invoke(main, ["--spec", str(write_spec(spec, tmp_path / "spec.yaml"))])
    assert result.exit_code == 0, result.output
    finished = [line for line in result.output.splitlines() if line.startswith("generate: 9/9 requests (")]
    assert len(finished) == 1, result.output  # the end of a phase is said once
    assert "requests/s" in finished[-1]
    assert "tokens" in finished[-1]
    assert "$0.0" in finished[-1]
    assert sum(line.startswith("validate: 9/9 requests (") for line in result.output.splitlines()) == 1
    assert "\r" not in result.output
    assert "\x1b" not in result.output
    assert openai_server.counts["POST /v1/chat/completions"] == 2 * 9  # the endpoint check sends no completion


@pytest.mark.parametrize("backend", ["openai-compatible", "openai-batch"])
def test_an_unreachable_base_url_fails_before_any_request_in_one_line(api_key, spec_factory, tmp_path, backend):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    spec = spec_factory({"backend": backend, "base_url": url, "max_retries": 5, "request_timeout": 600})
    result = CliRunner().invoke(main, ["--spec", str(write_spec(spec, tmp_path / "spec.yaml"))])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert f"cannot reach the endpoint {url}" in errors[0]
    assert "generation.baseURL" in errors[0]


def test_a_server_that_accepts_but_is_slow_to_answer_the_check_is_reachable(caplog: pytest.LogCaptureFixture) -> None:
    # CI saw a busy test server miss the check's timeout, and the pod failed "cannot reach" although the
    # server was up: a connection accepted is reachable (the kernel accepts it while nobody calls accept()).
    import asyncio

    from openai import AsyncOpenAI

    from datasweep.workloads.generate.backends import check_endpoint

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/v1"
        client = AsyncOpenAI(base_url=url, api_key="k")
        asyncio.run(check_endpoint(client, timeout_s=0.5))
    assert "accepted the connection but did not answer GET /models" in caplog.text


def test_a_refused_connection_is_tried_again_then_named_in_one_error(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from openai import AsyncOpenAI

    from datasweep.workloads.generate.backends import check_endpoint
    from datasweep.workloads.generate.inputs import GenerateInputError

    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(GenerateInputError, match=f"cannot reach the endpoint {url}"):
        asyncio.run(check_endpoint(AsyncOpenAI(base_url=url, api_key="k"), attempts=3, backoff_s=0.01))
    assert caplog.text.count("attempt ") == 2  # a line per failed try, the last one is the error
