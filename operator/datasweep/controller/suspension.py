"""Suspend, resume and delete an Experiment: its Artifacts' Jobs follow (the decision: core/suspension.py).

`spec.suspend: true` stops the Jobs of the Experiment's Artifacts that no running Experiment consumes (the Job is
suspended: the Job controller stops its pods, SIGTERM then the grace period, and counts no failure), and nothing
new starts for it (`artifact._start` refuses, recording why). `false` resumes them: the same Job, its worker
resuming from its journal. Deleting an Experiment stops the Jobs only it was waiting for; the data stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import kopf

from datasweep.controller import artifact
from datasweep.controller.indices import EXPERIMENTS, info_of, lookup

LOG = logging.getLogger("datasweep.suspension")
# A second look after this long: an Artifact that was launching while the Experiment was suspended may not have
# been Running in the index at the first look.
SECOND_LOOK_S = 5.0


def stop(namespace: str, name: str) -> None:
    """Suspend the Job of one Running Artifact when no running Experiment consumes it, and hand its slot on; a
    Suspended one records the reason that holds now (its Experiment deleted, or re-planned without it)."""

    def act(body: dict[str, Any]) -> str | None:
        """The experiment whose slot it held, when it was stopped now."""
        phase = (body.get("status") or {}).get("phase")
        if phase not in ("Running", artifact.SUSPENDED):
            return None  # not started (Pending, Waiting, Retrying): `_start` refuses while it is stopped
        why = artifact.why_stopped(namespace, body)
        if why is None:
            return None  # another Experiment still waits for it
        artifact.suspend(namespace, name, body, why)  # writes nothing when it says so already
        return artifact._experiment_of(body) if phase == "Running" else None

    with artifact._lock(namespace, name):
        experiment = artifact._on_latest(namespace, name, act)  # conditional: 409 means read again
    if experiment is not None:
        for grant in artifact.admission().release(namespace, experiment, name):
            artifact._wake_granted(grant)


def resume(namespace: str, name: str) -> None:
    """Start (or resume the suspended Job of) one Suspended Artifact, if a running Experiment consumes it now."""
    for grant in artifact._wake(namespace, "", name):
        artifact._wake_granted(grant)


def converge(
    namespace: str, experiment: str, suspend: bool, index: kopf.Index[Any, Any], also: Iterable[str] = ()
) -> None:
    """Make the Jobs of `experiment`'s Artifacts (and of `also`: those just labelled, not yet indexed) follow its
    spec.suspend (or its deletion: suspend=True). Reads the index; writes only what changes."""
    names = sorted(set(lookup(index, ("exp", namespace, experiment))) | set(also))
    phase = "Running" if suspend else artifact.SUSPENDED
    for name in names:
        info = info_of(index, namespace, name)
        if info is None or info.phase != phase:
            continue
        try:
            if suspend:
                stop(namespace, name)
            else:
                resume(namespace, name)
        except Exception:  # one Artifact must not keep the others running
            LOG.exception("%s %s for experiment %s failed", "suspending" if suspend else "resuming", name, experiment)


def stop_soon(namespace: str, experiment: str, index: kopf.Index[Any, Any]) -> None:
    """converge(suspend=True) now and once more a moment later, from the index then."""
    converge(namespace, experiment, True, index)
    timer = threading.Timer(SECOND_LOOK_S, converge, (namespace, experiment, True, index))
    timer.daemon = True
    timer.start()


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*EXPERIMENTS, when=_deleted)
def experiment_deleted(namespace: str | None, name: str, **kwargs: Any) -> None:
    """Stop the Jobs that only this Experiment was waiting for. Without a finalizer (deleting never waits on the
    operator): a deletion missed while the operator was down is found by each Running Artifact's resume handler."""
    assert namespace is not None
    stop_soon(namespace, name, kwargs["artifact_index"])
