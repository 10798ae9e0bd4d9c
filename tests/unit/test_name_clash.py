"""409 means reuse only when the existing Artifact is the planned one (issue 17, cache poisoning)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import kopf
import pytest

from datasweep.api.experiment import parse_spec
from datasweep.controller import experiment as handler
from datasweep.core.plan import PlanInputs, StagePlan, plan_experiment


def planned() -> StagePlan:
    spec = parse_spec(
        {
            "purpose": "clash",
            "datasets": [{"name": "Copa", "source": {"path": "copa"}}],
            "generation": {"apiKeySecret": {"name": "openai"}},
        }
    )
    return plan_experiment(spec, PlanInputs({"Copa": "c" * 64}, created=datetime(2024, 12, 29))).points[0].generate


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"status": [], "events": []}
    monkeypatch.setattr(handler.client, "patch_status", lambda *args: calls["status"].append(args))
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: calls["events"].append((reason, message)))
    return calls


def test_the_planned_artifact_is_reused(recorded: dict[str, list[Any]]) -> None:
    stage = planned()
    existing = {"spec": {"fingerprint": stage.fingerprint, "stage": "generate"}}
    handler._refuse_name_clash({}, "ns", "exp", {}, 1, stage, existing)  # type: ignore[arg-type]
    assert recorded == {"status": [], "events": []}


@pytest.mark.parametrize(
    "spec",
    [{"fingerprint": "f" * 64, "stage": "generate"}, {"stage": "fomaml"}, {}],
    ids=["other fingerprint", "other stage", "no spec"],
)
def test_another_artifact_under_the_planned_name_is_a_name_clash(
    recorded: dict[str, list[Any]], spec: dict[str, Any]
) -> None:
    stage = planned()
    if "fingerprint" not in spec and spec:
        spec = {**spec, "fingerprint": stage.fingerprint}
    with pytest.raises(kopf.TemporaryError):
        handler._refuse_name_clash({}, "ns", "exp", {}, 1, stage, {"spec": spec})  # type: ignore[arg-type]
    (_kind, _ns, _name, status), *_ = recorded["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NameClash"
    assert stage.fingerprint in failed["message"]
    assert stage.artifact in failed["message"]
    assert recorded["events"][0][0] == "NameClash"
