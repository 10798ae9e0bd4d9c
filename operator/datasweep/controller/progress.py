"""Running Artifacts' progress: the workers' progress files copied into the Artifacts' status, at a bounded rate.

A worker rewrites `.progress.json` in its output directory every few seconds (store/progress.py). Every
`progressIntervalSeconds` one thread reads that file for each Running Artifact in the index (no LIST; one
small read each on the data volume) and marks those whose report moved for the coalesced status writer
(aggregate.py), at most `progressWritesPerSecond` of them a second, least recently written first: at 1,000
running points the API server sees the same few writes a second as at 50, each Artifact's report is older
(docs/scale.md). The write reads the file again and is conditional on the indexed resourceVersion, so a
report never lands on an Artifact that moved on meanwhile (Ready, Failed). The Artifact's watch event then
marks its Experiments, whose status sums the reports (core/progress.py).

Without the data volume mounted here nothing is read: the Experiment then shows counts and the usage of
finished Artifacts only (the operator says so once at start-up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from datasweep.controller.indices import ArtifactInfo, info_of
from datasweep.k8s import client
from datasweep.store.progress import read_progress

LOG = logging.getLogger("datasweep.progress")
# Fields that change with every report whatever the work did: a stalled worker causes no writes.
_VOLATILE = ("updatedAt", "etaSeconds")


def _moved(report: dict[str, Any], recorded: dict[str, Any]) -> bool:
    def steady(raw: dict[str, Any]) -> dict[str, Any]:
        # a null is no key (a merge patch removes it), also inside requestReuse
        return {
            k: steady(v) if isinstance(v, dict) else v for k, v in raw.items() if v is not None and k not in _VOLATILE
        }

    return steady(report) != steady(recorded)


class ProgressPoller:
    def __init__(
        self,
        index: kopf.Index[Any, Any],
        root: Path | None,
        interval: float,
        writes_per_second: float,
        mark: Callable[[Hashable], None],
    ) -> None:
        self.index = index
        self.root = root
        self.interval = interval
        self.budget = max(1, int(writes_per_second * interval))  # marks per round
        self.mark = mark
        self._last: dict[tuple[str, str], float] = {}  # when each Artifact was last marked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="datasweep-progress", daemon=True)

    def start(self) -> ProgressPoller:
        if self.interval <= 0:
            LOG.info("progressIntervalSeconds is 0: Artifact progress is not read")
        elif self.root is None:
            LOG.warning(
                "the data volume is not mounted in the operator (dataRoot): Artifact progress is not shown; "
                "Experiments show counts and the usage of finished Artifacts only"
            )
        else:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def running(self) -> list[tuple[str, ArtifactInfo]]:
        """(namespace, info) of every Running Artifact, from the index (a copy of its keys: a consistent view)."""
        found = []
        for key in list(self.index):
            if key[0] == "art":
                info = info_of(self.index, key[1], key[2])
                if info is not None and info.phase == "Running":
                    found.append((key[1], info))
        return found

    def due(self) -> list[tuple[str, str]]:
        """The Running Artifacts whose report moved since their status was written, within this round's budget."""
        assert self.root is not None
        moved = []
        running = self.running()
        for namespace, info in running:
            report = read_progress(self.root / info.path)
            if report is not None and _moved(report.model_dump(mode="json", by_alias=True), info.progress_dict()):
                moved.append((namespace, info.name))
        alive = {(namespace, info.name) for namespace, info in running}
        for gone in [k for k in self._last if k not in alive]:
            del self._last[gone]
        moved.sort(key=lambda key: self._last.get(key, 0.0))
        return moved[: self.budget]

    def tick(self) -> int:
        chosen = self.due()
        for namespace, name in chosen:
            self._last[(namespace, name)] = time.monotonic()
            self.mark(("Artifact", namespace, name))
        return len(chosen)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a bad round (the volume away for a moment) must not end the thread
                LOG.exception("reading Artifact progress failed; trying again in %.0fs", self.interval)

    def write(self, namespace: str, name: str) -> None:
        """The coalesced writer's flush of ("Artifact", namespace, name): the report as it is now."""
        info = info_of(self.index, namespace, name)
        if info is None or info.phase != "Running" or self.root is None:
            return
        report = read_progress(self.root / info.path)
        if report is None:
            return
        body = report.model_dump(mode="json", by_alias=True)  # None as null: a merge patch removes the key
        if not _moved(body, info.progress_dict()):
            return  # written meanwhile
        try:
            client.patch_status("Artifact", namespace, name, {"progress": body}, resource_version=info.resource_version)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
            # Deleted, or changed since it was indexed (Ready, Failed, another write): the next round looks again.
