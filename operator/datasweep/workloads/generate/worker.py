"""`datasweep worker generate --spec FILE`: one generate Artifact, resumable, written atomically.

Phases: plan (parse every split, render every prompt: bad input fails here, before anything is paid),
generate (one request per item), validate (one judge request per generated text), compile (kept and
rejected splits, report, metadata, config, README) and finalize (manifest last).
Resume state lives in `<outputDir>/.work/`: the journals of answered requests and the Batch API state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from openai import AsyncOpenAI
from pydantic import ValidationError

from datasweep import __version__
from datasweep.api._base import describe_validation_error
from datasweep.api.stage_params import result_params
from datasweep.api.stages.generate import GenerateParams, PriceEntry
from datasweep.api.worker import WorkerSpec
from datasweep.core.fingerprint import FingerprintError, canonicalize
from datasweep.store.atomic import atomic_open, atomic_write_json, atomic_write_text, publish_tree, unpublish
from datasweep.store.manifest import Manifest, Roles, Usage, finalize_artifact, read_manifest
from datasweep.store.progress import REQUEST_REUSE_KEY, RequestReuseCounts
from datasweep.store.provenance import answer_provenance
from datasweep.store.requests import REFERENCES
from datasweep.workloads.generate import pricing
from datasweep.workloads.generate.backends import (
    Backend,
    ChatCompletionsBackend,
    ChatRequest,
    TransformersBackend,
    check_endpoint,
    make_async_client,
)
from datasweep.workloads.generate.batch_api import RAW_DIR, BatchBackend
from datasweep.workloads.generate.inputs import (
    GenerateFailed,
    GenerateInputError,
    SplitData,
    read_splits,
    resolve_api_key,
)
from datasweep.workloads.generate.journal import Journal
from datasweep.workloads.generate.prompts import parse_verdict
from datasweep.workloads.generate.reuse import REUSED, RequestReuse, backend_family, store_for
from datasweep.workloads.generate.tasks import (
    TaskPlan,
    WorkItem,
    compile_record,
    plan_task,
    validation_prompt,
)
from datasweep.workloads.progress import Progress, plan_progress, report_request_reuse
from datasweep.workloads.stopping import run_until_stopped

log = logging.getLogger("datasweep.generate")

WORK_DIR = ".work"
PUBLISH_DIR = "publish"  # under WORK_DIR: the outputs until all are written


def load_params(spec: WorkerSpec) -> GenerateParams:
    try:
        # strings as the fingerprint hashes them (NFC), also for a hand-written spec: what is sent is
        # what was fingerprinted (records are sent as written; the dataset hash covers their bytes)
        return GenerateParams.model_validate(canonicalize(spec.params))
    except ValidationError as exc:
        raise GenerateInputError(f"invalid generate params: {describe_validation_error(exc, 'params')}") from exc
    except FingerprintError as exc:
        raise GenerateInputError(f"invalid generate params: {exc}") from exc


def _model_dir(name: str | None) -> Path | None:
    return Path(name) if name and Path(name).is_dir() else None


def transformers_model_paths(params: GenerateParams, base_model: str | None) -> dict[str, Path]:
    """Model name -> local directory for the transformers backend (`base_model`: the worker spec's)."""
    generation = _model_dir(params.model_path) or _model_dir(base_model) or _model_dir(params.model)
    if generation is None:
        raise GenerateInputError(
            f"backend transformers needs a local model directory: params.model_path, the spec's baseModel or "
            f"params.model ({params.model!r}) must be a directory"
        )
    paths = {params.model: generation}
    if params.validation is not None:
        judge = _model_dir(params.validation.model)
        if judge is None and params.validation.model != params.model:
            raise GenerateInputError(
                f"backend transformers: params.validation.model ({params.validation.model!r}) must be a "
                "local "
                "directory or equal to params.model"
            )
        paths[params.validation.model] = judge or generation
    return paths


def build_backend(params: GenerateParams, spec: WorkerSpec, phase: str, api_key: str, work: Path) -> Backend:
    if params.backend == "transformers":
        return TransformersBackend(
            transformers_model_paths(params, spec.base_model),
            params.transformers_batch_size,
            params.device,
            params.seed,
        )
    client = make_async_client(api_key, params.base_url, params.max_retries, params.request_timeout)
    if params.backend == "openai-batch":
        return BatchBackend(
            client,
            work / f"batches-{phase}.json",
            phase,
            fingerprint=spec.fingerprint,
            raw_dir=spec.output_path / RAW_DIR,
            poll_interval=params.poll_interval,
            max_poll_interval=params.max_poll_interval,
            max_attempts=params.max_batch_attempts,
            max_requests=params.max_batch_requests,
            max_bytes=params.max_batch_bytes,
            completion_window=params.completion_window,
        )
    return ChatCompletionsBackend(client, params.concurrency)


def _messages(system_prompt: str | None, prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompt}]


