"""`datasweep worker generate`: run the stage from a worker spec, or inspect an artifact's resume state."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from datasweep.api.worker import WorkerSpecError, load_worker_spec

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

    Exit codes: 0 done, 2 bad input (spec, params, dataset files, API key), 1 other failure
    (answered requests are kept; rerunning resumes without paying twice).
    """
    if ctx.invoked_subcommand is not None:
        return
    if spec_path is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_BAD_INPUT)
    _setup_logging(verbose)
    from datasweep.workloads.generate.inputs import GenerateFailed, GenerateInputError
    from datasweep.workloads.generate.worker import run_generate

    try:
        spec = load_worker_spec(spec_path, expected_stage="generate")
        manifest = run_generate(spec)
    except (WorkerSpecError, GenerateInputError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_BAD_INPUT)
    except GenerateFailed as exc:
        click.echo(f"failed: {exc}", err=True)
        ctx.exit(EXIT_FAILED)
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
