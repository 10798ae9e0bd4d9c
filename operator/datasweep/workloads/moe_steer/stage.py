"""The moe-steer stage end to end: batches -> analysis -> selection -> expert-only training -> manifest."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from datasweep.api._base import describe_validation_error
from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.api.worker import WorkerSpec
from datasweep.store.atomic import atomic_write_json
from datasweep.store.manifest import Manifest, Roles, Usage, finalize_artifact
from datasweep.store.provenance import gpu_provenance
from datasweep.workloads.curves import CURVES_FILE
from datasweep.workloads.moe_steer.analysis import (
    EXPERT_MASK_FILE,
    analyze_batches,
    load_expert_mask,
    select_experts,
    write_analysis,
)
from datasweep.workloads.moe_steer.data import (
    BATCHES_FILE,
    build_batches,
    load_prompts,
    read_batches,
    write_batches,
)
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.moe_steer.experts import MoeLayout, discover_moe_layout
from datasweep.workloads.moe_steer.plots import plot_moe_steer_curves
from datasweep.workloads.moe_steer.training import FINAL_MODEL_DIR, resolve_device, save_model, train_experts
from datasweep.workloads.tensorboard import check_available, event_files, open_writer

ANALYSIS_METADATA_FILE = "analysis_metadata.json"
TRAINING_METADATA_FILE = "training_metadata.json"
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def parse_params(raw: Mapping[str, Any], where: str = "params") -> MoeSteerParams:
    try:
        return MoeSteerParams.model_validate(dict(raw))
    except ValidationError as exc:
        raise MoeSteerInputError(f"invalid moe-steer params: {describe_validation_error(exc, prefix=where)}") from exc


def load_model(model_path: str | Path, params: MoeSteerParams) -> tuple[Any, Any, MoeLayout, Any]:
    """Model (on its device, in params.torch_dtype), tokenizer, MoE layout, device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(model_path)
    if not (source / "config.json").is_file():
        raise MoeSteerInputError(f"{source}: base model directory has no config.json (expected a save_pretrained dir)")
    device = resolve_device(params.device)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=getattr(torch, params.torch_dtype))
    except ValueError as exc:
        raise MoeSteerInputError(f"{source}: cannot load as a causal LM: {exc}") from exc
    layout = discover_moe_layout(model)
    model.to(device)
    return model, tokenizer, layout, device


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def analyze_stage(
    model: Any,
    tokenizer: Any,
    layout: MoeLayout,
    device: Any,
    out_dir: Path,
    params: MoeSteerParams,
    data: str | Path | None = None,
    safe: str | Path | None = None,
    unsafe: str | Path | None = None,
    log: Log = _quiet,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Build and save the batches, analyse them, select experts and save the tables and the mask."""
    prompts, report = load_prompts(params, data=data, safe=safe, unsafe=unsafe, dataset=dataset)
    batches = build_batches(prompts, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_batches(batches, out_dir / BATCHES_FILE)
    n_safe = sum(p.label == "safe" for p in prompts)
    used = len(batches) * params.batch_size
    log(
        f"{len(prompts)} prompts ({n_safe} safe, {len(prompts) - n_safe} unsafe) "
        f"from {len(report.files)} file(s) "
        f"-> {len(batches)} batches of {params.safe_per_batch}+{params.unsafe_per_batch}"
    )
    result = analyze_batches(model, tokenizer, layout, batches, params, device)
    risk_diff = result.aggregate(params.aggregation)
    selected = select_experts(risk_diff, params)
    if not selected:
        signed = risk_diff if params.direction == "unsafe" else -risk_diff
        raise MoeSteerInputError(
            f"no expert passes the selection (threshold {params.threshold}, direction {params.direction}, "
            f"positive_only {params.positive_only}; largest {params.aggregation} risk difference towards "
            f"{params.direction} {float(signed.max()):.4f}); lower threshold, or set positive_only false"
        )
    mask = write_analysis(out_dir, result, selected, layout.num_layers, params)
    log(
        f"analysed in {result.seconds:.1f}s; selected {len(selected)} experts: "
        + ", ".join(f"L{result.moe_layers[pos]}E{expert}" for pos, expert in selected)
    )
    summary = {
        "input_files": report.files,
        "records": report.records,
        "prompts": {"safe": n_safe, "unsafe": len(prompts) - n_safe},
        "skipped_empty": report.skipped_empty,
        "duplicates_dropped": report.duplicates_dropped,
        "unused_prompts": len(prompts) - used,
        "num_batches": len(batches),
        "batch_size": params.batch_size,
        "safe_per_batch": params.safe_per_batch,
        "unsafe_per_batch": params.unsafe_per_batch,
        "num_layers": layout.num_layers,
        "moe_layers": layout.moe_layers,
        "num_experts": layout.num_experts,
        "top_k": layout.top_k,
        "selected": [[result.moe_layers[pos], expert] for pos, expert in selected],
        "selected_count": int(mask.sum()),
        "analysis_seconds": round(result.seconds, 3),
    }
    atomic_write_json(out_dir / ANALYSIS_METADATA_FILE, summary)
    return summary


def train_stage(
    model: Any,
    tokenizer: Any,
    layout: MoeLayout,
    device: Any,
    analysis_dir: Path,
    out_dir: Path,
    params: MoeSteerParams,
    base_model: str,
    log: Log = _quiet,
) -> dict[str, Any]:
    """Replay the analysis batches to train the masked experts; save final_model, training_metadata.json."""
    batches = read_batches(analysis_dir / BATCHES_FILE)
    mask = load_expert_mask(analysis_dir / EXPERT_MASK_FILE)
    sizes = {len(batch) for batch in batches}
    if sizes != {params.batch_size}:
        raise MoeSteerInputError(
            f"{analysis_dir / BATCHES_FILE}: batches have sizes {sorted(sizes)} "
            f"but batch_size is {params.batch_size}; "
            "train with the params the analysis used"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    board = open_writer(out_dir, params.tensorboard)
    try:
        result = train_experts(model, tokenizer, layout, batches, mask, params, device, log=log, board=board)
    finally:
        if board is not None:
            board.close()
    plot_moe_steer_curves(result, out_dir)
    save_model(model, tokenizer, out_dir / FINAL_MODEL_DIR)
    if analysis_dir.resolve() != out_dir.resolve():
        shutil.copyfile(analysis_dir / EXPERT_MASK_FILE, out_dir / EXPERT_MASK_FILE)
    selected = [[int(layer), int(expert)] for layer, expert in zip(*mask.nonzero(), strict=True)]
    metadata = {
        "base_model": base_model,
        "analysis_dir": str(analysis_dir),
        "params": params.model_dump(mode="json"),
        "num_batches": len(batches),
        "batch_size": params.batch_size,
        "safe_per_batch": params.safe_per_batch,
        "unsafe_per_batch": params.unsafe_per_batch,
        "selected_experts": selected,
        "trainable_elements": result.trainable_elements,
        "optimizer_state_bytes": result.optimizer_state_bytes,
        "steps": result.steps,
        "epochs_run": result.epochs_run,
        "batch_order": result.batch_order,
        "losses": [round(loss, 6) for loss in result.losses],
        "learning_rates": result.learning_rates,
        "epoch_losses": [round(loss, 6) for loss in result.epoch_losses],
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.losses[-1] if result.losses else None,
        "train_seconds": round(result.seconds, 3),
        "device": str(device),
        "versions": _versions(),
    }
    atomic_write_json(out_dir / TRAINING_METADATA_FILE, metadata)
    log(f"trained {result.steps} steps in {result.seconds:.1f}s; final loss {metadata['final_loss']}")
    return metadata


def run_stage(spec: WorkerSpec, log: Log = _quiet) -> Manifest:
    """Everything the Kubernetes Job runs for one moe-steer Artifact; finalize_artifact comes last."""
    start = time.perf_counter()
    params = parse_params(spec.params, where="spec.params")
    check_available(params.tensorboard)  # before loading the model, not after training
    if not spec.base_model:
        raise MoeSteerInputError("spec.baseModel is required: the MoE causal LM to analyse and train")
    data, safe, unsafe = spec.inputs.get("data"), spec.inputs.get("safe"), spec.inputs.get("unsafe")
    if data is None and (safe is None or unsafe is None):
        raise MoeSteerInputError(
            f"spec.inputs has {sorted(spec.inputs)}; moe-steer needs 'data' (or both 'safe' and 'unsafe')"
        )
    out_dir = spec.output_path
    model, tokenizer, layout, device = load_model(spec.base_model, params)
    analysis = analyze_stage(
        model, tokenizer, layout, device, out_dir, params, data, safe, unsafe, log, dataset=spec.dataset
    )
    training = train_stage(model, tokenizer, layout, device, out_dir, out_dir, params, spec.base_model, log)
    wall = time.perf_counter() - start
    usage = Usage(wall_seconds=round(wall, 3), gpu_seconds=round(wall, 3) if str(device).startswith("cuda") else 0.0)
    extra = {
        "numBatches": analysis["num_batches"],
        "selectedExperts": analysis["selected"],
        "finalLoss": training["final_loss"],
        "steps": training["steps"],
        "loadReport": {k: analysis[k] for k in ("records", "skipped_empty", "duplicates_dropped", "unused_prompts")},
    }
    reports = [BATCHES_FILE, ANALYSIS_METADATA_FILE, EXPERT_MASK_FILE, CURVES_FILE]
    reports += sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name.startswith(("risk_", "selected_")))
    roles = Roles(reports=reports, model=FINAL_MODEL_DIR, metrics=[TRAINING_METADATA_FILE, *event_files(out_dir)])
    return finalize_artifact(
        out_dir,
        fingerprint=spec.fingerprint,
        stage=spec.stage,
        roles=roles,
        usage=usage,
        extra=extra,
        provenance=gpu_provenance(device, 1),
    )


__all__ = ["analyze_stage", "load_model", "parse_params", "run_stage", "train_stage"]
