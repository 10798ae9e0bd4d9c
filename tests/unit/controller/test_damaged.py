"""The operator's check before reuse converges (issue 25 item 4): an operator that moved a damaged Artifact's
directory aside and died before recording it, run again, finds the move done, records the same place, and
launches one Job; the replacement's completion turns Damaged False.

The handlers run against the in-memory API of test_artifact_answers, with a data volume in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasweep.api.settings import OperatorSettings
from datasweep.controller import artifact as handler
from datasweep.core import naming
from datasweep.store.manifest import FINGERPRINT_NAME, MANIFEST_NAME, write_manifest
from datasweep.store.verify import set_damaged_aside
from tests.unit.controller.test_artifact_answers import NS, FakeCluster, cluster, planned, reconcile

__all__ = ["cluster"]  # the fixture


def produce(root: Path, path: str, fingerprint: str) -> None:
    """What the worker leaves on the volume."""
    directory = root / path
    (directory / "Copa").mkdir(parents=True, exist_ok=True)
    (directory / "Copa" / "copa_train.jsonl").write_text('{"id": 1}\n')
    (directory / FINGERPRINT_NAME).write_text(fingerprint + "\n")
    write_manifest(directory, fingerprint=fingerprint, stage="generate")


def damaged(cluster: FakeCluster, name: str) -> dict[str, str]:
    return next(c for c in cluster.status(name)["conditions"] if c["type"] == "Damaged")


def test_a_damaged_artifact_is_set_aside_once_recorded_and_produced_again_after_a_restart(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(handler, "settings", lambda: OperatorSettings(data_root=str(tmp_path), retry_backoff_seconds=0))
    generate, _ = planned()
    cluster.add(generate)
    name, path, fingerprint = generate["metadata"]["name"], "_shared/Copa/gen", generate["spec"]["fingerprint"]
    reconcile(cluster, name)
    produce(tmp_path, path, fingerprint)
    handler._record_job(NS, naming.job_name(name, 0), name, {"Complete": {}}, handler.LOG)
    assert cluster.status(name)["phase"] == "Ready"
    assert not handler.replace_if_damaged(NS, name, path)  # intact: reused, nothing written
    assert list(cluster.jobs) == [naming.job_name(name, 0)]

    (tmp_path / path / "Copa" / "copa_train.jsonl").unlink()
    set_damaged_aside(tmp_path, path, 1)  # the operator that found it moved it aside, then died

    assert handler.replace_if_damaged(NS, name, path)  # the restarted operator, before reuse
    status = cluster.status(name)
    assert status["phase"] == "Running"
    assert status["attempts"] == 2
    assert list(cluster.jobs) == [naming.job_name(name, 0), naming.job_name(name, 1)]
    condition = damaged(cluster, name)
    assert (condition["status"], condition["reason"]) == ("True", "FilesDamaged")
    assert condition["message"] == (
        "missing file Copa/copa_train.jsonl: not reused, produced again (attempt 2); the damaged files are kept in "
        "_shared/Copa/.gen.damaged-1 until `datasweep gc`"
    )
    assert sorted(p.name for p in (tmp_path / "_shared/Copa").iterdir()) == [".gen.damaged-1", "gen"]
    assert (tmp_path / "_shared/Copa/.gen.damaged-1" / MANIFEST_NAME).is_file()

    assert handler.replace_if_damaged(NS, name, path)  # asked again while it is produced: nothing more
    assert len(cluster.jobs) == 2
    assert [e for e in cluster.events if e[1] == "Damaged"] == [(name, "Damaged", condition["message"])]

    produce(tmp_path, path, fingerprint)
    handler._record_job(NS, naming.job_name(name, 1), name, {"Complete": {}}, handler.LOG)
    assert cluster.status(name)["phase"] == "Ready"
    condition = damaged(cluster, name)
    assert (condition["status"], condition["reason"]) == ("False", "Replaced")
    assert not handler.replace_if_damaged(NS, name, path)
