"""Label and annotation keys of datasweep objects."""

from collections.abc import Iterable
from typing import Any

ARTIFACT = "datasweep.io/artifact"
FINGERPRINT = "datasweep.io/fingerprint"  # the short fingerprint: label values stop at 63 characters
STAGE = "datasweep.io/stage"
DATASET = "datasweep.io/dataset"
BATCH = "datasweep.io/batch"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MANAGED_BY = "app.kubernetes.io/managed-by"
IMPORTED = "datasweep.io/imported"  # registered by `datasweep import`: data exists, no Job ever runs

FULL_FINGERPRINT = "datasweep.io/fingerprint-sha256"
FIRST_BATCH = "datasweep.io/first-batch"
FIRST_EXPERIMENT = "datasweep.io/first-experiment"
PARALLELISM = "datasweep.io/parallelism"
QUEUE = "datasweep.io/queue-name"
RETRY = "datasweep.io/retry"
REGENERATE = "datasweep.io/regenerate"
# How the Artifact is produced (params, image, resources, retries, worker details; controller/experiment.py):
# a digest of the details its Experiment planned, and the Experiment that decided them when not its first one
DETAILS = "datasweep.io/details-sha256"
DETAILS_FROM = "datasweep.io/details-from"
NUDGED = "datasweep.io/nudged"  # an input or a slot freed up: look again
FAILED_ATTEMPT = "datasweep.io/failed-attempt"  # the last failed attempt, wakes the retry with backoff
WORKER_SPEC = "datasweep.io/worker-spec"  # on a Job's pods: the worker spec, mounted as a file (downward API)
LEGACY_FINGERPRINT = "datasweep.io/legacy-fingerprint"  # the seed tools' 12-hex MD5, kept by `datasweep import`
# `datasweep import --source DATASET=DIR`: the content hash of the dataset an imported directory was generated
# from; with it, a planned point with the same recorded parameters reuses the directory (core/imported.py)
SOURCE_SHA256 = "datasweep.io/source-sha256"

# Consumers as labels, one key per Experiment and per Batch: an Artifact may serve many of each, and a label
# key (unlike a value) can say "this one too". `kubectl get art -l exp.datasweep.io/NAME` lists an
# Experiment's Artifacts, `-l batch.datasweep.io/BATCH-OBJECT-NAME` a Batch's. A name too long for a label
# key (63 characters) is shortened with a hash; then an annotation under the same key keeps the full name.
EXPERIMENT_PREFIX = "exp.datasweep.io/"
BATCH_PREFIX = "batch.datasweep.io/"
_KEY_LIMIT = 63


def _key_name(name: str) -> str:
    if len(name) <= _KEY_LIMIT:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: _KEY_LIMIT - 13].rstrip('-.')}-{digest}"


def experiment_key(experiment: str) -> str:
    """The label key that marks an Artifact as consumed by `experiment` (its name, hashed when too long)."""
    return EXPERIMENT_PREFIX + _key_name(experiment)


def batch_key(batch_object: str) -> str:
    """The label key that marks an Artifact as part of a Batch (the Batch object's name)."""
    return BATCH_PREFIX + _key_name(batch_object)


def consumer_marks(experiment: str, batch_object: str) -> dict[str, dict[str, str]]:
    """Labels (and, for a shortened name, the annotation) that record one more consumer: a merge patch's
    metadata, idempotent. Labels, not annotations: annotation changes wake the Artifact's handler."""
    marks: dict[str, dict[str, str]] = {"labels": {experiment_key(experiment): "true", batch_key(batch_object): "true"}}
    if _key_name(experiment) != experiment:
        marks["annotations"] = {experiment_key(experiment): experiment}
    return marks


# An Experiment whose current plan no longer has an Artifact it consumed (its grid shrank) leaves it: its consumer
# label goes and this label comes (a label: no wake-up of the Artifact's handler). It also keeps the Experiment
# from being read as a consumer where it still is recorded otherwise: as the first experiment (an annotation,
# kept: it says who made the data) or in the `status.consumers` of earlier versions. An Artifact every consumer of
# which left is stopped like one whose consumers were all deleted (core/suspension.py).
LEFT_PREFIX = "left.datasweep.io/"


def left_key(experiment: str) -> str:
    """The label key that marks an Artifact as no longer planned by `experiment` (hashed when too long)."""
    return LEFT_PREFIX + _key_name(experiment)


def left_in(labels: dict[str, str]) -> list[str]:
    """The Experiments (label key names: hashed where too long) whose plans this Artifact left."""
    return sorted(k[len(LEFT_PREFIX) :] for k in labels if k.startswith(LEFT_PREFIX))


def release_marks(experiment: str, batch_object: str | None) -> dict[str, dict[str, str | None]]:
    """The merge patch's metadata by which `experiment` stops consuming an Artifact that left its plan;
    `batch_object`: also its Batch's label (when no other consumer in that Batch keeps it). Idempotent."""
    marks: dict[str, dict[str, str | None]] = {
        "labels": {experiment_key(experiment): None, left_key(experiment): "true"}
    }
    if batch_object is not None:
        marks["labels"][batch_key(batch_object)] = None
    if _key_name(experiment) != experiment:
        marks["annotations"] = {experiment_key(experiment): None}
    return marks


def rejoin_marks(experiment: str, batch_object: str) -> dict[str, dict[str, str | None]]:
    """`consumer_marks` as a merge patch on an existing Artifact: also drops the mark that the experiment had
    left its plan (`release_marks`), when its grid grows back."""
    marks: dict[str, dict[str, str | None]] = {
        kind: dict(v) for kind, v in consumer_marks(experiment, batch_object).items()
    }
    marks["labels"][left_key(experiment)] = None
    return marks


def plan_digest(artifacts: Iterable[str]) -> str:
    """Of a set of Artifact names (Experiment status.planned.digest): a tool compares it with the Artifacts it
    finds labelled exp.datasweep.io/<name> to tell whether they are the current plan."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(set(artifacts))).encode()).hexdigest()[:16]


def consumers_in(labels: dict[str, str], annotations: dict[str, str]) -> list[str]:
    """The consuming Experiments recorded in an Artifact's labels (full names from the annotations)."""
    keys = [k for k in labels if k.startswith(EXPERIMENT_PREFIX)]
    return sorted(annotations.get(k) or k[len(EXPERIMENT_PREFIX) :] for k in keys)


def consumers_of(metadata: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """Every Experiment that consumes an Artifact, its first one first: the consumer labels, plus the
    `status.consumers` list that earlier operator versions wrote (read, no longer written: a cache hit costs one
    label patch, no status write); an Experiment whose plan the Artifact left (`release_marks`) is none of them."""
    annotations, labels = metadata.get("annotations") or {}, metadata.get("labels") or {}
    first = annotations.get(FIRST_EXPERIMENT) or status.get("firstExperiment")
    labelled = set(consumers_in(labels, annotations))

    def current(experiment: str) -> bool:  # its label says so, or it never left the Artifact's plan
        return experiment in labelled or left_key(experiment) not in labels

    found = labelled | {c for c in status.get("consumers") or [] if current(c)}
    found.discard(first)
    return ([first] if first and current(first) else []) + sorted(found)
