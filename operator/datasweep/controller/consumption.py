"""An Experiment consumes what its current plan has, nothing more (SPEC: deleting an Experiment stops only what
it alone needed; the same holds for a point its grid no longer has).

After each planning the Experiment handler releases the Artifacts that carry its consumer mark but are not in
its plan (a value removed from a list, a stage combination dropped, a smaller spec.search sample): the mark
goes, the `left.datasweep.io/<name>` label comes (k8s/labels.py), its Batch's label goes where no other consumer
in that Batch keeps it. One of them still Running for no other running Experiment is stopped as when an
Experiment is deleted (suspension.stop); nothing is deleted. The handler runs again on every start of the
operator (Kopf's resume), so a release lost to a crash is made then.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from datasweep.controller import suspension
from datasweep.controller.indices import ArtifactInfo, artifact_info, info_of, lookup
from datasweep.k8s import client, labels

LOG = logging.getLogger("datasweep.consumption")
_TRIES = 5


def release_patch(
    info: ArtifactInfo, experiment: str, batch_object: str, batch_of: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """The conditional merge patch by which `experiment` stops consuming the Artifact `info` describes (None:
    it does not consume it). Its Batch's label goes too unless another consumer is in that Batch (`batch_of`:
    an Experiment's Batch object, None when it is gone: then the label is kept, as a deletion keeps it)."""
    if experiment not in info.consumers:
        return None
    others = [c for c in info.consumers if c != experiment]
    shared = labels.batch_key(batch_object) not in info.marks or any(
        batch_of(other) in (batch_object, None) for other in others
    )
    marks = labels.release_marks(experiment, None if shared else batch_object)
    return {"metadata": {"resourceVersion": info.resource_version, **marks}}


def _release(
    namespace: str,
    experiment: str,
    name: str,
    info: ArtifactInfo | None,
    batch_object: str,
    batch_of: Callable[[str], str | None],
) -> ArtifactInfo | None:
    """Release one Artifact, conditional on the version read (the index's first): a 409 reads it again and
    decides again. Returns what it was when released, None when nothing was written (not consumed, or gone)."""
    for _ in range(_TRIES):
        if info is None:
            return None
        patch = release_patch(info, experiment, batch_object, batch_of)
        if patch is None:
            return None
        try:
            client.patch_custom("Artifact", namespace, name, patch)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status != 409:
                raise
            body = client.get_custom("Artifact", namespace, name)
            info = artifact_info(name, body) if body is not None else None
            continue
        return info
    raise kopf.TemporaryError(f"Artifact {name} kept changing while {experiment} released it", delay=5)


def _batches(namespace: str) -> Callable[[str], str | None]:
    """An Experiment's Batch object (its datasweep.io/batch label), None when it is gone: one read per name."""

    @functools.cache
    def batch_of(experiment: str) -> str | None:
        found = client.get_custom("Experiment", namespace, experiment)
        if found is None:
            return None
        return str((found["metadata"].get("labels") or {}).get(labels.BATCH) or "")

    return batch_of


def release_left(
    namespace: str, experiment: str, planned: Iterable[str], batch_object: str, index: kopf.Index[Any, Any]
) -> list[str]:
    """Release every Artifact `experiment` is recorded as consuming (the index) that `planned` lacks; stop those
    of them Running for no other running Experiment (`suspension.stop` reads each one not Ready or Failed: the
    index may not show it Running yet). Returns the names released now (sorted)."""
    wanted = set(planned)
    stale = sorted(set(lookup(index, ("exp", namespace, experiment))) - wanted)
    batch_of = _batches(namespace)
    released: list[tuple[str, ArtifactInfo]] = []
    for name in stale:
        before = _release(namespace, experiment, name, info_of(index, namespace, name), batch_object, batch_of)
        if before is not None:
            released.append((name, before))
    for name, before in released:
        if before.phase in ("Ready", "Failed"):
            continue  # one not started yet is refused when it would start (artifact._start), as on a deletion
        try:
            suspension.stop(namespace, name)  # reads it: stops it only if no running Experiment consumes it
        except Exception:  # one Artifact must not keep the others running; the resync tries again
            LOG.exception("stopping %s, which left the plan of %s, failed", name, experiment)
    return [name for name, _ in released]
