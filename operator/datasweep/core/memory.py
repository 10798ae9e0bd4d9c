"""How much GPU memory a training stage needs per GPU, from its base model's config.json alone (no weights).

Pure: parameters are counted from the config's sizes for the architectures the stages train (Llama-style
decoders, OLMoE, Qwen2-MoE, Mixtral, BERT/RoBERTa encoders); the tests check every count against the model
transformers builds on the meta device, and the gradient and optimizer terms against real tensors. The operator
runs the same check without torch.

Per GPU, in bytes (b = bytes per element of the training dtype; every term in that dtype: the stages train
with plain torch AdamW, whose two states take the parameter's dtype, and keep no float32 master copy):
  weights     = parameters x b                       (/ ranks under FSDP)
  gradients   = trainable x b                        (/ ranks under FSDP)
  optimizer   = 2 x trainable x b                    (AdamW exp_avg + exp_avg_sq; / ranks under FSDP)
  extra       = fomaml: 2 x trainable x b (the saved θ and the meta-gradient buffer, trainer.py);
                under FSDP also 2 x the largest decoder layer unsharded (the gathered layer and the prefetched one)
  activations = tokens x per-token bytes, tokens = rows per GPU x max_length (every row padded to max_length: an
                upper bound; real batches pad to their longest row). Per token and layer, the tensors autograd
                keeps: attention 4H + 2·kv (norm input, normed input, q, k, v, output; SDPA keeps no s x s
                scores), dense MLP 2H + 4I (gate, up, activation, product), MoE MLP 2H + E + top_k x (H + 4·I_expert)
                (+ 4·I_shared), encoder MLP 2H + 2I; plus the logits of a causal LM (V x (b + 8): the logits and
                their float32 copy and gradient in the loss). With gradient checkpointing: one H per layer plus one
                layer's full set, recomputed in backward.
The estimate fits a GPU when it is at most its memory less RESERVE_FRACTION and RESERVE_BYTES (CUDA context,
cuBLAS workspaces, allocator fragmentation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasweep.core.plan import Plan, StagePlan

MIB = 1024**2
GIB = 1024**3

# Memory in MiB as nvidia-smi and GPU feature discovery's `nvidia.com/gpu.memory` label give it, keyed by the
# node label `nvidia.com/gpu.product`.
GPU_MEMORY_MIB: dict[str, int] = {
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-H100-PCIe": 81559,
    "NVIDIA-H100-NVL": 95830,
    "NVIDIA-H200": 143771,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-A100-80GB-PCIe": 81920,
    "NVIDIA-A100-SXM4-40GB": 40960,
    "NVIDIA-A100-PCIE-40GB": 40960,
    "NVIDIA-L40S": 46068,
    "NVIDIA-L40": 46068,
    "NVIDIA-L4": 23034,
    "NVIDIA-A10G": 23028,
    "NVIDIA-A10": 23028,
    "Tesla-T4": 15360,
    "Tesla-V100-SXM2-16GB": 16384,
    "Tesla-V100-SXM2-32GB": 32768,
}
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEFAULT_GPU = "NVIDIA-H100-80GB-HBM3"
RESERVE_FRACTION = 0.05
RESERVE_BYTES = 1 * GIB
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# qa trains float32 weights under bfloat16 autocast on a GPU (qa/modeling.py autocast_for)
QA_ACTIVATION_BYTES = 2
MAX_GPUS_PER_NODE = 8

_SUFFIXES = {
    "Ki": 1024,
    "Mi": MIB,
    "Gi": GIB,
    "Ti": 1024**4,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


class UnknownModel(ValueError):
    """A config.json whose architecture this module cannot count."""


def quantity_bytes(value: int | str) -> int:
    """A Kubernetes quantity (80Gi, 40G, 85899345920) in bytes."""
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _SUFFIXES[suffix])
    return int(float(text))


@dataclass(frozen=True)
class ModelShape:
    """A model's parameter counts and the sizes its activations depend on."""

    model_type: str
    parameters: int
    hidden: int
    layers: int
    vocab: int
    kv_dim: int  # key (= value) width per token: kv heads x head dim
    intermediate: int  # dense MLP width (encoders and dense decoders)
    largest_layer: int  # parameters of the largest decoder/encoder layer
    causal_lm: bool = True
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    moe_layers: int = 0
    per_expert: int = 0  # parameters of one expert (gate, up and down projections)

    @property
    def experts(self) -> int:
        return self.num_experts * self.moe_layers


