"""`datasweep worker generate`: run the stage from a worker spec, or inspect an artifact's resume state."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from datasweep.api.worker import WorkerSpecError, load_worker_spec
from datasweep.workloads.progress import recording_progress

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@click.group(invoke_without_command=True)
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, path_type=Path), help="Worker spec (YAML/JSON)")
@click.option("-v", "--verbose", is_flag=True, help="Log every HTTP request and retry")
@click.pass_context
def main(ctx: click.Context, spec_path: Path | None, verbose: bool) -> None:
    """Generate a dataset (rephrase + validate, or code scenarios): datasweep worker generate --spec FILE.

    Exit codes: 0 done, 2 bad input (spec, params, dataset files, API key), 1 other failure, 143 stopped by
    SIGTERM (answered requests are kept; rerunning resumes without paying twice).
    """
    if ctx.invoked_subcommand is not None:
        return
    if spec_path is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_BAD_INPUT)
    _setup_logging(verbose)
    from datasweep.store.atomic import disk_full, volume_full_message
    from datasweep.store.manifest import write_failure_message
    from datasweep.workloads.generate.inputs import GenerateFailed, GenerateInputError
    from datasweep.workloads.generate.worker import run_generate
    from datasweep.workloads.stopping import Stopped

    def fail(message: str, code: int) -> None:
        click.echo(message, err=True)
        write_failure_message(message)
        ctx.exit(code)

    output = spec_path.parent  # until the spec names the output directory
    try:
        spec = load_worker_spec(spec_path, expected_stage="generate")
        output = spec.output_path
        with recording_progress(output):
            manifest = run_generate(spec)
    except (WorkerSpecError, GenerateInputError) as exc:
        fail(f"error: {exc}", EXIT_BAD_INPUT)
    except GenerateFailed as exc:
        fail(f"failed: {exc}", EXIT_FAILED)
    except Stopped as exc:  # a suspended or deleted Job: the journals are drained, a rerun resumes
        fail(f"{exc}: answered requests are kept in {output}/.work and a rerun sends only the rest", 128 + exc.signum)
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            raise
        # Answered requests stay in the journals: a rerun after the volume is freed resumes without paying twice.
        fail(f"failed: {volume_full_message(output, full)}", EXIT_FAILED)
    click.echo(json.dumps(manifest.summary(path=spec.output_dir).model_dump(mode="json", by_alias=True)))


@main.command("status")
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
def status(output_dir: Path) -> None:
    """Progress of an artifact directory: answered requests per phase, Batch API batches, completeness."""
    from datasweep.store.manifest import read_manifest

    manifest = read_manifest(output_dir)
    work = output_dir / ".work"
    report: dict[str, object] = {"complete": manifest is not None}
    for phase in ("generate", "validate"):
        journal = work / f"{phase}.jsonl"
        if journal.exists():
            report[f"{phase}_answered"] = sum(1 for line in journal.open(encoding="utf-8") if line.strip())
        state = work / f"batches-{phase}.json"
        if state.exists():
            submissions = json.loads(state.read_text(encoding="utf-8")).get("submissions", [])
            report[f"{phase}_batches"] = [
                {
                    "batch_id": s.get("batch_id"),
                    "status": s.get("status"),
                    "requests": len(s.get("custom_ids", [])),
                }
                for s in submissions
            ]
    if manifest is not None:
        report["usage"] = manifest.usage.model_dump(mode="json", by_alias=True)
    click.echo(json.dumps(report, indent=2))


@main.command("batches")
@click.option("--list-active", is_flag=True, help="List the account's batches that have not ended")
@click.option("--check-status", "check_id", metavar="BATCH_ID", help="Print one batch: status, counts, errors")
@click.option(
    "--download-results",
    "download_id",
    metavar="BATCH_ID",
    help="Write batch_results_<id>.jsonl, batch_errors_<id>.jsonl and batch_job_<id>.json to --output-dir",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where --download-results writes",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help='A batch_submitter config.json ({"api_key": "sk-..."}); default: the key in --api-key-env',
)
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable with the key")
@click.option("--base-url", default=None, help="API base URL (…/v1); default: the SDK's (OPENAI_BASE_URL or OpenAI)")
@click.option("--json", "as_json", is_flag=True, help="--list-active: print JSON instead of a table")
def batches(
    list_active: bool,
    check_id: str | None,
    download_id: str | None,
    output_dir: Path,
    config: Path | None,
    api_key_env: str,
    base_url: str | None,
    as_json: bool,
) -> None:
    """Operations against the OpenAI Batch API, as batch_submitter has them: --list-active, --check-status ID,
    --download-results ID. Exit codes: 0 ok, 2 bad input or refused by the API (message shown), 1 other."""
    import openai

    from datasweep.workloads.generate import batch_ops
    from datasweep.workloads.generate.batch_api import api_error_message
    from datasweep.workloads.generate.inputs import GenerateInputError

    chosen = [
        flag
        for flag, on in (
            ("--list-active", list_active),
            ("--check-status", check_id),
            ("--download-results", download_id),
        )
        if on
    ]
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --list-active, --check-status BATCH_ID, --download-results BATCH_ID"
        )
    try:
        key = batch_ops.api_key_from(config, api_key_env, dict(os.environ))
        client = openai.OpenAI(api_key=key, base_url=base_url)
        if list_active:
            rows = batch_ops.list_active(client)
            if as_json:
                click.echo(json.dumps(rows, indent=2))
            elif not rows:
                click.echo("no active batches")
            else:
                for row in rows:
                    click.echo(
                        f"{row['id']}  {row['status']:<11}  {row['created_at']}  "
                        f"{row['completed']}/{row['total']} done, {row['failed']} failed"
                        + (f"  {row['datasweep_key']}" if row["datasweep_key"] else "")
                    )
        elif check_id:
            click.echo(json.dumps(batch_ops.check_status(client, check_id), indent=2))
        else:
            assert download_id is not None
            downloaded = batch_ops.download_results(client, download_id, output_dir)
            for path in downloaded.files:
                click.echo(str(path))
    except GenerateInputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except openai.APIStatusError as exc:
        click.echo(f"error: the API refused (HTTP {exc.status_code}): {api_error_message(exc)}", err=True)
        sys.exit(EXIT_BAD_INPUT if exc.status_code < 500 else EXIT_FAILED)
    except openai.APIError as exc:
        click.echo(f"failed: {api_error_message(exc)}", err=True)
        sys.exit(EXIT_FAILED)
