"""Label and annotation keys of datasweep objects."""

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


def consumers_in(labels: dict[str, str], annotations: dict[str, str]) -> list[str]:
    """The consuming Experiments recorded in an Artifact's labels (full names from the annotations)."""
    keys = [k for k in labels if k.startswith(EXPERIMENT_PREFIX)]
    return sorted(annotations.get(k) or k[len(EXPERIMENT_PREFIX) :] for k in keys)


def consumers_of(metadata: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """Every Experiment that consumes an Artifact, its first one first: the consumer labels, plus the
    `status.consumers` list that earlier operator versions wrote (read, no longer written: a cache hit costs one
    label patch, no status write)."""
    annotations = metadata.get("annotations") or {}
    first = annotations.get(FIRST_EXPERIMENT) or status.get("firstExperiment")
    found = set(consumers_in(metadata.get("labels") or {}, annotations)) | set(status.get("consumers") or [])
    found.discard(first)
    return ([first] if first else []) + sorted(found)
