"""A generated directory as seed 000's generator.py leaves it, for the tests of `datasweep import --source` reuse
(locally and on the cluster).

`.fingerprint` (its MD5 of the parameter set), `experiment_metadata.json` with `parameters` (gen_*/val_* and the
MD5 hashes of the two prompts), the data under `<Dataset>/`, no manifest; a batch directory links to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REPHRASE = "Rephrase this sentence, keeping its meaning: {text}"
JUDGE = "Same meaning? Original: {original} Rephrased: {rephrased} Answer yes or no."
NAME = "temp07_topp10_gpt4o"
BATCH = "batch_20241229_temperature"


def seed_md5(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def seed_generated_dir(tree: Path, source: Path, **overrides: Any) -> Path:
    """`<tree>/_shared/Copa/temp07_topp10_gpt4o`, generated from `source` (copa_<split>.jsonl with a `text` field)
    with gpt-4o at temperature 0.7 and validated; `overrides` change the recorded parameters."""
    parameters = {
        "gen_model": "gpt-4o",
        "gen_temperature": 0.7,
        "gen_top_p": 1.0,
        "gen_max_tokens": 256,
        "gen_frequency_penalty": 0.0,
        "gen_presence_penalty": 0.0,
        "val_model": "gpt-4o",
        "val_temperature": 0.0,
        "gen_prompt_hash": seed_md5(REPHRASE)[:8],
        "val_prompt_hash": seed_md5(JUDGE)[:8],
        **overrides,
    }
    directory = tree / "_shared" / "Copa" / NAME
    (directory / "Copa").mkdir(parents=True)
    for path in sorted(source.glob("copa_*.jsonl")):  # the kept records, one per source record here
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        lines = [json.dumps({**row, "original_text": row["text"], "text": f"Rephrased: {row['text']}"}) for row in rows]
        (directory / "Copa" / path.name).write_text("\n".join(lines) + "\n")
    (directory / ".fingerprint").write_text(seed_md5(parameters)[:12] + "\n")
    metadata = {
        "experiment": {"batch_id": BATCH, "purpose": "temperature_study"},
        "semantic_name": NAME,
        "created_at": "2024-12-29T10:30:00",
        "parameters": parameters,
    }
    (directory / "experiment_metadata.json").write_text(json.dumps(metadata, indent=2))
    link = tree / BATCH / "Copa" / NAME
    link.parent.mkdir(parents=True)
    link.symlink_to(Path("..") / ".." / "_shared" / "Copa" / NAME)
    return directory
