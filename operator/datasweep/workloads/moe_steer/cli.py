"""`datasweep worker moe-steer`: `--spec FILE` runs the whole stage; `analyze` and `train` run one half.

Exit codes: 0 ok, 2 bad input (the message says what and where), 1 any other failure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from datasweep.api.params_file import ParamsFileError, load_params_mapping
from datasweep.api.worker import WorkerSpecError, load_worker_spec
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.progress import recording_progress
from datasweep.workloads.tensorboard import TensorBoardUnavailable, check_available

F = TypeVar("F", bound=Callable[..., Any])


def _log(message: str) -> None:
    click.echo(f"[moe-steer] {message}", err=True)


def _fail_bad_input(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _params_from_flags(params_file: str | None, settings: tuple[str, ...], flags: dict[str, Any]) -> dict[str, Any]:
    """params file (YAML/JSON mapping) < -p key=value (YAML value) < explicit flags."""
    try:
        raw = load_params_mapping(params_file or None, settings, "-p", "top_n=20")
    except ParamsFileError as exc:
        raise MoeSteerInputError(str(exc)) from exc
    raw.update({key: value for key, value in flags.items() if value is not None})
    return raw


def _param_options(func: F) -> F:
    options = [
        click.option("--params", "params_file", type=click.Path(dir_okay=False), help="YAML/JSON file of params"),
        click.option("-p", "--param", "settings", multiple=True, metavar="NAME=VALUE", help="Set any param"),
        click.option("--batch-size", type=int, default=None, help="Prompts per mixed batch"),
        click.option("--safe-ratio", type=float, default=None, help="Share of safe prompts per batch"),
        click.option("--seed", type=int, default=None),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="WorkerSpec file: run the whole stage")
@click.pass_context
def main(ctx: click.Context, spec_path: str | None) -> None:
    """SteerMoE: mixed safe/unsafe batches, per-expert risk difference, expert-only fine-tuning."""
    if ctx.invoked_subcommand is not None:
        if spec_path:
            raise click.UsageError("--spec runs the whole stage; do not combine it with a subcommand")
        return
    if not spec_path:
        click.echo(ctx.get_help())
        ctx.exit(2)
    from datasweep.workloads.moe_steer.stage import run_stage

    try:
        spec = load_worker_spec(spec_path, expected_stage="moe-steer")
        with recording_progress(spec.output_path):
            manifest = run_stage(spec, log=_log)
    except (WorkerSpecError, MoeSteerInputError, TensorBoardUnavailable) as exc:
        _fail_bad_input(exc)
        return
    _log(f"done: {spec.output_dir} ({len(manifest.files)} files)")


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(file_okay=False), help="MoE base model dir")
@click.option("--data", type=click.Path(), default=None, help="Data file/dir (paired or labeled records)")
@click.option("--safe", type=click.Path(), default=None, help="File/dir of safe prompts (prompt_field)")
@click.option("--unsafe", type=click.Path(), default=None, help="File/dir of unsafe prompts (prompt_field)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory")
@click.option("--top-n", type=int, default=None, help="Select at most this many experts")
@click.option("--threshold", type=float, default=None, help="Select only experts whose risk difference is above this")
@click.option(
    "--aggregation",
    type=click.Choice(["per-batch-mean", "pooled"]),
    default=None,
    help="per-batch-mean (default) or pooled over all tokens (the SteerMoE paper)",
)
@click.option("--max-per-layer", type=int, default=None, help="Select at most this many experts per layer")
@_param_options
def analyze(
    model_path: str,
    data: str | None,
    safe: str | None,
    unsafe: str | None,
    out_dir: str,
    params_file: str | None,
    settings: tuple[str, ...],
    **flags: Any,
) -> None:
    """Build mixed batches, compute risk differences, select experts.

    Writes batches.jsonl, risk_diff.json/.csv, selected_experts.json and expert_mask.npy to --out.
    """
    from datasweep.workloads.moe_steer.stage import analyze_stage, load_model, parse_params

    try:
        params = parse_params(_params_from_flags(params_file, settings, flags))
        model, tokenizer, layout, device = load_model(model_path, params)
        analyze_stage(model, tokenizer, layout, device, Path(out_dir), params, data, safe, unsafe, log=_log)
    except MoeSteerInputError as exc:
        _fail_bad_input(exc)


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(file_okay=False), help="MoE base model dir")
@click.option(
    "--analysis",
    "analysis_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output dir of `analyze`",
)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Default: the analysis dir")
@click.option("--epochs", "num_epochs", type=int, default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--weight-decay", type=float, default=None)
@click.option("--max-steps", type=int, default=None)
@_param_options
def train(
    model_path: str,
    analysis_dir: str,
    out_dir: str | None,
    params_file: str | None,
    settings: tuple[str, ...],
    **flags: Any,
) -> None:
    """Fine-tune only the experts in expert_mask.npy on the analysis batches.

    Writes final_model/, training_metadata.json, training_curves.png and expert_mask.npy to --out.
    """
    from datasweep.workloads.moe_steer.stage import load_model, parse_params, train_stage

    try:
        params = parse_params(_params_from_flags(params_file, settings, flags))
        check_available(params.tensorboard)  # before loading the model
        model, tokenizer, layout, device = load_model(model_path, params)
        target = Path(out_dir) if out_dir else Path(analysis_dir)
        train_stage(model, tokenizer, layout, device, Path(analysis_dir), target, params, model_path, log=_log)
    except (MoeSteerInputError, TensorBoardUnavailable) as exc:
        _fail_bad_input(exc)
