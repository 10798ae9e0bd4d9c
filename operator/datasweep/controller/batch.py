"""Batch handler: a Batch a user creates (to give it a description) gets its status like any other."""

from __future__ import annotations

from typing import Any

import kopf

from datasweep.controller.aggregate import mark_batch

BATCHES = ("datasweep.io", "v1alpha1", "batches")


@kopf.on.create(*BATCHES)
@kopf.on.resume(*BATCHES)
def batch_created(namespace: str | None, name: str, **_: Any) -> None:
    """Totals come from the Experiments' statuses in the index, written coalesced (aggregate.py)."""
    assert namespace is not None
    mark_batch(namespace, name)
