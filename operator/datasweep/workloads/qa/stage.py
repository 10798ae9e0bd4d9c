"""The whole qa stage from a WorkerSpec, and the evaluate/predict building blocks the CLI shares."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datasweep.api._base import describe_validation_error
from datasweep.api.stages.qa import QaParams
from datasweep.api.worker import WorkerSpec
from datasweep.store.atomic import atomic_write_json, atomic_write_text
from datasweep.store.manifest import Manifest, Roles, Usage, finalize_artifact, read_manifest
from datasweep.store.provenance import gpu_provenance
from datasweep.workloads.curves import CURVES_FILE
from datasweep.workloads.qa.convert import ConvertOptions
from datasweep.workloads.qa.data import (
    FieldNames,
    LoadReport,
    QaDataError,
    QaRecord,
    find_split_files,
    load_split,
    load_train_dev,
)
from datasweep.workloads.tensorboard import event_files


class QaParamsError(ValueError):
    """Stage parameters that do not validate; the message names each field."""


def parse_params(raw: dict[str, Any], where: str = "params") -> QaParams:
    try:
        return QaParams.model_validate(raw)
    except ValidationError as exc:
        raise QaParamsError(f"invalid qa params: {describe_validation_error(exc, prefix=where)}") from exc


def field_names(params: QaParams) -> FieldNames:
    return FieldNames(
        id=params.id_field,
        context=params.context_field,
        question=params.question_field,
        answers=params.answers_field,
    )


def conversion_options(params: QaParams) -> ConvertOptions | None:
    """How input files are converted from report records, or None when they are QA samples already."""
    if params.input_format != "reports":
        return None
    return ConvertOptions(negative_ratio=params.report_negative_ratio, seed=params.seed, id_field=params.id_field)


def write_bad_records(output_dir: Path, reports: dict[str, LoadReport]) -> int:
    lines = [
        json.dumps({"split": split, **problem}, ensure_ascii=False)
        for split, report in reports.items()
        for problem in report.problems
    ]
    if lines:
        atomic_write_text(output_dir / "bad_records.jsonl", "\n".join(lines) + "\n")
    return len(lines)


@dataclass
class InferenceSettings:
    max_length: int
    doc_stride: int
    n_best_size: int
    max_answer_length: int
    batch_size: int
    null_threshold: float | None
    fields: FieldNames
    f1_tokenization: str = "auto"


def inference_settings(model_dir: Path, overrides: dict[str, Any] | None = None) -> InferenceSettings:
    """Window/decoding settings saved with a trained model (best/qa_config.json), else the defaults."""
    saved: dict[str, Any] = {}
    config_path = model_dir / "qa_config.json"
    if config_path.is_file():
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    defaults = QaParams()
    names = saved.get("field_names", {})
    values: dict[str, Any] = {
        "max_length": saved.get("max_length", defaults.max_length),
        "doc_stride": saved.get("doc_stride", defaults.doc_stride),
        "n_best_size": saved.get("n_best_size", defaults.n_best_size),
        "max_answer_length": saved.get("max_answer_length", defaults.max_answer_length),
        "batch_size": saved.get("per_device_eval_batch_size", defaults.per_device_eval_batch_size),
        "null_threshold": saved.get("null_threshold"),
        "f1_tokenization": saved.get("f1_tokenization", defaults.f1_tokenization),
        "fields": FieldNames(**{k: names[k] for k in ("id", "context", "question", "answers") if k in names}),
    }
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return InferenceSettings(**values)


def predict_records(
    model_dir: Path,
    records: Sequence[QaRecord],
    settings: InferenceSettings,
    *,
    tune_threshold: bool,
) -> Any:
    """Run a saved model on records: an EvalResult (metrics are meaningful only when records carry gold)."""
    from datasweep.workloads.qa.features import build_features
    from datasweep.workloads.qa.modeling import evaluate_features, load_model_and_tokenizer, pick_device

    model, tokenizer = load_model_and_tokenizer(model_dir)
    device = pick_device()
    model.to(device)
    features = build_features(
        tokenizer,
        records,
        max_length=settings.max_length,
        doc_stride=settings.doc_stride,
        short_field_max_tokens=1,
    )
    threshold = None if tune_threshold else (settings.null_threshold or 0.0)
    return evaluate_features(
        model,
        records,
        features,
        batch_size=settings.batch_size,
        device=device,
        pad_token_id=int(tokenizer.pad_token_id or 0),
        n_best_size=settings.n_best_size,
        max_answer_length=settings.max_answer_length,
        threshold=threshold,
        f1_tokenization=settings.f1_tokenization,
    )


def write_predictions(output_dir: Path, result: Any, prefix: str = "") -> None:
    atomic_write_json(output_dir / f"{prefix}predictions.json", result.final_predictions)
    atomic_write_json(output_dir / f"{prefix}null_odds.json", result.predictions.null_odds)
    atomic_write_json(output_dir / f"{prefix}nbest_predictions.json", result.predictions.nbest)


def run_stage(spec: WorkerSpec) -> Manifest:
    """Train, pick best/ on dev, evaluate it on dev with the tuned null threshold (and test with the same
    threshold when there is a test split), then finalize the artifact."""
    output_dir = spec.output_path
    existing = read_manifest(output_dir)
    if existing is not None:
        return existing  # already complete: a rerun pays nothing
    params = parse_params(spec.params, "spec.params")
    data = spec.inputs.get("data")
    if not data:
        raise QaDataError("spec.inputs.data is missing: the qa stage needs the generate artifact directory")
    if not spec.base_model:
        raise QaParamsError("spec.baseModel is missing: the qa stage needs a local encoder directory")
    started = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    files = find_split_files(data, spec.dataset)
    skip = params.bad_records == "skip"
    fields = field_names(params)
    convert = conversion_options(params)
    train, dev = load_train_dev(files, fields, skip, params.dev_ratio, params.seed, convert)
    reports = {"train": train, "validation": dev}
    if "test" in files:
        reports["test"] = load_split(files, "test", fields, skip, convert)
    skipped = write_bad_records(output_dir, reports)

    import torch

    from datasweep.workloads.qa.training import QaTrainer

    trainer = QaTrainer(params, spec.base_model, output_dir, reports["train"].records, reports["validation"].records)
    result = trainer.train()
    best = result.best_dir
    settings = inference_settings(best)
    dev = predict_records(best, reports["validation"].records, settings, tune_threshold=True)
    dev_metrics = dict(dev.metrics)
    atomic_write_json(
        output_dir / "eval_results.json",
        {"split": "validation", "best_epoch": result.best_epoch, **dev_metrics},
    )
    write_predictions(output_dir, dev)
    extra: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "null_threshold": dev.threshold,
        "dev": {
            k: dev_metrics[k]
            for k in ("exact", "f1", "best_exact", "best_f1", "tuned_f1", "tuned_f1_thresh", "total")
            if k in dev_metrics
        },
        "train_features": result.train_features,
        "skipped_records": skipped,
        "data_files": {split: str(path) for split, path in files.items()},
    }
    converted = {split: report.conversion for split, report in reports.items() if report.conversion is not None}
    if converted:
        extra["converted_reports"] = converted
    if "test" in reports:
        settings.null_threshold = dev.threshold
        test = predict_records(best, reports["test"].records, settings, tune_threshold=False)
        atomic_write_json(output_dir / "test_results.json", {"split": "test", **test.metrics})
        write_predictions(output_dir, test, prefix="test_")
        extra["test"] = {k: test.metrics[k] for k in ("exact", "f1", "total") if k in test.metrics}
    trainer.log(f"done: best epoch {result.best_epoch}, dev {extra['dev']}, null threshold {dev.threshold:.4f}")
    wall = time.monotonic() - started
    usage = Usage(wall_seconds=round(wall, 3), gpu_seconds=round(wall if torch.cuda.is_available() else 0.0, 3))
    present = [
        name
        for name in (
            "predictions.json",
            "null_odds.json",
            "nbest_predictions.json",
            "test_predictions.json",
            "test_null_odds.json",
            "test_nbest_predictions.json",
            "bad_records.jsonl",
            "train.log",
            CURVES_FILE,
        )
        if (output_dir / name).is_file()
    ]
    metrics = [name for name in ("metrics_history.json", "test_results.json") if (output_dir / name).is_file()]
    metrics += event_files(output_dir)
    roles = Roles(reports=present, model=best.name, metrics=["eval_results.json", *metrics])
    return finalize_artifact(
        output_dir,
        fingerprint=spec.fingerprint,
        stage="qa",
        roles=roles,
        usage=usage,
        extra=extra,
        provenance=gpu_provenance(),
    )
