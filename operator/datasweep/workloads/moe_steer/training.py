"""Fine-tune only the selected experts: every other weight stays bit-identical.

Experts are fused 3D tensors ([E, ...] per MoE layer), so freezing is per expert slice: all parameters are
frozen except the fused expert tensors of layers with a selected expert; a gradient hook zeroes the
unselected slices' gradients (torch.where, so a NaN elsewhere cannot leak in), AdamW runs without its own
weight decay (a zero gradient then gives a zero update), and decoupled weight decay is applied by hand to
the selected slices only. Batches are replayed with `BatchPreservingSampler`, exactly as analysed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.workloads.moe_steer.analysis import BoolArray
from datasweep.workloads.moe_steer.data import BatchPreservingSampler, BatchRecord
from datasweep.workloads.moe_steer.encoding import encode_batch
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.moe_steer.experts import MoeLayout
from datasweep.workloads.progress import Progress
from datasweep.workloads.tensorboard import ScalarWriter

FINAL_MODEL_DIR = "final_model"


@dataclass
class MaskedParameter:
    name: str
    param: Any  # nn.Parameter [E, ...]
    selected: Any  # BoolTensor [E, 1, ...] broadcastable to param


@dataclass
class TrainingResult:
    steps: int
    epochs_run: int
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # the rate each step was taken at
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each epoch
    seconds: float = 0.0
    trainable_elements: int = 0
    batch_order: list[list[int]] = field(default_factory=list)  # batch_idx sequence per epoch


def resolve_device(choice: str) -> Any:
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise MoeSteerInputError("device: cuda was asked for but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def check_mask(mask: BoolArray, layout: MoeLayout) -> None:
    if mask.shape != (layout.num_layers, layout.num_experts):
        raise MoeSteerInputError(
            f"expert mask has shape {mask.shape} but the model has {layout.num_layers} layers x "
            f"{layout.num_experts} experts; it was made for another model"
        )
    dense = sorted(set(np.nonzero(mask.any(axis=1))[0].tolist()) - set(layout.moe_layers))
    if dense:
        raise MoeSteerInputError(f"expert mask selects experts in dense (non-MoE) layers {dense}")
    if not mask.any():
        raise MoeSteerInputError(
            "no expert is selected (empty expert mask); lower the threshold or raise top_n, then analyze again"
        )


def restrict_gradients_to_experts(
    model: Any, layout: MoeLayout, mask: BoolArray
) -> tuple[list[MaskedParameter], list[Any]]:
    """Freeze everything but the selected expert slices; returns masked params and hook handles."""
    import torch

    check_mask(mask, layout)
    for param in model.parameters():
        param.requires_grad_(False)
    masked: list[MaskedParameter] = []
    handles: list[Any] = []
    for layer in layout.layers:
        row = mask[layer.layer_idx]
        if not row.any():
            continue
        for name, param in layer.expert_params.items():
            selected = torch.as_tensor(row, device=param.device).view(-1, *([1] * (param.dim() - 1)))
            param.requires_grad_(True)

            def keep_selected(grad: Any, selected: Any = selected) -> Any:
                return torch.where(selected, grad, torch.zeros_like(grad))

            handles.append(param.register_hook(keep_selected))
            masked.append(MaskedParameter(f"layers.{layer.layer_idx}.{name}", param, selected))
    return masked, handles


MASKED_LOGIT = -1e9  # far below any router logit, finite so softmax never sees inf - inf


def mask_router_logits(layout: MoeLayout, mask: BoolArray) -> list[Any]:
    """Seed 004's ExpertMaskingTrainer: in every layer with a selected expert, the router logits of the other
    experts are pushed to MASKED_LOGIT, so tokens are routed among the selected experts only.

    A forward hook on each router (OLMoE / Qwen2-MoE `TopKRouter`: returns logits, top-k weights, top-k
    indices) recomputes the routing from the masked logits the way the router does (softmax, top-k,
    norm_topk_prob). Returns the hook handles; remove them to route normally again."""
    import torch

    handles = []
    for layer in layout.layers:
        row = mask[layer.layer_idx]
        if not row.any():
            continue
        router = layer.router
        keep = torch.as_tensor(row)

        def route(module: Any, _inputs: Any, output: Any, keep: Any = keep) -> Any:
            logits = output[0]
            masked = torch.where(keep.to(logits.device), logits, torch.full_like(logits, MASKED_LOGIT))
            probs = torch.softmax(masked, dtype=torch.float, dim=-1)
            top_value, top_index = torch.topk(probs, module.top_k, dim=-1)
            if getattr(module, "norm_topk_prob", False):
                top_value = top_value / top_value.sum(dim=-1, keepdim=True)
            return masked, top_value.to(logits.dtype), top_index

        handles.append(router.register_forward_hook(route))
    return handles


def _lr_lambda(params: MoeSteerParams, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(params.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if params.lr_scheduler == "linear":
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        return 1.0

    return factor


def train_experts(
    model: Any,
    tokenizer: Any,
    layout: MoeLayout,
    batches: Sequence[Sequence[BatchRecord]],
    mask: BoolArray,
    params: MoeSteerParams,
    device: Any = "cpu",
    log: Callable[[str], None] | None = None,
    board: ScalarWriter | None = None,
) -> TrainingResult:
    """Train the selected experts on the analysis batches (one optimizer step per batch); `board` gets the
    loss and learning rate of every step and the mean loss of every epoch (TensorBoard)."""
    import torch

    rows = [record for batch in batches for record in batch]
    sampler = BatchPreservingSampler(
        [r.batch_idx for r in rows],
        [r.in_batch_idx for r in rows],
        shuffle=params.shuffle_batches,
        seed=params.seed,
    )
    masked, handles = restrict_gradients_to_experts(model, layout, mask)
    if params.mask_router_logits:
        handles += mask_router_logits(layout, mask)
    trainable = [m.param for m in masked]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.0)
    total_steps = params.num_epochs * len(sampler)
    if params.max_steps is not None:
        total_steps = min(total_steps, params.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(params, total_steps))
    result = TrainingResult(
        steps=0,
        epochs_run=0,
        trainable_elements=sum(int(m.selected.sum()) * m.param[0].numel() for m in masked),
    )
    torch.manual_seed(params.seed)
    start = time.perf_counter()
    model.train()
    progress = Progress("moe-steer", total_steps, "steps")
    try:
        for epoch in range(params.num_epochs):
            if result.steps >= total_steps:
                break
            sampler.set_epoch(epoch)
            order: list[int] = []
            for indices in sampler:
                if result.steps >= total_steps:
                    break
                members = [rows[i] for i in indices]
                order.append(members[0].batch_idx)
                lr = float(optimizer.param_groups[0]["lr"])
                loss = masked_step(model, tokenizer, members, masked, optimizer, params, device)
                scheduler.step()
                result.steps += 1
                result.losses.append(loss)
                result.learning_rates.append(lr)
                if board is not None:
                    board.scalars({"train/loss": loss, "train/learning_rate": lr}, result.steps)
                progress.update(result.steps, loss=loss)
                if log and (result.steps % params.log_every == 0 or result.steps == total_steps):
                    log(f"step {result.steps}/{total_steps} epoch {epoch} loss {loss:.4f}")
            result.batch_order.append(order)
            result.epochs_run += 1
            if order:
                epoch_loss = result.losses[-len(order) :]
                result.epoch_losses.append(sum(epoch_loss) / len(epoch_loss))
                if board is not None:
                    board.scalars({"train/epoch_loss": result.epoch_losses[-1]}, result.steps)
    finally:
        progress.close()
        for handle in handles:
            handle.remove()
        model.eval()
    result.seconds = time.perf_counter() - start
    return result


def masked_step(
    model: Any,
    tokenizer: Any,
    members: Sequence[BatchRecord],
    masked: Sequence[MaskedParameter],
    optimizer: Any,
    params: MoeSteerParams,
    device: Any,
) -> float:
    """One optimizer step on one batch: loss, masked gradients, clipping, masked decoupled weight decay."""
    import torch

    encoded = encode_batch(tokenizer, members, params)
    outputs = model(
        input_ids=encoded.input_ids.to(device),
        attention_mask=encoded.attention_mask.to(device),
        labels=encoded.labels.to(device),
        output_router_logits=False,
        use_cache=False,
    )
    loss = outputs.loss
    if not torch.isfinite(loss):
        raise RuntimeError(f"training loss is {loss.item()}; lower learning_rate or check the data")
    loss.backward()
    trainable = [m.param for m in masked]
    if params.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(trainable, params.max_grad_norm)
    if params.weight_decay > 0:
        lr = optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for item in masked:
                keep = torch.tensor(1.0, dtype=item.param.dtype, device=item.param.device)
                decay = torch.tensor(1.0 - lr * params.weight_decay, dtype=item.param.dtype, device=item.param.device)
                item.param.mul_(torch.where(item.selected, decay, keep))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach().float().item())


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """save_pretrained into a temp directory beside the target, then rename: never a half-written model."""
    target = Path(out_dir)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    for path in partial.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target
