"""`datasweep worker qa`: --spec FILE runs the whole stage; train/evaluate/predict work on plain paths."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from datasweep.api.params_file import ParamsFileError, load_params_mapping
from datasweep.api.worker import WorkerSpecError, load_worker_spec
from datasweep.workloads.progress import recording_progress
from datasweep.workloads.qa.data import QaDataError, find_split_files, gold_answers, load_split, load_train_dev
from datasweep.workloads.qa.stage import QaParamsError, conversion_options, field_names, parse_params
from datasweep.workloads.tensorboard import TensorBoardUnavailable

F = TypeVar("F", bound=Callable[..., Any])
BAD_INPUT_EXIT = 2


def _bad_input_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [WorkerSpecError, QaDataError, QaParamsError, TensorBoardUnavailable]
    try:  # the model/resume errors live in torch-importing modules
        from datasweep.workloads.qa.modeling import QaModelError
        from datasweep.workloads.qa.training import QaResumeError

        errors += [QaModelError, QaResumeError]
    except ImportError:
        pass
    return tuple(errors)


def reports_bad_input(func: F) -> F:
    """Bad input (spec, params, data, model dir) exits 2 with its message; anything else exits 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _bad_input_errors() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(BAD_INPUT_EXIT)

    return wrapper  # type: ignore[return-value]


def _parse_overrides(params_file: Path | None, overrides: tuple[str, ...]) -> dict[str, Any]:
    try:
        return load_params_mapping(params_file, overrides, "--set", "num_train_epochs=3")
    except ParamsFileError as exc:
        raise QaParamsError(str(exc)) from exc


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(path_type=Path),
    help="WorkerSpec file (stage qa): train, evaluate on dev with the tuned threshold, finalize the artifact.",
)
@click.pass_context
@reports_bad_input
def main(ctx: click.Context, spec_path: Path | None) -> None:
    """Extractive title/alias QA with unanswerable questions (SQuAD-v2 style)."""
    if ctx.invoked_subcommand is not None:
        if spec_path is not None:
            raise click.UsageError("--spec runs the whole stage; do not combine it with a subcommand")
        return
    if spec_path is None:
        click.echo(ctx.get_help())
        return
    from datasweep.workloads.qa.stage import run_stage

    spec = load_worker_spec(spec_path, expected_stage="qa")
    with recording_progress(spec.output_path):
        manifest = run_stage(spec)
    click.echo(json.dumps({"outputDir": spec.output_dir, "files": len(manifest.files), **manifest.extra}, default=str))


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Directory with train/validation splits")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Base encoder directory")
@click.option("--output", "output_dir", required=True, type=click.Path(path_type=Path), help="Run directory")
@click.option("--dataset", default=None, help="Dataset name, to pick <dataset>_train.jsonl among several")
@click.option("--params", "params_file", type=click.Path(path_type=Path, exists=True), help="YAML/JSON qa params")
@click.option("--set", "overrides", multiple=True, help="Override one param: --set learning_rate=3e-5")
@click.option("--no-resume", is_flag=True, help="Ignore existing checkpoint-epoch-* directories")
@reports_bad_input
def train(
    data: Path,
    model_dir: Path,
    output_dir: Path,
    dataset: str | None,
    params_file: Path | None,
    overrides: tuple[str, ...],
    no_resume: bool,
) -> None:
    """Train (resuming from the newest epoch checkpoint in OUTPUT unless --no-resume)."""
    params = parse_params(_parse_overrides(params_file, overrides))
    files = find_split_files(data, dataset)
    skip = params.bad_records == "skip"
    train_report, dev_report = load_train_dev(
        files, field_names(params), skip, params.dev_ratio, params.seed, conversion_options(params)
    )
    from datasweep.workloads.qa.training import QaTrainer

    trainer = QaTrainer(params, model_dir, output_dir.resolve(), train_report.records, dev_report.records)
    result = trainer.train(resume=not no_resume)
    click.echo(
        json.dumps(
            {
                "best": str(result.best_dir),
                "best_epoch": result.best_epoch,
                "null_threshold": result.null_threshold,
                "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early,
            }
        )
    )


