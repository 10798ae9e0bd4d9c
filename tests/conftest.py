"""Settings every test shares: no model hub downloads, ever; a clock that looks freshly booted."""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# `time.monotonic()` counts from boot. Code that takes 0.0 for "long ago" (the coalescer once did: its first
# write waited until the machine had been up an hour) passes on a machine up for days and fails on a fresh CI
# runner. The whole suite runs on a monotonic clock that starts near zero, as on a machine booted a second ago.
# Patched here, at conftest import, before any event loop or thread takes a reading.
_boot_monotonic = time.monotonic
_BOOTED_AT = _boot_monotonic() - 1.0


def _monotonic_of_a_fresh_machine() -> float:
    return _boot_monotonic() - _BOOTED_AT


time.monotonic = _monotonic_of_a_fresh_machine
