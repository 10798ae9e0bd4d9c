"""The memory plan of training stages: parameter counts from config.json against the models transformers builds
(meta device, real sizes), and the weight, gradient and optimizer terms against real tensors on tiny models."""

from __future__ import annotations

from typing import Any

import pytest

from datasweep.api.stage_params import params_model
from datasweep.core.memory import (
    DEFAULT_GPU,
    GIB,
    GPU_MEMORY_MIB,
    MIB,
    UnknownModel,
    estimate_memory,
    gpu_for,
    model_shape,
    quantity_bytes,
    stage_memory,
)
from datasweep.testing.real_configs import OLMOE_1B_7B, REAL_CONFIGS
from datasweep.testing.real_configs import TINY_CONFIGS as TINY

torch = pytest.importorskip("torch")
meta_model = pytest.importorskip("datasweep.workloads.meta_model")

H100 = gpu_for(None, None)


def defaults(kind: str, **changes: Any) -> dict[str, Any]:
    return params_model(kind)().model_dump(mode="json") | changes


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_parameter_counts_of_real_configs_match_the_model_built_on_the_meta_device(name: str) -> None:
    config = REAL_CONFIGS[name]
    model = meta_model.build(config)
    shape = model_shape(config)
    assert shape.parameters == meta_model.parameter_count(model)
    assert shape.per_expert == meta_model.per_expert_count(model)
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in _layers(model))
    assert shape.largest_layer == largest


def _layers(model: Any) -> list[Any]:
    inner = getattr(model, "model", None) or getattr(model, "roberta", None) or model.base_model
    return list(inner.layers if hasattr(inner, "layers") else inner.encoder.layer)


def test_published_sizes() -> None:
    billions = {name: model_shape(config).parameters / 1e9 for name, config in REAL_CONFIGS.items()}
    assert round(billions["Llama-3.2-1B"], 2) == 1.24
    assert round(billions["Llama-3.1-8B"], 2) == 8.03
    assert round(billions["OLMoE-1B-7B"], 2) == 6.92
    assert round(billions["Qwen1.5-MoE-A2.7B"], 1) == 14.3
    olmoe = model_shape(OLMOE_1B_7B)
    assert (olmoe.per_expert, olmoe.experts) == (3 * 2048 * 1024, 64 * 16)


def _one_adamw_step(model: Any, trainable: list[Any], encoder: bool) -> Any:
    ids = torch.randint(3, 90, (2, 12))
    if encoder:
        out = model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    else:
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    optimizer.step()
    return optimizer


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _optimizer_state_bytes(optimizer: Any) -> int:
    # `step` is a 0-d float32 tensor on the CPU (torch's default, not capturable): no GPU memory
    return sum(_bytes(v for k, v in state.items() if k != "step") for state in optimizer.state.values())


FULL_FINE_TUNES = [("llama", "fomaml", "float32"), ("llama", "fomaml", "bfloat16"), ("roberta", "qa", "float32"),
                   ("bert", "qa", "float32")]  # fmt: skip


@pytest.mark.parametrize(("name", "kind", "dtype"), FULL_FINE_TUNES)
def test_full_fine_tune_terms_are_the_real_tensors_after_one_adamw_step(name: str, kind: str, dtype: str) -> None:
    config = TINY[name]
    torch.manual_seed(0)
    model = meta_model.build(config, device="cpu", dtype=getattr(torch, dtype))
    trainable = list(model.parameters())
    optimizer = _one_adamw_step(model, trainable, kind == "qa")
    params = defaults(kind, dtype=dtype) if kind == "fomaml" else defaults(kind)
    estimate = estimate_memory(kind, params, 1, 1, model_shape(config), H100)
    assert estimate.parameters == estimate.trainable == meta_model.parameter_count(model)
    assert estimate.weights == _bytes(model.parameters())
    assert estimate.gradients == _bytes(p.grad for p in trainable)
    assert estimate.optimizer == _optimizer_state_bytes(optimizer)
    if kind == "fomaml":  # θ saved once per step and the meta-gradient buffer, both parameter-shaped
        assert estimate.extra == 2 * _bytes(model.parameters())


@pytest.mark.parametrize("name", ["olmoe", "qwen2_moe"])
def test_moe_steer_trains_only_the_selected_expert_slices(name: str) -> None:
    from datasweep.workloads.moe_steer.experts import discover_moe_layout

    config = TINY[name]
    model = meta_model.build(config, device="cpu")
    layout = discover_moe_layout(model)
    shape = model_shape(config)
    assert shape.parameters == meta_model.parameter_count(model)
    assert shape.moe_layers == len(layout.layers)
    assert shape.num_experts == layout.num_experts
    # three experts selected in two layers: each one's slices of the fused tensors
    chosen = [(layout.layers[0], 0), (layout.layers[0], 5), (layout.layers[-1], 3)]
    slices = [param[e] for layer, e in chosen for param in layer.expert_params.values()]
    # the planned implementation: the selected slices held as their own parameters, trained by AdamW
    own = [torch.nn.Parameter(s.detach().clone()) for s in slices]
    sum(p.square().sum() for p in own).backward()
    optimizer = torch.optim.AdamW(own, lr=1e-3)
    optimizer.step()
    estimate = estimate_memory("moe-steer", defaults("moe-steer", top_n=3), 1, 1, shape, H100)
    assert estimate.trainable == sum(s.numel() for s in slices)
    assert estimate.weights == _bytes(model.parameters())
    assert estimate.gradients == _bytes(p.grad for p in own)
    assert estimate.optimizer == _optimizer_state_bytes(optimizer)
    everything = estimate_memory("moe-steer", defaults("moe-steer", top_n=None, threshold=0.1), 1, 1, shape, H100)
    assert everything.trainable == sum(p.numel() for layer in layout.layers for p in layer.expert_params.values())


