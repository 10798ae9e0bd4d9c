"""`datasweep worker fomaml`: the whole stage from a WorkerSpec, or its steps by hand.

    datasweep worker fomaml --spec worker.yaml
    datasweep worker fomaml prepare --input DIR --output DIR [--params P.yaml] [--set key=value ...]
    datasweep worker fomaml validate DATA_DIR [--params P.yaml] [--report-dir DIR]
    datasweep worker fomaml train --data DIR --model DIR --output DIR [--params P.yaml] [--set ...]
    datasweep worker fomaml eval --data DIR --model DIR [--output FILE] [--params P.yaml] [--set ...]

Exit codes: 0 ok, 2 bad input (spec, params, data, validation failure), 1 anything else.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from datasweep.api.worker import WorkerSpecError, load_worker_spec
from datasweep.store.atomic import atomic_write_json
from datasweep.workloads.fomaml.data import DataError
from datasweep.workloads.fomaml.stage import ParamsError, load_params
from datasweep.workloads.progress import recording_progress
from datasweep.workloads.tensorboard import TensorBoardUnavailable

F = TypeVar("F", bound=Callable[..., Any])
BAD_INPUT = (WorkerSpecError, ParamsError, DataError, FileNotFoundError, TensorBoardUnavailable)


def _exit_codes(func: F) -> F:
    """Bad input -> exit 2 with the message; any other failure -> exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BAD_INPUT as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            click.echo(f"fomaml failed: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _params_options(func: F) -> F:
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one parameter (value read as YAML).",
    )(func)
    func = click.option(
        "--params",
        "params_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="YAML mapping of fomaml parameters (keys: inner_lr, num_inner_steps, ...).",
    )(func)
    return func


@click.group(invoke_without_command=True)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="WorkerSpec file (stage fomaml).",
)
@click.pass_context
def main(ctx: click.Context, spec_file: Path | None) -> None:
    """First-order MAML SFT: prepare, validate, meta-train and evaluate."""
    if ctx.invoked_subcommand is not None:
        if spec_file is not None:
            raise click.UsageError("--spec runs the whole stage; do not combine it with a subcommand")
        return
    if spec_file is None:
        click.echo(ctx.get_help())
        ctx.exit(2)
    _run_spec(spec_file)


@_exit_codes
def _run_spec(spec_file: Path) -> None:
    from datasweep.workloads.fomaml.stage import run_stage

    spec = load_worker_spec(spec_file, expected_stage="fomaml")
    with recording_progress(spec.output_path):
        manifest = run_stage(spec)
    if manifest is not None:
        click.echo(
            f"fomaml complete: {spec.output_dir} ({len(manifest.files)} files, "
            f"after-adaptation loss {manifest.extra.get('mean_after_loss')})"
        )


@main.command("prepare")
@click.option(
    "--input",
    "input_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Raw records (jsonl/parquet).",
)
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@_params_options
@_exit_codes
def prepare_command(input_dir: Path, output_dir: Path, params_file: Path | None, overrides: tuple[str, ...]) -> None:
    """Group records by task, format them and split each task into support/query/test parquet files."""
    from datasweep.workloads.fomaml.data import prepare

    params = load_params(params_file, overrides)
    report = prepare(input_dir, output_dir, params)
    click.echo(f"prepared {len(report.tasks)} task(s) from {report.records} record(s) into {output_dir}")
    for task, counts in report.tasks.items():
        dropped = report.duplicates_dropped.get(task, 0)
        line = ", ".join(f"{name}={count}" for name, count in counts.items())
        click.echo(f"  {task}: {line}" + (f" ({dropped} duplicate(s) dropped)" if dropped else ""))


@main.command("validate")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write validation_report.{json,txt}.",
)
@_params_options
@_exit_codes
def validate_command(
    data_dir: Path, report_dir: Path | None, params_file: Path | None, overrides: tuple[str, ...]
) -> None:
    """Check a prepared directory (columns, nulls, types, lengths, metadata, leakage, sizes)."""
    from datasweep.workloads.fomaml.stage import run_validate

    params = load_params(params_file, overrides)
    report = run_validate(data_dir, params, report_dir)
    click.echo(report.render())
    if not report.ok:
        sys.exit(2)


@main.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model_dir", required=True, help="Local model directory (base model).")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@_params_options
@_exit_codes
def train_command(
    data_dir: Path, model_dir: str, output_dir: Path, params_file: Path | None, overrides: tuple[str, ...]
) -> None:
    """Meta-train on a prepared directory (resumes from OUTPUT/checkpoints), then evaluate."""
    from datasweep.workloads.fomaml.stage import run_train

    params = load_params(params_file, overrides)
    results = run_train(data_dir, model_dir, output_dir, params)
    click.echo(
        f"trained {params.total_steps} meta-step(s); few-shot loss before/after adaptation: "
        f"{results['mean_before_loss']} / {results['mean_after_loss']}"
    )


@main.command("eval")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", "model_dir", required=True, help="Local model directory to evaluate.")
@click.option(
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write results JSON here.",
)
@_params_options
@_exit_codes
def eval_command(
    data_dir: Path,
    model_dir: str,
    output_file: Path | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Few-shot evaluation: each task's test loss/accuracy before and after K adaptation steps."""
    from datasweep.workloads.fomaml.stage import run_eval

    params = load_params(params_file, overrides)
    results = run_eval(data_dir, model_dir, params)
    if output_file is not None:
        atomic_write_json(output_file, results)
    click.echo(json.dumps(results, indent=2, sort_keys=True))
