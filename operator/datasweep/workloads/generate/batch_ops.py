"""Seed 001's batch_submitter operations against the OpenAI Batch API, through the SDK.

`--list-active`, `--check-status ID` and `--download-results ID` of the seed's tool; the CLI is
`datasweep worker generate batches`. These talk to the API; `datasweep worker generate status DIR` reads an
artifact's local state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openai import OpenAI

from datasweep.store.atomic import atomic_write_json, atomic_write_text
from datasweep.workloads.generate.inputs import GenerateInputError

ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def api_key_from(config: Path | None, env_name: str, environ: dict[str, str]) -> str:
    """The key from seed 001's `config.json` ({"api_key": ...}) when given, else from the environment."""
    if config is not None:
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise GenerateInputError(
                f'{config}: config file not found (batch_submitter format: {{"api_key": "sk-..."}})'
            ) from exc
        except json.JSONDecodeError as exc:
            raise GenerateInputError(f"{config}: not valid JSON ({exc})") from exc
        key = data.get("api_key") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key.strip():
            raise GenerateInputError(f'{config}: no api_key in it (batch_submitter format: {{"api_key": "sk-..."}})')
        return key.strip()
    key = environ.get(env_name, "").strip()
    if not key:
        raise GenerateInputError(f"no API key: set {env_name} or give --config config.json with an api_key")
    return key


def _when(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else "-"


def batch_row(batch: Any) -> dict[str, Any]:
    counts = batch.request_counts
    return {
        "id": batch.id,
        "status": batch.status,
        "created_at": _when(batch.created_at),
        "completed": counts.completed if counts else 0,
        "failed": counts.failed if counts else 0,
        "total": counts.total if counts else 0,
        "datasweep_key": (batch.metadata or {}).get("datasweep_key"),
    }


def list_active(client: OpenAI) -> list[dict[str, Any]]:
    """Every batch of the account that has not ended (validating, in_progress, finalizing, cancelling)."""
    return [batch_row(batch) for batch in client.batches.list(limit=100) if batch.status in ACTIVE]


def check_status(client: OpenAI, batch_id: str) -> dict[str, Any]:
    """The batch object as the API returns it (status, request counts, errors, file ids)."""
    return client.batches.retrieve(batch_id).model_dump(mode="json")


@dataclass
class Downloaded:
    batch: dict[str, Any]
    files: list[Path]


def download_results(client: OpenAI, batch_id: str, output_dir: Path) -> Downloaded:
    """Seed 001's outputs: batch_results_<id>.jsonl (output file), batch_errors_<id>.jsonl (error file)
    and batch_job_<id>.json (the batch object). Refuses a batch with neither file yet."""
    batch = client.batches.retrieve(batch_id)
    record = batch.model_dump(mode="json")
    if not batch.output_file_id and not batch.error_file_id:
        raise GenerateInputError(
            f"batch {batch_id} is {batch.status}: it has no output or error file yet; "
            f"check again later with --check-status {batch_id}"
        )
    files = []
    for file_id, name in ((batch.output_file_id, "batch_results"), (batch.error_file_id, "batch_errors")):
        if file_id:
            path = output_dir / f"{name}_{batch_id}.jsonl"
            atomic_write_text(path, client.files.content(file_id).text)
            files.append(path)
    job = output_dir / f"batch_job_{batch_id}.json"
    atomic_write_json(job, record)
    return Downloaded(batch=record, files=[*files, job])
