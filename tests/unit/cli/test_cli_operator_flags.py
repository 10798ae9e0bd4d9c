"""`datasweep operator` configures logging as `kopf run` does: the chart's `extraArgs: [--verbose]` works."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from click.testing import CliRunner

from datasweep.cli.main import cli


@pytest.fixture
def no_reconcile(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import kopf

    calls: list[dict[str, Any]] = []

    async def fake_operator(**kwargs: Any) -> None:
        calls.append(kwargs)
        logging.getLogger("kopf.test").info("operator started")

    monkeypatch.setattr(kopf, "operator", fake_operator)
    return calls


@pytest.mark.parametrize(
    ("flags", "level"),
    [([], logging.INFO), (["--verbose"], logging.DEBUG), (["--debug"], logging.DEBUG), (["-q"], logging.WARNING)],
)
def test_logging_flags_are_accepted(no_reconcile: list[dict[str, Any]], flags: list[str], level: int) -> None:
    """Kopf's levels: INFO by default (timestamps, handler lines), --verbose/--debug DEBUG, --quiet WARNING."""
    result = CliRunner().invoke(cli, ["operator", "-n", "research", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert no_reconcile[0]["namespaces"] == ["research"]
    assert logging.getLogger().level == level


def test_json_log_format(no_reconcile: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    result = CliRunner().invoke(cli, ["operator", "-A", "--verbose", "--log-format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    handlers = [h for h in logging.getLogger().handlers if h.formatter is not None]
    record = logging.LogRecord("kopf.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    line = handlers[-1].formatter.format(record)  # type: ignore[union-attr]
    assert json.loads(line)["message"] == "hello world"
