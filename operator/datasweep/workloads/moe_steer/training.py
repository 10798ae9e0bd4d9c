"""Fine-tune only the selected experts: every other weight stays bit-identical.

Experts are fused 3D tensors ([E, ...] per MoE layer). The selected experts of each fused tensor are copied
into their own trainable parameter ([k, ...]); a parametrization hands the model its fused tensor unchanged
(the selected rows always hold the slices' values) while routing the gradient to the slices only. So
trainable parameters, gradients and AdamW state exist for the selected experts alone, every model parameter
is frozen, and AdamW's own decoupled weight decay touches nothing else. After each optimizer step the slices
are written into the fused tensor; afterwards the parametrizations are removed and the model is a plain
model again. Batches are replayed with `BatchPreservingSampler`, exactly as analysed.
"""

from __future__ import annotations

import functools
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
class TrainingResult:
    steps: int
    epochs_run: int
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # the rate each step was taken at
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each epoch
    seconds: float = 0.0
    trainable_elements: int = 0  # elements of the selected expert slices, the only trainable tensors
    optimizer_state_bytes: int = 0  # AdamW moments (exp_avg, exp_avg_sq) of those slices
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


@functools.cache
def _slice_parametrization_class() -> Any:
    """The nn.Module (for torch.nn.utils.parametrize) that holds one fused tensor's trainable slices; built on
    first use so that importing this module needs no torch."""
    import torch

    class FusedWithSlices(torch.autograd.Function):
        """Forward: the frozen fused tensor itself (a view, no copy: its selected rows already hold the slices'
        values). Backward: the slices get the rows of the fused tensor's gradient that belong to them."""

        @staticmethod
        def forward(ctx: Any, fused: Any, index: Any, slices: Any) -> Any:
            ctx.save_for_backward(index)
            return fused.view_as(fused)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (index,) = ctx.saved_tensors
            return None, None, grad.index_select(0, index)

    class SelectedExpertSlices(torch.nn.Module):
        def __init__(self, index: Any, slices: Any) -> None:
            super().__init__()
            self.index = index
            self.slices = slices

        def forward(self, fused: Any) -> Any:
            return FusedWithSlices.apply(fused, self.index, self.slices)

    return SelectedExpertSlices


@dataclass
class ExpertSlices:
    """The selected experts of one fused expert tensor, trained as their own parameter."""

    name: str  # layers.<decoder layer>.<fused tensor name>
    module: Any  # the experts module owning the fused tensor
    attr: str  # the fused tensor's attribute name on it
    fused: Any  # the frozen nn.Parameter [E, ...]
    index: Any  # LongTensor [k]: the selected experts
    param: Any  # nn.Parameter [k, ...]: the trainable slices

    def write_back(self) -> None:
        import torch

        with torch.no_grad():
            self.fused.index_copy_(0, self.index, self.param)


class SelectedExperts:
    """Train only the selected experts of `model` (a context manager; attach / detach may repeat).

    attach: freezes every model parameter, reads the selected rows of each fused expert tensor into the
    slices and parametrizes the tensor with them. detach: writes the slices back, removes the
    parametrizations (the fused nn.Parameter objects return unchanged) and restores requires_grad."""

    def __init__(self, model: Any, layout: MoeLayout, mask: BoolArray) -> None:
        import torch

        check_mask(mask, layout)
        self.model = model
        self.slices: list[ExpertSlices] = []
        for layer in layout.layers:
            chosen = np.nonzero(mask[layer.layer_idx])[0]
            if not len(chosen):
                continue
            for attr, fused in layer.expert_params.items():
                index = torch.as_tensor(chosen, dtype=torch.long, device=fused.device)
                param = torch.nn.Parameter(fused.detach().index_select(0, index).clone())
                name = f"layers.{layer.layer_idx}.{attr}"
                self.slices.append(ExpertSlices(name, layer.experts, attr, fused, index, param))
        self._frozen: list[tuple[Any, bool]] = []  # (model parameter, its requires_grad before attach)
        self._attached: list[ExpertSlices] = []

    @property
    def parameters(self) -> list[Any]:
        return [item.param for item in self.slices]

    @property
    def trainable_elements(self) -> int:
        return sum(item.param.numel() for item in self.slices)

    def attach(self) -> None:
        import torch
        from torch.nn.utils import parametrize

        self._frozen = [(param, param.requires_grad) for param in self.model.parameters()]
        for param, _ in self._frozen:
            param.requires_grad_(False)
        slices_of = _slice_parametrization_class()
        for item in self.slices:
            with torch.no_grad():
                item.param.copy_(item.fused.index_select(0, item.index))
            parametrize.register_parametrization(item.module, item.attr, slices_of(item.index, item.param))
            self._attached.append(item)

    def write_back(self) -> None:
        """After an optimizer step: the fused tensors' selected rows take the slices' new values."""
        for item in self._attached:
            item.write_back()

    def detach(self) -> None:
        from torch.nn.utils import parametrize

        self.write_back()
        for item in self._attached:
            parametrize.remove_parametrizations(item.module, item.attr, leave_parametrized=False)
        self._attached = []
        for param, requires_grad in self._frozen:
            param.requires_grad_(requires_grad)
        self._frozen = []

    def __enter__(self) -> SelectedExperts:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of the optimizer's per-parameter state tensors (AdamW: exp_avg, exp_avg_sq; not the step count)."""
    return sum(
        value.nbytes
        for state in optimizer.state.values()
        for value in state.values()
        if getattr(value, "dim", None) and value.dim() > 0
    )


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
    selected = SelectedExperts(model, layout, mask)
    optimizer = torch.optim.AdamW(selected.parameters, lr=params.learning_rate, weight_decay=params.weight_decay)
    total_steps = params.num_epochs * len(sampler)
    if params.max_steps is not None:
        total_steps = min(total_steps, params.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(params, total_steps))
    result = TrainingResult(steps=0, epochs_run=0, trainable_elements=selected.trainable_elements)
    torch.manual_seed(params.seed)
    start = time.perf_counter()
    model.train()
    progress = Progress("moe-steer", total_steps, "steps")
    handles: list[Any] = []
    try:
        if params.mask_router_logits:
            handles = mask_router_logits(layout, mask)
        selected.attach()
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
                loss = masked_step(model, tokenizer, members, selected, optimizer, params, device)
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
        result.optimizer_state_bytes = optimizer_state_bytes(optimizer)
        selected.detach()
        for handle in handles:
            handle.remove()
        model.eval()
    result.seconds = time.perf_counter() - start
    return result


def masked_step(
    model: Any,
    tokenizer: Any,
    members: Sequence[BatchRecord],
    selected: SelectedExperts,
    optimizer: Any,
    params: MoeSteerParams,
    device: Any,
) -> float:
    """One optimizer step on one batch (selected experts attached): loss, gradients of the slices, clipping,
    AdamW (its decoupled weight decay reaches only the slices), slices written into the model."""
    import torch
    from torch.nn.utils import parametrize

    encoded = encode_batch(tokenizer, members, params)
    with parametrize.cached():  # one fused tensor per forward, however often the experts module reads it
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
    if params.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(selected.parameters, params.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    selected.write_back()
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
