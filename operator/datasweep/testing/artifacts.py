"""Hand-written upstream directories for narrow unit tests, given the manifest a real producer writes.

Chain tests use the real generate worker instead (tests/unit/chain/); these only save time where a test
is about one consumer's parsing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from datasweep.store.inputs import seed_generate_roles
from datasweep.store.manifest import write_manifest


def finalize_as_generate(directory: Path, dataset: str) -> Path:
    """Write the manifest of a generate artifact laid out as `<Dataset>/<dataset>_<split>.jsonl` (+ rejected/)."""
    roles = seed_generate_roles(directory, dataset)
    fingerprint = hashlib.sha256(str(directory).encode()).hexdigest()
    write_manifest(directory, fingerprint=fingerprint, stage="generate", roles=roles)
    return directory