def generation_request(item: WorkItem, params: GenerateParams) -> ChatRequest:
    body: dict[str, Any] = {
        "model": params.model,
        "messages": _messages(params.system_prompt, item.prompt),
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    return ChatRequest(item.custom_id, body)


def validation_request(item: WorkItem, generated: str, params: GenerateParams) -> ChatRequest:
    judge = params.validation
    assert judge is not None
    body: dict[str, Any] = {
        "model": judge.model,
        "messages": _messages(None, validation_prompt(item, generated, params)),
        "temperature": judge.temperature,
        "top_p": judge.top_p,
        "max_tokens": judge.max_tokens,
    }
    return ChatRequest(item.validation_id, body)


Meter = Callable[[int, int], float | None]  # (prompt tokens, completion tokens) -> USD, None when unpriced


def _spent(journal: Journal, meter: Meter | None) -> tuple[int, int, float | None]:
    """Requests answered, and the tokens and cost of those paid for (not reused) so far, from the journal."""
    paid = [e for e in journal.done.values() if not e.get(REUSED)]
    prompt = sum(int(e.get("prompt_tokens") or 0) for e in paid)
    completion = sum(int(e.get("completion_tokens") or 0) for e in paid)
    return len(journal.done), prompt + completion, meter(prompt, completion) if meter else None


def _report(progress: Progress, journal: Journal, meter: Meter | None) -> None:
    done, tokens, cost = _spent(journal, meter)
    progress.update(done, tokens=tokens, cost=cost)


async def _watch(progress: Progress, journal: Journal, meter: Meter | None) -> None:
    while True:
        _report(progress, journal, meter)
        await asyncio.sleep(1.0)


async def run_phase(
    backend: Backend,
    requests: Sequence[ChatRequest],
    journal: Journal,
    phase: str,
    meter: Meter | None = None,
    reuse: RequestReuse | None = None,
    looked_up: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Send what the journal and the request store do not answer; `looked_up` runs after the store's lookup,
    before anything is sent."""
    todo = [request for request in requests if request.custom_id not in journal]
    answered = len(requests) - len(todo)
    copies: dict[str, list[str]] = {}  # a request sent -> identical ones that take its answer
    stored = 0
    if reuse is not None:
        todo = reuse.fill(todo, journal)
        stored = len(requests) - answered - len(todo)
        todo, copies = reuse.distinct(todo, requests, journal)
        await journal.drain()
    if looked_up is not None:
        await looked_up()
    log.info(
        "%s: %d requests, %d already answered, %d stored by identical requests, %d identical to another, %d to send",
        phase,
        len(requests),
        answered,
        stored,
        len(requests) - answered - stored - len(todo),
        len(todo),
    )
    if not todo:
        if reuse is not None:
            reuse.record(requests, journal)  # a resumed worker's answers, if it died before storing them
        # Its final line still shows in the log (`datasweep run` prints each phase's end) and it counts as done.
        answered_already = Progress(phase, len(requests), "requests", initial=len(requests))
        _report(answered_already, journal, meter)
        answered_already.close()
        return
    client = getattr(backend, "client", None)
    if isinstance(client, AsyncOpenAI):
        await check_endpoint(client)  # one cheap request: a wrong baseURL fails now, not after the retries
    waiting = len(todo) + sum(len(others) for others in copies.values())
    progress = Progress(phase, len(requests), "requests", initial=len(requests) - waiting)
    watcher = asyncio.get_running_loop().create_task(_watch(progress, journal, meter))
    try:
        failures = await backend.run(todo, journal)
    finally:
        watcher.cancel()
        if reuse is not None:
            reuse.copy_answers(copies, journal)
        await journal.drain()
        await backend.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        _report(progress, journal, meter)
        progress.close()
        if reuse is not None:
            reuse.record(requests, journal)  # also what a failed or stopped phase paid for
    if failures:
        sample = "; ".join(f"{custom_id}: {error}" for custom_id, error in failures[:3])
        raise GenerateFailed(
            f"{phase}: {len(failures)} of {len(todo)} requests failed after retries ({sample}); "
            f"{len(journal.done)} answers are kept in {journal.path} and a rerun sends only the rest"
        )


def _check_output_dir(spec: WorkerSpec, work: Path) -> None:
    marker = work / "fingerprint"
    if marker.exists() and marker.read_text().strip() != spec.fingerprint:
        raise GenerateInputError(
            f"{spec.output_dir} holds the resume state of fingerprint {marker.read_text().strip()[:12]}, not "
            f"{spec.fingerprint[:12]}: use an empty outputDir (or delete {work})"
        )
    if not marker.exists():
        atomic_write_text(marker, spec.fingerprint + "\n")


def _usage_entry(
    entries: list[dict[str, Any]], model: str, table: dict[str, PriceEntry], batch: bool, reused: bool = False
) -> dict[str, Any]:
    """Requests, tokens and cost of the entries paid for (`reused`: of those the request store answered)."""
    entries = [entry for entry in entries if bool(entry.get(REUSED)) == reused]
    prompt_tokens = sum(int(entry.get("prompt_tokens") or 0) for entry in entries)
    completion_tokens = sum(int(entry.get("completion_tokens") or 0) for entry in entries)
    cost = pricing.estimate_cost(model, prompt_tokens, completion_tokens, table, batch)
    return {
        "model": model,
        "requests": len(entries),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": cost if cost is not None else 0.0,
        "priced": cost is not None,
    }


def row_of(item: WorkItem) -> str:
    """The record a request belongs to (rephrasing asks one request per field of a record)."""
    return item.custom_id.rsplit(":", 1)[0]


def _generation_id(item: WorkItem) -> str:
    return item.custom_id


def _validation_id(item: WorkItem) -> str:
    return item.validation_id


def request_reuse_counts(
    items: Sequence[WorkItem], generated: Journal, validated: Journal | None, params: GenerateParams
) -> RequestReuseCounts:
    """The point's requests the request store answered (journal entries marked reused), the rows whose every
    request it answered, what is left to send and what the stored answers cost when first paid for."""
    table = pricing.price_table(params.backend, params.prices)
    batch = params.backend == "openai-batch"
    phases: list[tuple[Journal, str, Callable[[WorkItem], str]]] = [(generated, params.model, _generation_id)]
    if validated is not None and params.validation is not None:
        phases.append((validated, params.validation.model, _validation_id))
    saved, answered = [], 0
    rows: dict[str, bool] = {}
    for journal, model, key in phases:
        entries = [journal.done[key(item)] for item in items if key(item) in journal]
        answered += len(entries)
        saved.append(_usage_entry(entries, model, table, batch, reused=True))
        for item in items:
            entry = journal.done.get(key(item))
            rows[row_of(item)] = rows.get(row_of(item), True) and bool(entry and entry.get(REUSED))
    requests = len(items) * len(phases)
    return RequestReuseCounts(
        requests=requests,
        stored=sum(s["requests"] for s in saved),
        to_send=requests - answered,
        rows=len(rows),
        rows_reused=sum(rows.values()),
        saved_tokens=sum(s["prompt_tokens"] + s["completion_tokens"] for s in saved),
        saved_usd=round(sum(s["cost_usd"] for s in saved), 6) if all(s["priced"] for s in saved) else None,
    )


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _readme(spec: WorkerSpec, params: GenerateParams, report: dict[str, Any], usage: Usage) -> str:
    rows = "\n".join(
        f"| {split} | {counts['records']} | {counts['generated']} | {counts['kept']} | {counts['rejected']} |"
        for split, counts in report["splits"].items()
    )
    judge = f"{params.validation.model} (temperature {params.validation.temperature})" if params.validation else "none"
    return f"""# {spec.dataset} / {spec.semantic_name}

Generated by `datasweep worker generate` (task `{params.task}`, backend `{params.backend}`).

- fingerprint: `{spec.fingerprint}`
- generation model: {params.model} (temperature {params.temperature}, top_p {params.top_p},
  max_tokens {params.max_tokens})
- validation model: {judge}
- first batch: {spec.batch or "-"}, experiment: {spec.experiment or "-"}
- usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens
  in {usage.requests} requests, about ${usage.cost_usd:.4f}

| split | records | generated | kept | rejected |
|---|---|---|---|---|
{rows}

Kept records: `{spec.dataset}/{spec.dataset.lower()}_<split>.jsonl`; rejected ones with their reason:
`rejected/`; counts and reasons: `report.json`; parameters: `generation_config.yaml`,
`experiment_metadata.json`.
"""


def compile_outputs(
    spec: WorkerSpec,
    params: GenerateParams,
    splits: dict[str, SplitData],
    plan: TaskPlan,
    generated: Journal,
    validated: Journal | None,
    started: float,
    gpu_seconds: float,
    batch_ids: dict[str, list[str]],
    reuse: RequestReuse | None = None,
) -> Manifest:
    """Write the outputs into a staging directory under `.work/`, publish them by rename once all are complete,
    then the manifest: a kill or a full volume at any point leaves no partial output beside the resume state."""
    target = spec.output_path
    staging = target / WORK_DIR / PUBLISH_DIR
    if staging.exists():
        shutil.rmtree(staging)  # an earlier attempt's, killed before it published: redone from the journals
    staging.mkdir(parents=True)
    try:
        roles, total, extra = _write_outputs(
            spec, params, splits, plan, generated, validated, started, gpu_seconds, batch_ids, staging, reuse
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    published = publish_tree(staging, target)
    try:
        return finalize_artifact(
            target,
            fingerprint=spec.fingerprint,
            stage="generate",
            roles=roles,
            usage=total,
            extra=extra,
            provenance=answer_provenance(
                [*generated.done.values(), *(validated.done.values() if validated is not None else ())]
            ),
        )
    except BaseException:
        unpublish(target, published)
        raise


def _write_outputs(
    spec: WorkerSpec,
    params: GenerateParams,
    splits: dict[str, SplitData],
    plan: TaskPlan,
    generated: Journal,
    validated: Journal | None,
    started: float,
    gpu_seconds: float,
    batch_ids: dict[str, list[str]],
    out: Path,
    reuse: RequestReuse | None = None,
) -> tuple[Roles, Usage, dict[str, Any]]:
    batch = params.backend == "openai-batch"
    table = pricing.price_table(params.backend, params.prices)
    texts = {custom_id: str(entry.get("text") or "") for custom_id, entry in generated.done.items()}
    verdicts: dict[str, tuple[str, str]] | None = None
    if validated is not None:
        verdicts = {
            custom_id: parse_verdict(str(entry.get("text") or "")) for custom_id, entry in validated.done.items()
        }

    report: dict[str, Any] = {"splits": {}, "rejection_reasons": {}}
    data_files: dict[str, list[str]] = {}
    rejected_files: dict[str, list[str]] = {}
    usage_by_split: dict[str, Any] = {}
    total = Usage()
    # answers the request store gave instead of the API (request-level reuse): what this Artifact did not pay
    saved_by_reuse: dict[str, Any] = {"requests": 0, "promptTokens": 0, "completionTokens": 0, "costUsd": 0.0}
    for split, data in splits.items():
        items = [item for item in plan.items if item.split == split]
        grouped: dict[str, list[WorkItem]] = {}
        for item in items:
            grouped.setdefault(row_of(item), []).append(item)
        kept: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for group in grouped.values():
            record, keep = compile_record(params.task, group, texts, verdicts)
            (kept if keep else rejected).append(record)
            if not keep:
                reason = str(record["validation"]["reason"])[:80]
                report["rejection_reasons"][reason] = report["rejection_reasons"].get(reason, 0) + 1
        kept_path = f"{spec.dataset}/{spec.dataset.lower()}_{split}.jsonl"
        _write_jsonl(out / kept_path, kept)
        data_files[split] = [kept_path]
        if rejected:
            rejected_path = f"rejected/{spec.dataset.lower()}_{split}.jsonl"
            _write_jsonl(out / rejected_path, rejected)
            rejected_files[split] = [rejected_path]
        report["splits"][split] = {
            "records": len(data.records),
            "generated": len(grouped),
            "kept": len(kept),
            "rejected": len(rejected),
            "skipped": plan.skipped.get(split, {}),
        }
        answers = {"generation": (params.model, [generated.done[i.custom_id] for i in items])}
        if validated is not None and params.validation is not None:
            answers["validation"] = (params.validation.model, [validated.done[i.validation_id] for i in items])
        phases = {phase: _usage_entry(entries, model, table, batch) for phase, (model, entries) in answers.items()}
        for model, entries in answers.values():
            saved = _usage_entry(entries, model, table, batch, reused=True)
            saved_by_reuse = {
                "requests": saved_by_reuse["requests"] + saved["requests"],
                "promptTokens": saved_by_reuse["promptTokens"] + saved["prompt_tokens"],
                "completionTokens": saved_by_reuse["completionTokens"] + saved["completion_tokens"],
                "costUsd": round(saved_by_reuse["costUsd"] + saved["cost_usd"], 6),
            }
        split_usage = {
            "prompt_tokens": sum(p["prompt_tokens"] for p in phases.values()),
            "completion_tokens": sum(p["completion_tokens"] for p in phases.values()),
            "requests": sum(p["requests"] for p in phases.values()),
            "cost_usd": round(sum(p["cost_usd"] for p in phases.values()), 6),
            "phases": phases,
        }
        usage_by_split[split] = split_usage
        total = total + Usage(
            prompt_tokens=split_usage["prompt_tokens"],
            completion_tokens=split_usage["completion_tokens"],
            requests=split_usage["requests"],
            cost_usd=split_usage["cost_usd"],
        )
    total = total + Usage(gpu_seconds=round(gpu_seconds, 3), wall_seconds=round(time.monotonic() - started, 3))
    atomic_write_json(out / "report.json", report)

    canonical = params.model_dump(mode="json")
    canonical["prompt_sha256"] = _sha256(params.prompt)
    if params.validation is not None:
        canonical["validation"]["prompt_sha256"] = _sha256(params.validation.prompt)
    priced_everything = all(p["priced"] for s in usage_by_split.values() for p in s["phases"].values())
    metadata = {
        "artifact": spec.artifact,
        "stage": "generate",
        "dataset": spec.dataset,
        "semantic_name": spec.semantic_name,
        "fingerprint": spec.fingerprint,
        "short_fingerprint": spec.fingerprint[:12],
        "batch": spec.batch,
        "experiment": spec.experiment,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": canonical,
        "result_params": result_params("generate", params),
        "usage": {
            **total.model_dump(mode="json"),
            "by_split": usage_by_split,
            "cost_complete": priced_everything,
            "savedByReuse": saved_by_reuse,
        },
        "counts": report["splits"],
        "lineage": {
            "source_dir": spec.source_dir,
            "source_files": {
                split: {"path": str(data.path), "sha256": data.sha256, "records": len(data.records)}
                for split, data in splits.items()
            },
            "backend": params.backend,
            "base_url": params.base_url,
            "batch_ids": batch_ids,
            "inputs": spec.inputs,
            "worker": f"datasweep {__version__}",
        },
    }
    atomic_write_json(out / "experiment_metadata.json", metadata)
    config = {
        "experiment": {
            "batch_id": spec.batch,
            "experiment": spec.experiment,
            "semantic_name": spec.semantic_name,
        },
        "dataset": {"dataset_name": spec.dataset, "source_dir": spec.source_dir},
        "generation": {k: v for k, v in canonical.items() if k != "validation"},
        "validation": canonical.get("validation"),
    }
    atomic_write_text(out / "generation_config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    atomic_write_text(out / "README.md", _readme(spec, params, report, total))
    roles = Roles(
        data=data_files,
        rejected=rejected_files,
        reports=["report.json", "experiment_metadata.json", "generation_config.yaml", "README.md"],
    )
    extra = {
        "counts": report["splits"],
        "usage_by_split": usage_by_split,
        "dataset": spec.dataset,
        "savedByReuse": saved_by_reuse,
        REQUEST_REUSE_KEY: request_reuse_counts(plan.items, generated, validated, params).model_dump(
            mode="json", by_alias=True
        ),
    }
    if reuse is not None:
        extra["requestStore"] = {
            "path": str(reuse.store.root),
            "lookups": reuse.lookup_enabled,
            "lookupSeconds": round(reuse.lookup_seconds, 3),
        }
    return roles, total, extra


def request_reuse(spec: WorkerSpec, params: GenerateParams) -> RequestReuse | None:
    """The volume's request store for this worker, or None for an outputDir outside the shared layout."""
    store = store_for(spec.output_path)
    if store is None:
        log.info("%s is not under <root>/_shared/: no request store, every request is sent", spec.output_dir)
        return None
    paths = transformers_model_paths(params, spec.base_model) if params.backend == "transformers" else None
    references = spec.output_path / WORK_DIR / REFERENCES
    family = backend_family(params, paths)
    return RequestReuse(store, family, params.cache_version, lookup=params.request_reuse, references=references)


async def _generate(
    spec: WorkerSpec, params: GenerateParams, plan: TaskPlan, api_key: str, work: Path, reuse: RequestReuse | None
) -> tuple[Journal, Journal | None, float]:
    gpu_seconds = 0.0
    generated = Journal(work / "generate.jsonl")
    backend = build_backend(params, spec, "generate", api_key, work)
    table = pricing.price_table(params.backend, params.prices)
    batch = params.backend == "openai-batch"

    def meter_for(model: str) -> Meter:
        return lambda prompt, completion: pricing.estimate_cost(model, prompt, completion, table, batch)

    requests = [generation_request(item, params) for item in plan.items]
    plan_progress(len(requests) * (2 if params.validation is not None else 1))
    validated = Journal(work / "validate.jsonl") if params.validation is not None else None

    def validation_requests(items: Sequence[WorkItem]) -> list[ChatRequest]:
        texts = {custom_id: str(entry.get("text") or "") for custom_id, entry in generated.done.items()}
        return [validation_request(item, texts[item.custom_id], params) for item in items]

    async def generation_looked_up() -> None:
        # the judge requests of texts known now (stored or answered earlier) are looked up at once: the report
        # then says which rows are wholly stored before anything is sent
        if reuse is not None and validated is not None:
            known = [i for i in plan.items if i.custom_id in generated and i.validation_id not in validated]
            reuse.fill(validation_requests(known), validated)
            await validated.drain()
        counts = request_reuse_counts(plan.items, generated, validated, params)
        report_request_reuse(counts, "generate", len(generated.done))

    await run_phase(backend, requests, generated, "generate", meter_for(params.model), reuse, generation_looked_up)
    if isinstance(backend, TransformersBackend):
        gpu_seconds += backend.gpu_seconds
    if validated is not None and params.validation is not None:
        judged = validated

        async def validation_looked_up() -> None:
            counts = request_reuse_counts(plan.items, generated, judged, params)
            report_request_reuse(counts, "validate", len(judged.done))

        requests = validation_requests(plan.items)
        backend = build_backend(params, spec, "validate", api_key, work)
        await run_phase(
            backend, requests, validated, "validate", meter_for(params.validation.model), reuse, validation_looked_up
        )
        if isinstance(backend, TransformersBackend):
            gpu_seconds += backend.gpu_seconds
    return generated, validated, gpu_seconds


def submitted_batch_ids(work: Path) -> dict[str, list[str]]:
    """Every Batch API batch this artifact used, by phase (from the persisted state, across restarts)."""
    found: dict[str, list[str]] = {}
    for phase in ("generate", "validate"):
        path = work / f"batches-{phase}.json"
        if path.exists():
            state = json.loads(path.read_text(encoding="utf-8"))
            found[phase] = [s["batch_id"] for s in state.get("submissions", []) if s.get("batch_id")]
    return found


def run_generate(spec: WorkerSpec) -> Manifest:
    """Produce (or finish) the generate Artifact described by `spec`; returns its manifest."""
    started = time.monotonic()
    params = load_params(spec)
    out = spec.output_path
    existing = read_manifest(out)
    if existing is not None:
        if existing.fingerprint == spec.fingerprint:
            log.info("%s is already complete (fingerprint %s): nothing to do", out, spec.fingerprint[:12])
            return existing
        raise GenerateInputError(
            f"{out} already holds a complete artifact of fingerprint {existing.fingerprint[:12]}: use another outputDir"
        )
    if not spec.source_dir:
        raise GenerateInputError("the worker spec has no sourceDir: the generate stage reads the dataset from there")
    splits = read_splits(
        Path(spec.source_dir), spec.dataset, params.id_field, any_jsonl=params.task == "code-scenarios"
    )
    plan = plan_task(splits, params)
    api_key = resolve_api_key(params)
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    _check_output_dir(spec, work)
    log.info(
        "generate %s/%s: %d items over %s via %s",
        spec.dataset,
        spec.semantic_name,
        len(plan.items),
        ", ".join(splits),
        params.backend,
    )
    # SIGTERM (a suspended or deleted Job) cancels the requests in flight and drains the journals: a rerun sends
    # only what was in flight; then Stopped (exit 143).
    reuse = request_reuse(spec, params)
    generated, validated, gpu_seconds = asyncio.run(
        run_until_stopped(_generate(spec, params, plan, api_key, work, reuse))
    )
    manifest = compile_outputs(
        spec, params, splits, plan, generated, validated, started, gpu_seconds, submitted_batch_ids(work), reuse
    )
    generated.close()
    if validated is not None:
        validated.close()
    log.info("done: %s (%d files, usage %s)", out, len(manifest.files), manifest.usage.model_dump())
    return manifest