def _load_eval_records(data: Path, split: str, fields: Any) -> Any:
    files = find_split_files(data)
    if data.is_file():
        split = next(iter(files))
    return load_split(files, split, fields, skip_bad=False).records


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Gold file, or directory with splits")
@click.option("--split", default="validation", show_default=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--model", "model_dir", type=click.Path(path_type=Path), help="Trained model (e.g. RUN/best)")
@click.option("--output", "output_dir", type=click.Path(path_type=Path), help="Write eval_results.json and predictions")
@click.option("--threshold", type=float, default=None, help="Null-odds threshold; default: tune it on these questions")
@click.option(
    "--f1-tokenization",
    type=click.Choice(["auto", "whitespace", "char"]),
    default=None,
    help="F1 tokens: whitespace (SQuAD), char (CMRC, Chinese), auto (char where the gold answer is Chinese); "
    "default: the model's setting, else auto",
)
@click.option(
    "--predictions",
    "predictions_file",
    type=click.Path(path_type=Path, exists=True),
    help="Score an existing predictions.json instead of running a model (the official script's mode)",
)
@click.option(
    "--null-odds",
    "null_odds_file",
    type=click.Path(path_type=Path, exists=True),
    help="With --predictions: null odds per id (the official --na-prob-file)",
)
@reports_bad_input
def evaluate(
    data: Path,
    split: str,
    model_dir: Path | None,
    output_dir: Path | None,
    threshold: float | None,
    f1_tokenization: str | None,
    predictions_file: Path | None,
    null_odds_file: Path | None,
) -> None:
    """Official SQuAD-v2 metrics: EM, F1, HasAns/NoAns, best thresholds from null odds."""
    from datasweep.store.atomic import atomic_write_json
    from datasweep.workloads.qa.data import FieldNames
    from datasweep.workloads.qa.metrics import squad_v2_evaluate

    if predictions_file is not None:
        records = _load_eval_records(data, split, FieldNames())
        preds = json.loads(predictions_file.read_text(encoding="utf-8"))
        odds = json.loads(null_odds_file.read_text(encoding="utf-8")) if null_odds_file else None
        missing = [r.id for r in records if r.id not in preds]
        if missing:
            raise QaDataError(f"{predictions_file}: no prediction for {len(missing)} id(s), e.g. {missing[:5]}")
        metrics = squad_v2_evaluate(
            gold_answers(records),
            preds,
            odds,
            na_prob_thresh=1.0 if threshold is None else threshold,
            f1_tokenization=f1_tokenization or "auto",
        )
    else:
        if model_dir is None:
            raise click.UsageError("give --model (a trained model) or --predictions (a predictions.json)")
        from datasweep.workloads.qa.stage import inference_settings, predict_records, write_predictions

        settings = inference_settings(model_dir)
        records = _load_eval_records(data, split, settings.fields)
        if threshold is not None:
            settings.null_threshold = threshold
        if f1_tokenization is not None:
            settings.f1_tokenization = f1_tokenization
        result = predict_records(model_dir, records, settings, tune_threshold=threshold is None)
        metrics = result.metrics
        if output_dir is not None:
            write_predictions(output_dir, result)
    if output_dir is not None:
        atomic_write_json(output_dir / "eval_results.json", metrics)
    click.echo(json.dumps(metrics, indent=2))


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Questions file, or directory with splits")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "validation", "test"]))
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Trained model (RUN/best)")
@click.option("--output", "output_dir", required=True, type=click.Path(path_type=Path), help="Where predictions go")
@click.option("--n-best", "n_best_size", type=click.IntRange(min=1), default=None, help="Candidates per window")
@click.option("--max-answer-length", type=click.IntRange(min=1), default=None, help="Longest answer in tokens")
@click.option("--threshold", type=float, default=None, help="Null-odds threshold (default: the one saved in --model)")
@reports_bad_input
def predict(
    data: Path,
    split: str,
    model_dir: Path,
    output_dir: Path,
    n_best_size: int | None,
    max_answer_length: int | None,
    threshold: float | None,
) -> None:
    """Write predictions.json ("" = no answer), null_odds.json and nbest_predictions.json."""
    from datasweep.workloads.qa.stage import inference_settings, predict_records, write_predictions

    settings = inference_settings(
        model_dir,
        {"n_best_size": n_best_size, "max_answer_length": max_answer_length, "null_threshold": threshold},
    )
    records = _load_eval_records(data, split, settings.fields)
    result = predict_records(model_dir, records, settings, tune_threshold=False)
    write_predictions(output_dir, result)
    answered = sum(1 for text in result.final_predictions.values() if text)
    click.echo(
        json.dumps(
            {
                "predictions": str(output_dir / "predictions.json"),
                "questions": len(records),
                "answered": answered,
                "null_threshold": result.threshold,
            }
        )
    )


@main.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Report records (jsonl/json/parquet): {id, report, fields: {name: value or [values]}}",
)
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path), help="QA samples jsonl")
@click.option(
    "--negative-ratio",
    type=click.FloatRange(min=0),
    default=None,
    help="At most this many generated negatives per positive (seeded draw); default: keep every negative",
)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True, help="Seed of the negative draw")
@click.option("--id-field", default="id", show_default=True, help="Report record field holding the report id")
@click.option("--skip-bad", is_flag=True, help="Leave invalid report records out (listed on stderr) instead of failing")
@reports_bad_input
def convert(
    input_path: Path,
    output_path: Path,
    negative_ratio: float | None,
    seed: int,
    id_field: str,
    skip_bad: bool,
) -> None:
    """Convert report records to QA samples with generated negatives (what `input_format: reports` trains on)."""
    from datasweep.store.records import RecordFileError
    from datasweep.workloads.qa.convert import ConvertOptions, convert_file, write_samples
    from datasweep.workloads.qa.data import LoadReport

    if not input_path.is_file():
        raise QaDataError(f"{input_path}: report file not found")
    try:
        result = convert_file(input_path, ConvertOptions(negative_ratio=negative_ratio, seed=seed, id_field=id_field))
    except RecordFileError as exc:
        raise QaDataError(str(exc)) from exc
    listing = LoadReport(problems=result.problems).describe_problems()
    if result.problems and not skip_bad:
        raise QaDataError(
            f"{len(result.problems)} invalid report record(s) in {input_path} "
            f"(fix them, or pass --skip-bad to leave them out):\n{listing}"
        )
    if result.problems:
        click.echo(f"skipped {len(result.problems)} invalid report record(s):\n{listing}", err=True)
    if not result.samples:
        raise QaDataError(f"{input_path}: no QA samples (no valid report with a field)")
    write_samples(output_path, result.samples)
    click.echo(json.dumps({"output": str(output_path), **result.stats}))
