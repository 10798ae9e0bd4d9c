"""Fingerprints: sha256 over the canonical JSON of a stage's effective parameters (SPEC section 2)."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from typing import Any

from datasweep._common import SHORT_LENGTH as SHORT_LENGTH
from datasweep._common import short as short  # below store/, which names directories with it


class FingerprintError(ValueError):
    pass


def canonicalize(value: Any) -> Any:
    """Normalize a JSON-like value: NFC strings, sorted keys (at dump time), finite numbers.

    Float fields arrive as floats from the typed models, so 1 and 1.0 of a float field are one value;
    0.7, 0.70 and 7e-1 parse to the same float and print with the same shortest repr.
    """
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FingerprintError(f"cannot fingerprint a non-finite number: {value}")
        return 0.0 if value == 0 else value  # -0.0 and 0.0 are one value
    if isinstance(value, dict):
        return {canonicalize(str(k)): canonicalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonicalize(v) for v in value]
    raise FingerprintError(f"cannot fingerprint a value of type {type(value).__name__}: {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(canonicalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(value: Any) -> str:
    """Full 64-hex sha256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def text_sha256(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()
