"""Batch handler: a Batch a user creates (to give it a description) gets its status like any other."""

from __future__ import annotations

from typing import Any

import kopf

from datasweep.controller.aggregate import refresh_batch

BATCHES = ("datasweep.io", "v1alpha1", "batches")


@kopf.on.create(*BATCHES)
@kopf.on.resume(*BATCHES)
def batch_created(namespace: str | None, name: str, logger: kopf.Logger, **_: Any) -> None:
    assert namespace is not None
    refresh_batch(namespace, name)
    logger.info("batch %s aggregated", name)
