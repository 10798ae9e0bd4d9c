"""`datasweep worker dataset --spec FILE`: snapshot a prepared dataset (no generation) for training stages."""

from __future__ import annotations

import json
from pathlib import Path

import click

from datasweep.api.worker import WorkerSpecError, load_worker_spec

EXIT_BAD_INPUT = 2


@click.command()
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(spec_path: Path) -> None:
    """Copy the dataset's split files into the artifact directory and write its manifest.

    Exit codes: 0 done, 2 bad input (spec, missing source files).
    """
    from datasweep.workloads.dataset.worker import DatasetInputError, run_dataset

    try:
        spec = load_worker_spec(spec_path, expected_stage="dataset")
        manifest = run_dataset(spec)
    except (WorkerSpecError, DatasetInputError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from exc
    click.echo(json.dumps(manifest.summary(path=spec.output_dir).model_dump(mode="json", by_alias=True)))
