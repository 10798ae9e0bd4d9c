"""Errors of the moe-steer stage."""

from __future__ import annotations


class MoeSteerInputError(ValueError):
    """Bad input (data file, params, model): the message names the file or field and the fix. Exit code 2."""