def _get(config: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = config.get(name, default)
    return default if value is None else value


def _decoder_shape(config: Mapping[str, Any]) -> ModelShape:
    kind = str(config.get("model_type"))
    h, n_layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(_get(config, "num_key_value_heads", heads))
    head_dim = int(_get(config, "head_dim", h // heads))
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h
    if kind in ("qwen2", "qwen2_moe"):
        attention += q_dim + 2 * kv_dim  # q, k and v carry a bias
    elif config.get("attention_bias"):
        attention += q_dim + 2 * kv_dim + h
    if kind == "olmoe":
        attention += q_dim + kv_dim  # q_norm, k_norm over the projections
    elif kind == "qwen3":
        attention += 2 * head_dim
    intermediate = int(config["intermediate_size"])
    dense_mlp = 3 * h * intermediate + (2 * intermediate + h if config.get("mlp_bias") else 0)
    experts, top_k, expert_width, shared_width = 0, 0, 0, 0
    sparse = [False] * n_layers
    if kind == "olmoe":
        experts, top_k, expert_width = int(config["num_experts"]), int(config["num_experts_per_tok"]), intermediate
        sparse = [True] * n_layers
    elif kind == "mixtral":
        experts, top_k = int(config["num_local_experts"]), int(config["num_experts_per_tok"])
        expert_width, sparse = intermediate, [True] * n_layers
    elif kind == "qwen2_moe":
        experts, top_k = int(config["num_experts"]), int(config["num_experts_per_tok"])
        expert_width = int(config["moe_intermediate_size"])
        shared_width = int(_get(config, "shared_expert_intermediate_size", 0))
        step, dense_only = int(_get(config, "decoder_sparse_step", 1)), set(_get(config, "mlp_only_layers", []))
        sparse = [i not in dense_only and experts > 0 and (i + 1) % step == 0 for i in range(n_layers)]
    per_expert = 3 * h * expert_width
    moe_mlp = experts * h + experts * per_expert + (3 * h * shared_width + h if shared_width else 0)
    layer_sizes = [attention + 2 * h + (moe_mlp if s else dense_mlp) for s in sparse]
    tied = bool(_get(config, "tie_word_embeddings", False))
    total = vocab * h * (1 if tied else 2) + sum(layer_sizes) + h
    return ModelShape(
        model_type=kind,
        parameters=total,
        hidden=h,
        layers=n_layers,
        vocab=vocab,
        kv_dim=kv_dim,
        intermediate=intermediate,
        largest_layer=max(layer_sizes),
        num_experts=experts,
        experts_per_token=top_k,
        expert_intermediate=expert_width,
        shared_intermediate=shared_width,
        moe_layers=sum(sparse),
        per_expert=per_expert if experts else 0,
    )


def _encoder_shape(config: Mapping[str, Any]) -> ModelShape:
    """BERT-family encoders with a question-answering head (start/end logits), no pooler."""
    h, n_layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
    intermediate = int(config["intermediate_size"])
    positions, types = int(config["max_position_embeddings"]), int(_get(config, "type_vocab_size", 2))
    embeddings = (vocab + positions + types) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * intermediate + intermediate) + (intermediate * h + h) + 2 * h
    return ModelShape(
        model_type=str(config.get("model_type")),
        parameters=embeddings + n_layers * layer + 2 * h + 2,
        hidden=h,
        layers=n_layers,
        vocab=vocab,
        kv_dim=h,
        intermediate=intermediate,
        largest_layer=layer,
        causal_lm=False,
    )


_SHAPES: dict[str, Callable[[Mapping[str, Any]], ModelShape]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "olmoe", "qwen2_moe", "mixtral"), _decoder_shape),
    **dict.fromkeys(("bert", "roberta", "xlm-roberta"), _encoder_shape),
}


