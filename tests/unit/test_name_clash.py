"""409 means reuse only when the existing Artifact is the planned one (issue 17, cache poisoning)."""

from __future__ import annotations

from datetime import datetime

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


def test_the_planned_artifact_is_reused() -> None:
    stage = planned()
    handler._check_same_artifact(stage, stage.fingerprint, "generate")  # no error: reuse


@pytest.mark.parametrize(
    ("fingerprint", "kind"),
    [("f" * 64, "generate"), (None, "fomaml"), ("None", "None")],
    ids=["other fingerprint", "other stage", "no spec"],
)
def test_another_artifact_under_the_planned_name_is_a_name_clash(fingerprint: str | None, kind: str) -> None:
    stage = planned()
    with pytest.raises(handler.Refused) as refused:
        handler._check_same_artifact(stage, fingerprint or stage.fingerprint, kind)
    assert refused.value.reason == "NameClash"
    assert stage.fingerprint in str(refused.value)
    assert stage.artifact in str(refused.value)
