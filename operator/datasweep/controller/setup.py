"""Operator-wide Kopf settings and the loaded configuration."""

from __future__ import annotations

import functools
import logging
from typing import Any

import kopf

from datasweep.api.settings import OperatorSettings, load_settings


@functools.cache
def settings() -> OperatorSettings:
    return load_settings()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: $KUBECONFIG (read now, not when a library was imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    # Progress lives in annotations (status belongs to our own schema) under a prefix of its own: Kopf leaves
    # its own annotations out of change detection, and ours (retry, nudged, ...) must trigger handlers.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.datasweep.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kopf.datasweep.io")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    logger.info("datasweep operator: data root %s", globals()["settings"]().data_root)