def model_shape(config: Mapping[str, Any]) -> ModelShape:
    kind = config.get("model_type")
    if kind not in _SHAPES:
        raise UnknownModel(f"model_type {kind!r} (known: {', '.join(sorted(_SHAPES))})")
    try:
        return _SHAPES[str(kind)](config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise UnknownModel(f"model_type {kind!r}: config.json lacks or mistypes {exc}") from exc


def read_model_config(directory: Path) -> dict[str, Any] | None:
    """The model directory's config.json, or None when there is none (the worker then finds out)."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise UnknownModel(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise UnknownModel(f"{path}: not a JSON object")
    return config


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int  # bytes
    why: str  # where the figure comes from (the assumption, when nothing was said)

    @property
    def usable(self) -> int:
        return int(self.memory * (1 - RESERVE_FRACTION)) - RESERVE_BYTES


def gpu_for(gpu_memory: int | str | None, product: str | None) -> Gpu:
    """resources.gpuMemory when set, else the GPU product of the Jobs' node selector, else DEFAULT_GPU."""
    if gpu_memory is not None:
        return Gpu(f"{gpu_memory}", quantity_bytes(gpu_memory), "resources.gpuMemory")
    if product and product in GPU_MEMORY_MIB:
        return Gpu(product, GPU_MEMORY_MIB[product] * MIB, f"node selector {GPU_PRODUCT_LABEL}")
    why = f"assumed: {GPU_PRODUCT_LABEL} {product!r} is not in the table" if product else "assumed"
    why += "; set resources.gpuMemory to compare with another GPU"
    return Gpu(DEFAULT_GPU, GPU_MEMORY_MIB[DEFAULT_GPU] * MIB, why)


@dataclass(frozen=True)
class MemoryEstimate:
    kind: str
    gpus: int  # ranks the stage runs on (gpus x nodes)
    parameters: int
    trainable: int
    weights: int  # bytes per GPU, as every term below
    gradients: int
    optimizer: int
    extra: int
    activations: int
    activations_checkpointed: int
    checkpointing: bool
    tokens: int  # tokens per forward pass on one GPU
    gpu: Gpu

    @property
    def total(self) -> int:
        activations = self.activations_checkpointed if self.checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + self.extra + activations

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu.usable

    def cell(self) -> str:
        """plan's MEMORY column: estimate per GPU / GPU memory."""
        return f"{self.total / GIB:.1f}/{self.gpu.memory / GIB:.0f} GiB" + ("" if self.fits else " TOO BIG")

    def terms(self) -> str:
        activations = self.activations_checkpointed if self.checkpointing else self.activations
        parts = [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
            (_EXTRA_TERM.get(self.kind, "other"), self.extra),
            (f"activations of {self.tokens:,} tokens", activations),
        ]
        return " + ".join(f"{name} {gib(value)}" for name, value in parts if value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytesPerGpu": self.total,
            "gpuMemoryBytes": self.gpu.memory,
            "usableBytes": self.gpu.usable,
            "gpu": self.gpu.name,
            "gpuFrom": self.gpu.why,
            "fits": self.fits,
            "gpus": self.gpus,
            "parameters": self.parameters,
            "trainable": self.trainable,
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "extra": self.extra,
            "activations": self.activations,
            "activationsCheckpointed": self.activations_checkpointed,
            "gradientCheckpointing": self.checkpointing,
        }


_EXTRA_TERM = {"fomaml": "θ copy + meta-gradient", "moe-steer": "one fused expert gradient (transient)"}


def gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def _layer_activation_elements(shape: ModelShape) -> int:
    """Elements autograd keeps per token in one layer (see the module's docstring)."""
    h = shape.hidden
    attention = 4 * h + 2 * shape.kv_dim
    if not shape.causal_lm:
        return attention + 2 * h + 2 * shape.intermediate
    if shape.moe_layers:
        routed = shape.experts_per_token * (h + 4 * shape.expert_intermediate)
        mlp = 2 * h + shape.num_experts + routed + 4 * shape.shared_intermediate
    else:
        mlp = 2 * h + 4 * shape.intermediate
    return attention + mlp


def activation_bytes(shape: ModelShape, tokens: int, element_bytes: int) -> tuple[int, int]:
    """(without, with gradient checkpointing) for `tokens` tokens on one GPU."""
    layer = _layer_activation_elements(shape) * element_bytes
    head = shape.vocab * (element_bytes + 8) if shape.causal_lm else 2 * 4
    full = tokens * (shape.layers * layer + head)
    checkpointed = tokens * (shape.layers * shape.hidden * element_bytes + layer + head)
    return full, checkpointed


def _int(params: Mapping[str, Any], name: str) -> int:
    return int(params[name])


def estimate_memory(
    kind: str, params: Mapping[str, Any], gpus: int, nodes: int, shape: ModelShape, gpu: Gpu
) -> MemoryEstimate:
    """Per-GPU bytes of a training stage of `kind` with its effective `params` (defaults filled in)."""
    ranks = max(1, gpus) * max(1, nodes)
    extra_copies, shard, checkpointing, transient = 0, 1, False, 0
    if kind == "fomaml":
        element = DTYPE_BYTES[str(params["dtype"])]
        activation_element = element
        trainable = shape.parameters
        shard = ranks if params.get("use_fsdp") and ranks > 1 else 1
        rows = max(_int(params, "inner_batch_size"), _int(params, "query_batch_size"))
        rows = math.ceil(rows / shard)
        extra_copies = 2
        checkpointing = bool(params.get("enable_gradient_checkpointing"))
    elif kind == "moe-steer":
        element = DTYPE_BYTES[str(params["torch_dtype"])]
        activation_element = element
        top_n = params.get("top_n")
        selected = shape.experts if top_n is None else min(int(top_n), shape.experts)
        trainable = selected * shape.per_expert
        rows = _int(params, "batch_size")
        # backward still builds the gradient of a whole fused gate_up tensor of a layer with a selected expert
        # (transformers' expert code), one layer at a time, before only the selected rows are kept
        transient = shape.num_experts * 2 * shape.expert_intermediate * shape.hidden * element if selected else 0
    elif kind == "qa":
        element, activation_element = 4, QA_ACTIVATION_BYTES
        trainable = shape.parameters
        rows = _int(params, "per_device_batch_size")
    else:
        raise ValueError(f"no memory estimate for stage kind {kind!r}")
    tokens = rows * _int(params, "max_length")
    full, checkpointed = activation_bytes(shape, tokens, activation_element)
    gathered = 2 * shape.largest_layer * element if shard > 1 else 0
    return MemoryEstimate(
        kind=kind,
        gpus=ranks,
        parameters=shape.parameters,
        trainable=trainable,
        weights=math.ceil(shape.parameters / shard) * element,
        gradients=math.ceil(trainable / shard) * element,
        optimizer=2 * math.ceil(trainable / shard) * element,
        extra=extra_copies * math.ceil(trainable / shard) * element + gathered + transient,
        activations=full,
        activations_checkpointed=checkpointed,
        checkpointing=checkpointing,
        tokens=tokens,
        gpu=gpu,
    )


@dataclass(frozen=True)
class Change:
    """One change to a stage that makes it smaller: where it goes in the spec, and the estimate after it."""

    field: str
    value: Any
    estimate: MemoryEstimate

    def describe(self) -> str:
        fits = "fits" if self.estimate.fits else "still too big"
        value = "" if self.field.startswith("together") else f": {json.dumps(self.value)}"
        return f"{self.field}{value} -> {gib(self.estimate.total)} ({fits})"


def _halved(params: Mapping[str, Any], name: str, floor: int) -> int | None:
    value = int(params[name])
    return max(floor, value // 2) if value > floor else None


def smaller_alternatives(
    kind: str, params: Mapping[str, Any], gpus: int, nodes: int, shape: ModelShape, gpu: Gpu
) -> list[Change]:
    """Each single change that lowers the estimate (batch size, max_length, checkpointing, dtype, top_n, GPUs),
    smallest first; when none fits alone, the params changes together, as many as it takes, as one more."""
    candidates: list[tuple[str, Any, dict[str, Any]]] = []  # (field, value, params it changes)

    def param(name: str, value: Any) -> None:
        if value is not None and value != params.get(name):
            candidates.append((f"params.{name}", value, {name: value}))

    more_gpus: Change | None = None
    if kind == "fomaml":
        param("enable_gradient_checkpointing", True)
        if params["dtype"] in ("float32", "float64"):
            param("dtype", "bfloat16")
        inner, query = _halved(params, "inner_batch_size", 1), _halved(params, "query_batch_size", 1)
        if inner is not None and query is not None:  # the larger of the two sets the activations
            both = {"inner_batch_size": inner, "query_batch_size": query}
            candidates.append(("params.inner_batch_size and query_batch_size", inner, both))
        param("max_length", _halved(params, "max_length", 8))
        world = max(1, gpus) * max(1, nodes)
        for ranks in (2, 4, 8, 16, 32, 64):
            if ranks > world:
                per_node = min(ranks, MAX_GPUS_PER_NODE)
                sharded = estimate_memory(kind, {**params, "use_fsdp": True}, per_node, ranks // per_node, shape, gpu)
                if sharded.fits or ranks == 64:
                    field = f"resources.gpus {per_node}, nodes {ranks // per_node} with params.use_fsdp"
                    if int(params["inner_batch_size"]) % ranks or int(params["query_batch_size"]) % ranks:
                        field += f" (FSDP splits rows: inner_batch_size and query_batch_size multiples of {ranks})"
                    more_gpus = Change(field, True, sharded)
                    break
    elif kind == "moe-steer":
        param("batch_size", _halved(params, "batch_size", 2) if int(params["batch_size"]) % 4 == 0 else None)
        param("max_length", _halved(params, "max_length", 4))
        if params["torch_dtype"] == "float32":
            param("torch_dtype", "bfloat16")
        top_n = params.get("top_n")
        param("top_n", max(1, int(top_n) // 2) if top_n and int(top_n) > 1 else None)
    elif kind == "qa":
        param("per_device_batch_size", _halved(params, "per_device_batch_size", 1))
        param("max_length", _halved(params, "max_length", 16))
    before = estimate_memory(kind, params, gpus, nodes, shape, gpu).total
    changes = [
        Change(field, value, estimate_memory(kind, {**params, **delta}, gpus, nodes, shape, gpu))
        for field, value, delta in candidates
    ]
    changes = sorted((c for c in changes if c.estimate.total < before), key=lambda c: c.estimate.total)
    if changes and not any(c.estimate.fits for c in changes):
        deltas = {c.field: delta for c in changes for field, _, delta in candidates if field == c.field}
        together: dict[str, Any] = {}
        for change in changes:
            together.update(deltas[change.field])
            after = estimate_memory(kind, {**params, **together}, gpus, nodes, shape, gpu)
            if after.fits:
                fields = ", ".join(f"params.{name} {json.dumps(value)}" for name, value in together.items())
                changes.append(Change(f"together ({fields})", len(together), after))
                break
    if more_gpus is not None:
        changes.append(more_gpus)
    return changes


def refusal(where: str, kind: str, estimate: MemoryEstimate, changes: list[Change]) -> str:
    """Why a stage cannot fit its GPU, with each change that helps and its estimate."""
    message = (
        f"{where} ({kind}) needs about {gib(estimate.total)} per GPU ({estimate.terms()}) but "
        f"{estimate.gpu.name} has {gib(estimate.gpu.memory)} ({estimate.gpu.why}; at most {gib(estimate.gpu.usable)} "
        "usable after the CUDA context and allocator reserve)"
    )
    if changes:
        message += "; change " + "; or ".join(c.describe() for c in changes)
    if estimate.kind == "qa" and any(c.field == "params.per_device_batch_size" for c in changes):
        message += " (raise params.grad_accum_steps to keep the effective batch)"
    return message + "; or give resources.gpuMemory of a larger GPU"


@dataclass(frozen=True)
class StageMemory:
    """plan's view of one training stage: its estimate, or why there is none."""

    estimate: MemoryEstimate | None
    note: str = ""  # why there is no estimate
    problem: str | None = None  # the refusal, when it cannot fit

    def cell(self) -> str:
        return self.estimate.cell() if self.estimate is not None else (self.note or "-")


def stage_memory(
    where: str,
    kind: str,
    params: Mapping[str, Any],
    gpus: int,
    nodes: int,
    gpu_memory: int | str | None,
    config: Mapping[str, Any] | None,
    gpu_product: str | None = None,
) -> StageMemory:
    """The estimate of one stage against its GPU, and the refusal when it cannot fit; no config: no estimate."""
    if config is None:
        return StageMemory(None, "no config.json")
    try:
        shape = model_shape(config)
    except UnknownModel as exc:
        return StageMemory(None, f"unknown model: {exc}")
    gpu = gpu_for(gpu_memory, gpu_product)
    estimate = estimate_memory(kind, params, gpus, nodes, shape, gpu)
    if estimate.fits:
        return StageMemory(estimate)
    changes = smaller_alternatives(kind, params, gpus, nodes, shape, gpu)
    return StageMemory(estimate, problem=refusal(where, kind, estimate, changes))


def plan_memory(
    plan: Plan, config_of: Callable[[StagePlan], Mapping[str, Any] | None], gpu_product: str | None = None
) -> tuple[dict[str, StageMemory], list[str]]:
    """Every training stage's memory (by Artifact name) and the refusals, one per training entry and change.

    `config_of` reads a stage's base model config.json (None: not visible here, no estimate).
    """
    configs: dict[str, Mapping[str, Any] | None] = {}
    memories: dict[str, StageMemory] = {}
    problems: dict[str, None] = {}
    for point in plan.points:
        for stage in point.training:
            key = str(stage.base_model)
            if key not in configs:
                configs[key] = config_of(stage)
            where = f"spec.training[{stage.training_index}] {stage.name}"
            resources = stage.resources
            memory = stage_memory(
                where,
                stage.stage,
                stage.params,
                resources.gpus,
                resources.nodes,
                resources.gpu_memory,
                configs[key],
                gpu_product,
            )
            memories[stage.artifact] = memory
            if memory.problem is not None:
                problems[memory.problem] = None
    return memories, list(problems)
