"""The fomaml stage end to end: prepare -> validate -> meta-train -> few-shot eval -> finalize.

Output directory (`spec.outputDir`):
    data/                    prepared parquet (seed 003 layout) and prepare_report.json
    validation_report.{json,txt}
    checkpoints/             resumable checkpoints (latest pointer + step_<N>/state.pt)
    metrics.jsonl            one line per logged meta-step; eval_history.jsonl every test_freq steps
    training_curves.png      meta-train losses, and few-shot loss/accuracy before/after adaptation per evaluation
    tensorboard/             TensorBoard event files (params.tensorboard)
    final_model/             save_pretrained model + tokenizer
    eval_results.json        few-shot loss/accuracy before and after K adaptation steps, per task
    training_metadata.json   params, base model, inputs, world size, timings
    manifest.json            written last by finalize_artifact
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from datasweep.api._base import describe_validation_error
from datasweep.api.params_file import ParamsFileError, load_params_mapping
from datasweep.api.stages.fomaml import FomamlParams
from datasweep.api.worker import WorkerSpec
from datasweep.store.atomic import atomic_write_json, atomic_write_text
from datasweep.store.manifest import Manifest, Roles, Usage, finalize_artifact
from datasweep.store.provenance import gpu_provenance
from datasweep.workloads.curves import CURVES_FILE
from datasweep.workloads.fomaml.data import META_TRAIN, DataError, load_tasks, prepare
from datasweep.workloads.fomaml.distributed import DistContext, init_distributed
from datasweep.workloads.fomaml.plots import EVAL_HISTORY, EVAL_RESULTS, METRICS, plot_fomaml_curves
from datasweep.workloads.fomaml.validate import ValidationReport, validate_prepared
from datasweep.workloads.tensorboard import check_available, event_files

if TYPE_CHECKING:
    from datasweep.workloads.fomaml.trainer import MetaTrainer

STAGE = "fomaml"
FINAL_MODEL = "final_model"


class ParamsError(ValueError):
    """Parameters that do not validate; the message names each field."""


def parse_params(raw: Mapping[str, Any], where: str = "params") -> FomamlParams:
    try:
        return FomamlParams.model_validate(dict(raw))
    except ValidationError as exc:
        raise ParamsError(f"invalid fomaml parameters: {describe_validation_error(exc, prefix=where)}") from exc


def load_params(params_file: Path | None = None, overrides: Sequence[str] = ()) -> FomamlParams:
    """Parameters from a flat YAML mapping plus `key=value` overrides (values parsed as YAML)."""
    try:
        raw = load_params_mapping(params_file, overrides, "--set", "inner_lr=1e-4")
    except ParamsFileError as exc:
        raise ParamsError(str(exc)) from exc
    return parse_params(raw, where=str(params_file) if params_file else "params")


def is_prepared(directory: Path) -> bool:
    return (directory / META_TRAIN).is_dir()


def run_validate(data_dir: Path, params: FomamlParams, report_dir: Path | None = None) -> ValidationReport:
    report = validate_prepared(data_dir, params)
    if report_dir is not None:
        atomic_write_json(report_dir / "validation_report.json", report.to_dict())
        atomic_write_text(report_dir / "validation_report.txt", report.render() + "\n")
    return report


def shard_model(model: Any, dist: DistContext) -> Any:
    """FSDP2: shard every decoder layer and the root module across the ranks."""
    from torch.distributed.fsdp import fully_shard

    inner = getattr(model, "model", None)
    for layer in getattr(inner, "layers", []) or []:
        fully_shard(layer)
    fully_shard(model)
    return model


def _build_trainer(
    data_dir: Path, model_dir: str, params: FomamlParams, dist: DistContext, with_test: bool = True
) -> tuple[MetaTrainer, Any]:
    from datasweep.workloads.fomaml.modeling import load_model_and_tokenizer
    from datasweep.workloads.fomaml.trainer import MetaTrainer

    tasks = load_tasks(data_dir, params, with_test=with_test)
    model, tokenizer = load_model_and_tokenizer(
        model_dir, params.dtype, params.enable_gradient_checkpointing, dist.device
    )
    if dist.fsdp:
        model = shard_model(model, dist)
    return MetaTrainer(model, tokenizer, tasks, params, dist), tokenizer


def save_final_model(trainer: MetaTrainer, tokenizer: Any, target: Path) -> None:
    state = trainer.full_model_state()
    if trainer.dist.is_main:
        tmp = target.parent / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model = trainer.model
        model.save_pretrained(str(tmp), state_dict=state)
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    trainer.dist.barrier()


def run_train(
    data_dir: Path,
    model_dir: str,
    output_dir: Path,
    params: FomamlParams,
    dist: DistContext | None = None,
    on_step: Callable[[int], None] | None = None,
    labels: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    """Meta-train (resuming from output_dir/checkpoints), save final_model/, write eval_results.json.

    `labels`: the (batch, Experiment) that name the run when project_name/experiment_name are not set."""
    dist = dist or init_distributed(params.use_fsdp)
    check_available(params.tensorboard)
    trainer, tokenizer = _build_trainer(data_dir, model_dir, params, dist)
    try:
        trainer.train(output_dir, on_step=on_step)
        save_final_model(trainer, tokenizer, output_dir / FINAL_MODEL)
        results = trainer.evaluate()
        results["truncated_examples"] = trainer.encoder.truncated
        results.update(tracking(params, *(labels or (None, None))))
        if dist.is_main:
            atomic_write_json(output_dir / EVAL_RESULTS, results)
            trainer.record_evaluation(results)
            plot_fomaml_curves(output_dir)
    finally:
        trainer.close_board()
    return results


def run_eval(data_dir: Path, model_dir: str, params: FomamlParams, dist: DistContext | None = None) -> dict[str, Any]:
    """Few-shot evaluation of a model on a prepared directory (before/after K adaptation steps)."""
    dist = dist or init_distributed(params.use_fsdp)
    trainer, _ = _build_trainer(data_dir, model_dir, params, dist)
    try:
        results: dict[str, Any] = trainer.evaluate()
    finally:
        dist.shutdown()
    return results


def tracking(params: FomamlParams, batch: str | None = None, experiment: str | None = None) -> dict[str, str | None]:
    """Seed 003's trainer.project_name / experiment_name; by default the batch and the Experiment's name."""
    return {
        "project_name": params.project_name or batch,
        "experiment_name": params.experiment_name or experiment,
    }


def run_stage(spec: WorkerSpec) -> Manifest | None:
    """The whole stage from a WorkerSpec; returns the manifest (None on non-main ranks)."""
    started = time.monotonic()
    params = parse_params(spec.params, where="params")
    check_available(params.tensorboard)  # before preparing data, not after training
    if "data" not in spec.inputs:
        raise DataError("worker spec: inputs.data (the generate artifact directory) is required for fomaml")
    if not spec.base_model:
        raise DataError("worker spec: baseModel (a local model directory) is required for fomaml")
    input_dir = Path(spec.inputs["data"])
    output_dir = spec.output_path
    dist = init_distributed(params.use_fsdp)
    try:
        if is_prepared(input_dir) and not params.tasks:
            data_dir = input_dir
        else:
            data_dir = output_dir / "data"
            if dist.is_main:
                prepare(input_dir, data_dir, params, spec.dataset)
            dist.barrier()
        report = run_validate(data_dir, params, output_dir if dist.is_main else None)
        if not report.ok:
            raise DataError(f"prepared data failed validation ({data_dir}):\n{report.render()}")
        labels = tracking(params, spec.batch, spec.experiment)
        results = run_train(data_dir, spec.base_model, output_dir, params, dist, labels=(spec.batch, spec.experiment))
        wall = time.monotonic() - started
        if not dist.is_main:
            return None
        atomic_write_json(
            output_dir / "training_metadata.json",
            {
                "stage": STAGE,
                **labels,
                "batch": spec.batch,
                "experiment": spec.experiment,
                "artifact": spec.artifact,
                "fingerprint": spec.fingerprint,
                "dataset": spec.dataset,
                "base_model": spec.base_model,
                "inputs": spec.inputs,
                "data_dir": str(data_dir),
                "params": params.model_dump(mode="json"),
                "world_size": dist.world_size,
                "device": str(dist.device),
                "fsdp": dist.fsdp,
                "wall_seconds": round(wall, 3),
                "validation_warnings": report.warnings,
            },
        )
        usage = Usage(wall_seconds=round(wall, 3), gpu_seconds=round(wall * dist.world_size, 3) if dist.on_gpu else 0.0)
        extra = {
            "mean_before_loss": results.get("mean_before_loss"),
            "mean_after_loss": results.get("mean_after_loss"),
            "mean_after_token_accuracy": results.get("mean_after_token_accuracy"),
            "total_steps": params.total_steps,
            "world_size": dist.world_size,
            **{key: value for key, value in labels.items() if value is not None},
        }
        reports = ["validation_report.json", "validation_report.txt", "training_metadata.json"]
        if (output_dir / "data" / "prepare_report.json").is_file():
            reports.append("data/prepare_report.json")
        reports.append(CURVES_FILE)
        metrics = [name for name in (METRICS, EVAL_HISTORY) if (output_dir / name).is_file()]
        metrics += [EVAL_RESULTS, *event_files(output_dir)]
        roles = Roles(reports=reports, model=FINAL_MODEL, metrics=metrics)
        return finalize_artifact(
            output_dir,
            fingerprint=spec.fingerprint,
            stage=STAGE,
            roles=roles,
            usage=usage,
            extra=extra,
            provenance=gpu_provenance(dist.device, dist.world_size),
        )
    finally:
        dist.shutdown()