def test_fsdp_shards_weights_gradients_and_optimizer_over_every_rank() -> None:
    shape = model_shape(REAL_CONFIGS["Llama-3.1-8B"])
    params = defaults("fomaml", use_fsdp=True, inner_batch_size=8, query_batch_size=8)
    one = estimate_memory("fomaml", params, 1, 1, shape, H100)
    eight = estimate_memory("fomaml", params, 4, 2, shape, H100)
    assert eight.gpus == 8
    assert eight.weights == -(-shape.parameters // 8) * 4
    assert eight.optimizer == 2 * eight.gradients == 2 * eight.weights
    assert eight.extra == 2 * eight.weights + 2 * shape.largest_layer * 4  # θ, meta-gradient, gathered layers
    assert eight.tokens == one.tokens // 8  # FSDP splits each batch's rows over the ranks
    replicas = estimate_memory("fomaml", {**params, "use_fsdp": False}, 4, 2, shape, H100)
    assert replicas.weights == one.weights
    assert replicas.tokens == one.tokens


def test_gradient_checkpointing_keeps_one_hidden_state_per_layer() -> None:
    shape = model_shape(REAL_CONFIGS["Llama-3.2-1B"])
    plain = estimate_memory("fomaml", defaults("fomaml"), 1, 1, shape, H100)
    checked = estimate_memory("fomaml", defaults("fomaml", enable_gradient_checkpointing=True), 1, 1, shape, H100)
    assert checked.total < plain.total
    assert checked.total - checked.activations_checkpointed == plain.total - plain.activations
    assert plain.activations_checkpointed == checked.activations_checkpointed
    longer = estimate_memory("fomaml", defaults("fomaml", max_length=4096), 1, 1, shape, H100)
    assert longer.activations == 2 * plain.activations


def test_olmoe_moe_steer_top_10_fits_an_h100_and_names_its_terms() -> None:
    memory = stage_memory("spec.training[0] steer", "moe-steer", defaults("moe-steer", torch_dtype="bfloat16"), 1, 1,
                          None, OLMOE_1B_7B)  # fmt: skip
    assert memory.estimate is not None
    assert memory.problem is None
    assert memory.estimate.trainable == 10 * 3 * 2048 * 1024
    assert memory.estimate.total < 40 * 10**9
    assert memory.cell().endswith("/80 GiB")


def test_a_stage_that_cannot_fit_is_refused_naming_each_change_with_its_estimate() -> None:
    params = defaults("moe-steer", batch_size=64, max_length=1024)
    memory = stage_memory("spec.training[0] steer", "moe-steer", params, 1, 1, None, OLMOE_1B_7B)
    assert memory.estimate is not None
    assert not memory.estimate.fits
    assert memory.problem is not None
    assert "spec.training[0] steer (moe-steer) needs about" in memory.problem
    assert f"{DEFAULT_GPU} has 79.6 GiB (assumed" in memory.problem
    for change in ("params.batch_size: 32 ->", "params.max_length: 512 ->", 'params.torch_dtype: "bfloat16" ->'):
        assert change in memory.problem
    assert "resources.gpuMemory" in memory.problem
    llama = REAL_CONFIGS["Llama-3.1-8B"]
    fomaml = stage_memory("spec.training[1] meta", "fomaml", defaults("fomaml"), 1, 1, None, llama)
    assert fomaml.problem is not None
    assert "params.enable_gradient_checkpointing: true ->" in fomaml.problem
    assert "with params.use_fsdp" in fomaml.problem


def test_the_gpu_compared_with() -> None:
    assert gpu_for("40Gi", "NVIDIA-H100-80GB-HBM3").memory == 40 * GIB
    a100 = gpu_for(None, "NVIDIA-A100-SXM4-40GB")
    assert (a100.memory, a100.why) == (40960 * MIB, "node selector nvidia.com/gpu.product")
    unknown = gpu_for(None, "Some-GPU")
    assert unknown.name == DEFAULT_GPU
    assert "'Some-GPU' is not in the table" in unknown.why
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", "Tesla-T4", "NVIDIA-H200"} <= set(
        GPU_MEMORY_MIB
    )
    assert quantity_bytes("80G") == 80 * 10**9
    assert quantity_bytes(1024) == 1024


def test_no_config_or_an_unknown_architecture_gives_no_estimate_and_no_refusal() -> None:
    assert stage_memory("w", "qa", defaults("qa"), 1, 1, None, None).cell() == "no config.json"
    unknown = stage_memory("w", "qa", defaults("qa"), 1, 1, None, {"model_type": "gpt2"})
    assert unknown.estimate is None
    assert unknown.problem is None
    assert "gpt2" in unknown.cell()
    with pytest.raises(UnknownModel, match="lacks"):
        model_shape({"model_type": "llama"})
