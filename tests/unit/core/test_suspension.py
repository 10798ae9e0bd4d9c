"""Which Artifacts may run while Experiments are suspended or deleted (core/suspension.py), the Experiment's
Suspended condition and status reason, and the index the decision reads."""

from __future__ import annotations

from datasweep.controller.aggregate import Planned, summarize_experiment
from datasweep.controller.experiment import _suspended_condition
from datasweep.controller.indices import experiment_index
from datasweep.core.suspension import stop_reason
from datasweep.k8s.conditions import condition_status


def test_an_artifact_runs_while_one_consumer_runs() -> None:
    assert stop_reason(["a", "b"], {"a": True, "b": False}) is None
    assert stop_reason(["a"], {"a": False}) is None


def test_an_artifact_stops_when_every_consumer_is_suspended_or_deleted() -> None:
    why = stop_reason(["a", "b", "c"], {"a": True, "b": True})
    assert why is not None
    assert "suspended: a, b" in why
    assert "deleted: c" in why
    assert "datasweep resume a" in why
    gone = stop_reason(["a"], {})
    assert gone is not None
    assert "deleted: a" in gone
    assert "resume" not in gone  # nothing to resume


def test_an_artifact_nobody_consumes_is_never_stopped() -> None:
    """Made by hand (no consumer label): suspending Experiments has nothing to say about it."""
    assert stop_reason([], {"a": True}) is None


def test_many_consumers_are_counted_not_listed() -> None:
    why = stop_reason([f"e{i}" for i in range(10)], {f"e{i}": True for i in range(10)})
    assert why is not None
    assert "e0, e1, e2 and 7 more" in why


def test_the_suspended_condition_appears_and_then_says_resumed() -> None:
    suspended = _suspended_condition([], True, "sweep", 3)
    assert condition_status(suspended, "Suspended") == "True"
    assert "datasweep resume sweep" in suspended[0]["message"]
    resumed = _suspended_condition(suspended, False, "sweep", 4)
    assert condition_status(resumed, "Suspended") == "False"
    assert resumed[0]["reason"] == "Resumed"
    assert _suspended_condition([], False, "sweep", 1) == []  # never suspended: no condition at all


def test_a_suspended_experiment_in_progress_says_suspended() -> None:
    planned = Planned(
        points=1,
        stages=1,
        generate=frozenset({"g"}),
        artifacts=frozenset({"g"}),
        batch_object="b",
        generation=1,
        conditions=_suspended_condition([], True, "sweep", 1),
    )
    status = summarize_experiment("sweep", planned, [], 5)
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Suspended")
    planned.conditions = _suspended_condition(planned.conditions, False, "sweep", 2)
    status = summarize_experiment("sweep", planned, [], 5)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["reason"] == "InProgress"


def test_every_experiment_is_indexed_with_its_suspend() -> None:
    keys = experiment_index(namespace="ns", name="sweep", meta={}, spec={"suspend": True}, status={})
    assert keys == {("suspend", "ns", "sweep"): True}
    keys = experiment_index(
        namespace="ns", name="sweep", meta={"labels": {"datasweep.io/batch": "b"}}, spec={}, status={}
    )
    assert keys[("suspend", "ns", "sweep")] is False
    assert ("batch", "ns", "b") in keys
