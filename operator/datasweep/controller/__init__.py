"""Kopf handlers, one module per kind; importing this package registers them all."""

from datasweep.controller import artifact, batch, experiment, resync, setup, suspension

__all__ = ["artifact", "batch", "experiment", "resync", "setup", "suspension"]
