"""Admission: which Artifacts may start a Job now, without asking the API server (docs/scale.md).

One in-memory queue per experiment (the Artifact's first experiment, whose `parallelism` it carries) and
one set of Jobs in flight per experiment and per namespace. A handler asks for a slot (`request`); a finished
Job gives its slot back (`release`), which hands it to exactly the next waiting Artifact(s): no LIST, no
annotation patched on every waiting Artifact. The sets are seeded from Kopf's index of Artifacts the first
time a namespace is seen, so a restarted operator counts the Jobs the previous one started, and the queues
refill as Kopf resumes every Artifact.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from datasweep.controller.indices import ArtifactInfo
from datasweep.core import naming

Key = tuple[str, str]  # (namespace, experiment)
Grant = tuple[str, str, str]  # (namespace, experiment, artifact)


def holds_slot(info: ArtifactInfo, job_exists: Callable[[str], bool]) -> bool:
    """Whether an Artifact has a Job in flight when the operator starts: it is Running, or Pending/Waiting with
    its current attempt's Job created (the last operator stopped between creating the Job and recording it;
    `_start` adopts that Job whatever the limit, so it counts from the start, before anything else is let in)."""
    if info.phase == "Running":
        return True
    return info.phase in ("Pending", "Waiting") and job_exists(naming.job_name(info.name, info.attempts))


@dataclass
class _Queue:
    limit: int = 0  # 0: no per-experiment limit
    running: set[str] = field(default_factory=set)
    waiting: OrderedDict[str, None] = field(default_factory=OrderedDict)


class Admission:
    """Thread-safe: Kopf runs sync handlers in a pool of threads."""

    def __init__(self, seed: Callable[[str], Iterable[tuple[str, str]]], namespace_limit: int = 0) -> None:
        self._seed = seed  # namespace -> (experiment, artifact) of every Artifact with a Job in flight
        self._namespace_limit = namespace_limit
        self._lock = threading.Lock()
        self._queues: dict[Key, _Queue] = {}
        self._in_flight: dict[str, set[str]] = {}  # namespace -> artifacts with a Job in flight
        self._order: dict[str, list[str]] = {}  # namespace -> experiments, in the order they first queued

    def _namespace(self, namespace: str) -> set[str]:
        if namespace not in self._in_flight:
            self._in_flight[namespace] = set()
            for experiment, artifact in self._seed(namespace):
                self._queue(namespace, experiment).running.add(artifact)
                self._in_flight[namespace].add(artifact)
        return self._in_flight[namespace]

    def _queue(self, namespace: str, experiment: str) -> _Queue:
        key = (namespace, experiment)
        if key not in self._queues:
            self._queues[key] = _Queue()
            self._order.setdefault(namespace, []).append(experiment)
        return self._queues[key]

    def _room(self, namespace: str, queue: _Queue) -> bool:
        in_flight = self._namespace(namespace)
        if self._namespace_limit and len(in_flight) >= self._namespace_limit:
            return False
        return not queue.limit or len(queue.running) < queue.limit

    def request(self, namespace: str, experiment: str, artifact: str, limit: int) -> bool:
        """True: start its Job now (the slot is taken). False: it waits in line and is granted by `release`."""
        with self._lock:
            in_flight = self._namespace(namespace)
            queue = self._queue(namespace, experiment)
            queue.limit = limit
            if artifact in queue.running:
                return True  # asked again (a retried handler): it holds its slot already
            # First come, first served: a newcomer does not pass those already waiting.
            if artifact not in queue.waiting and self._room(namespace, queue) and not queue.waiting:
                queue.running.add(artifact)
                in_flight.add(artifact)
                return True
            queue.waiting.setdefault(artifact, None)
            return False

    def force(self, namespace: str, experiment: str, artifact: str) -> None:
        """A Job exists already (created before a crash): count it, whatever the limit."""
        with self._lock:
            in_flight = self._namespace(namespace)  # seed first: seeding later would count it twice or not at all
            queue = self._queue(namespace, experiment)
            queue.waiting.pop(artifact, None)
            queue.running.add(artifact)
            in_flight.add(artifact)

    def release(self, namespace: str, experiment: str, artifact: str) -> list[Grant]:
        """A Job finished (or will not start): free its slot and grant the next waiting Artifacts."""
        with self._lock:
            # Seed first: when a restarted operator's first call is the release of a Job the index still shows
            # in flight, seeding after the discard would put it back, holding its slot forever.
            in_flight = self._namespace(namespace)
            queue = self._queue(namespace, experiment)
            queue.running.discard(artifact)
            queue.waiting.pop(artifact, None)
            in_flight.discard(artifact)
            return self._grant(namespace, first=experiment)

    def forget(self, namespace: str, experiment: str, artifact: str) -> list[Grant]:
        """The Artifact is gone or needs no Job any more."""
        return self.release(namespace, experiment, artifact)

    def _grant(self, namespace: str, first: str) -> list[Grant]:
        # The freed experiment first, then the others of the namespace (its cap may have held them back).
        order = [first] + [e for e in self._order.get(namespace, []) if e != first]
        grants: list[Grant] = []
        for experiment in order:
            queue = self._queues[(namespace, experiment)]
            while queue.waiting and self._room(namespace, queue):
                artifact, _ = queue.waiting.popitem(last=False)
                queue.running.add(artifact)
                self._in_flight[namespace].add(artifact)
                grants.append((namespace, experiment, artifact))
        return grants

    def running(self, namespace: str, experiment: str) -> int:
        with self._lock:
            self._namespace(namespace)
            return len(self._queue(namespace, experiment).running)

    def waiting(self, namespace: str, experiment: str) -> list[str]:
        with self._lock:
            return list(self._queue(namespace, experiment).waiting)
