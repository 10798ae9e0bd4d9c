"""Expert-only training: chosen expert slices change, every other weight is bit-identical; batches replayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.workloads.moe_steer import training
from datasweep.workloads.moe_steer.analysis import build_expert_mask
from datasweep.workloads.moe_steer.data import BatchRecord, build_batches, load_prompts
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.moe_steer.experts import discover_moe_layout, expert_parameter_count
from datasweep.workloads.moe_steer.stage import load_model
from datasweep.workloads.moe_steer.training import save_model, train_experts

TRAIN = {"batch_size": 4, "max_batches": 3, "num_epochs": 2, "learning_rate": 5e-2, "weight_decay": 0.5}


def _setup(model_dir: Path, data: Path, **overrides: Any) -> tuple[Any, ...]:
    params = MoeSteerParams(device="cpu", **{**TRAIN, **overrides})
    prompts, _ = load_prompts(params, data=data)
    batches = build_batches(prompts, params)
    model, tokenizer, layout, _ = load_model(model_dir, params)
    return params, batches, model, tokenizer, layout


def _expert_param_names(model: Any, layout: Any) -> dict[str, tuple[int, Any]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (layer.layer_idx, p) for layer in layout.layers for p in layer.expert_params.values()}


def _check_only_selected_changed(before: dict[str, torch.Tensor], model: Any, layout: Any, mask: np.ndarray) -> int:
    experts = _expert_param_names(model, layout)
    changed_slices = 0
    for name, after in model.state_dict().items():
        if name not in experts:
            assert torch.equal(before[name], after), f"{name} changed but is frozen"
            continue
        layer_idx = experts[name][0]
        for expert in range(mask.shape[1]):
            if mask[layer_idx, expert]:
                assert not torch.equal(before[name][expert], after[expert]), f"{name}[{expert}] did not train"
                changed_slices += 1
            else:
                assert torch.equal(before[name][expert], after[expert]), f"{name}[{expert}] is frozen but changed"
    return changed_slices


def test_only_the_chosen_expert_slices_change(tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path) -> None:
    params, batches, model, tokenizer, layout = _setup(tiny_olmoe, paired_artifact)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, [(0, 3), (0, 5), (1, 0)])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = train_experts(model, tokenizer, layout, batches, mask, params)
    assert result.steps == 6
    assert len(result.losses) == 6
    assert all(np.isfinite(result.losses))
    assert result.trainable_elements == 3 * (64 * 32 + 32 * 32)
    assert _check_only_selected_changed(before, model, layout, mask) == 3 * 2
    # afterwards the model is a plain model again: its own parameters, as trainable as it was loaded
    assert {n for n, _ in model.named_parameters()} == set(before)
    assert all(p.requires_grad for p in model.parameters())

    # and the saved model holds exactly these weights
    save_model(model, tokenizer, tmp_path / "final_model")
    reloaded, _, _, _ = load_model(tmp_path / "final_model", params)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


@pytest.mark.parametrize(
    "chosen",
    [[(0, 3)], [(0, 3), (0, 5)], [(0, 3), (1, 0)], [(0, 1), (0, 3), (0, 5), (1, 0), (1, 7)]],
    ids=["one", "two-in-one-layer", "two-in-two-layers", "five"],
)
def test_trainable_parameters_gradients_and_adamw_state_are_the_selected_experts_only(
    chosen: list[tuple[int, int]], tiny_olmoe: Path, paired_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: memory grows with the selected experts, not with the layers they sit in (measured, per step)."""
    params, batches, model, tokenizer, layout = _setup(tiny_olmoe, paired_artifact, max_steps=2)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, chosen)
    per_expert = expert_parameter_count(model.config)
    assert per_expert == 3 * 32 * 32 == sum(p[0].numel() for p in layout.layers[0].expert_params.values())
    expected = len(chosen) * per_expert
    seen: list[dict[str, int]] = []
    real_step = training.masked_step

    def measuring_step(model: Any, tokenizer: Any, members: Any, selected: Any, optimizer: Any, *rest: Any) -> float:
        def at_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
            seen.append(
                {
                    "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "gradients": sum(p.grad.nbytes for p in model.parameters() if p.grad is not None),
                }
            )

        handle = optimizer.register_step_pre_hook(at_step)
        try:
            loss = real_step(model, tokenizer, members, selected, optimizer, *rest)
        finally:
            handle.remove()
        seen[-1]["adamw"] = training.optimizer_state_bytes(optimizer)
        return loss

    monkeypatch.setattr(training, "masked_step", measuring_step)
    result = train_experts(model, tokenizer, layout, batches, mask, params)
    assert len(seen) == 2
    for step in seen:
        assert step == {"trainable": expected, "gradients": 4 * expected, "adamw": 2 * 4 * expected}, step
    assert result.trainable_elements == expected
    assert result.optimizer_state_bytes == 2 * 4 * expected


def test_expert_parameter_count_from_the_config_alone(tiny_qwen_moe: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(tiny_qwen_moe))
    layout = discover_moe_layout(AutoModelForCausalLM.from_pretrained(str(tiny_qwen_moe)))
    # Qwen2-MoE: the experts use moe_intermediate_size (16), not the dense MLP's intermediate_size (48)
    assert expert_parameter_count(config) == 3 * 32 * 16
    assert expert_parameter_count(config) == sum(p[0].numel() for p in layout.layers[0].expert_params.values())
    # OLMoE-1B-7B's config.json values, as a dict: 10 experts are the 63 M parameters issue 24 names
    assert expert_parameter_count({"hidden_size": 2048, "intermediate_size": 1024}) * 10 == 62_914_560
    with pytest.raises(MoeSteerInputError, match="hidden_size"):
        expert_parameter_count({"model_type": "olmoe"})


@pytest.mark.parametrize("experts_implementation", ["grouped_mm", "eager"])
def test_slice_gradients_equal_the_full_models_gradients(
    experts_implementation: str, tiny_qwen_moe: Path, paired_artifact: Path
) -> None:
    """The slices see the model unchanged (same loss) and get exactly the rows of the fused tensors' gradient,
    with either of transformers' expert forwards (one fused-tensor matmul, or a loop indexing each expert)."""
    from torch.nn.utils import parametrize

    from datasweep.workloads.moe_steer.encoding import encode_batch

    params, batches, model, tokenizer, layout = _setup(tiny_qwen_moe, paired_artifact)
    model.set_experts_implementation(experts_implementation)
    assert model.config._experts_implementation == experts_implementation
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, [(0, 4), (0, 1), (1, 0)])
    encoded = encode_batch(tokenizer, batches[0], params)

    def loss() -> torch.Tensor:
        out = model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, labels=encoded.labels)
        return out.loss  # type: ignore[no-any-return]

    reference = loss()
    reference.backward()
    full = {id(p): p.grad.clone() for layer in layout.layers for p in layer.expert_params.values()}
    model.zero_grad(set_to_none=True)
    with training.SelectedExperts(model, layout, mask) as selected:
        with parametrize.cached():
            sliced = loss()
        sliced.backward()
        assert torch.equal(sliced, reference)
        assert len(selected.slices) == 2 * 2  # two fused tensors in each of the two layers
        for item in selected.slices:
            torch.testing.assert_close(item.param.grad, full[id(item.fused)][item.index], rtol=1e-6, atol=1e-9)
        assert all(p.grad is None for layer in layout.layers for p in layer.expert_params.values())


def test_training_replays_the_analysis_batches(
    tiny_olmoe: Path, paired_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, batches, model, tokenizer, layout = _setup(tiny_olmoe, paired_artifact, shuffle_batches=True, num_epochs=3)
    seen: list[list[BatchRecord]] = []
    real_step = training.masked_step

    def spy(model: Any, tokenizer: Any, members: list[BatchRecord], *args: Any) -> float:
        seen.append(list(members))
        return real_step(model, tokenizer, members, *args)

    monkeypatch.setattr(training, "masked_step", spy)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, [(1, 1)])
    result = train_experts(model, tokenizer, layout, batches, mask, params)
    assert len(seen) == 9
    for epoch in range(3):
        replay = seen[epoch * 3 : (epoch + 1) * 3]
        assert sorted(replay, key=lambda b: b[0].batch_idx) == batches
    assert [sorted(order) for order in result.batch_order] == [[0, 1, 2]] * 3


def test_max_steps_and_linear_schedule(tiny_olmoe: Path, paired_artifact: Path) -> None:
    params, batches, model, tokenizer, layout = _setup(tiny_olmoe, paired_artifact, max_steps=4, warmup_ratio=0.5)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, [(0, 0)])
    result = train_experts(model, tokenizer, layout, batches, mask, params)
    assert result.steps == 4
    assert result.epochs_run == 2
    factor = training._lr_lambda(params, 4)
    assert [factor(s) for s in range(4)] == [0.5, 1.0, 1.0, 0.5]


def test_qwen2_moe_shared_expert_router_and_dense_layer_stay_frozen(tiny_qwen_moe: Path, paired_artifact: Path) -> None:
    params, batches, model, tokenizer, layout = _setup(tiny_qwen_moe, paired_artifact, num_epochs=1)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, [(0, 2), (1, 4)])
    assert not mask[0].any()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_experts(model, tokenizer, layout, batches, mask, params)
    assert _check_only_selected_changed(before, model, layout, mask) == 4
    shared = [n for n in before if "shared_expert" in n]
    assert shared
    assert all(torch.equal(before[n], model.state_dict()[n]) for n in shared)


def test_bad_masks_are_rejected(tiny_olmoe: Path, paired_artifact: Path) -> None:
    params, batches, model, tokenizer, layout = _setup(tiny_olmoe, paired_artifact)
    empty = np.zeros((layout.num_layers, layout.num_experts), dtype=bool)
    with pytest.raises(MoeSteerInputError, match="no expert is selected"):
        train_experts(model, tokenizer, layout, batches, empty, params)
    with pytest.raises(MoeSteerInputError, match="made for another model"):
        train_experts(model, tokenizer, layout, batches, np.ones((3, 8), dtype=bool), params)


@pytest.mark.parametrize(
    ("model_fixture", "chosen"),
    [("tiny_olmoe", [(0, 3), (0, 5), (1, 0)]), ("tiny_qwen_moe", [(0, 2), (1, 4), (1, 1)])],
)
def test_router_logit_masking_routes_among_the_chosen_experts(
    model_fixture: str, chosen: list[tuple[int, int]], paired_artifact: Path, request: pytest.FixtureRequest
) -> None:
    """Seed 004's ExpertMaskingTrainer (issue 15): with mask_router_logits, tokens of a layer with chosen experts
    are routed only to them during training; routing is the model's own again afterwards."""
    from datasweep.workloads.moe_steer.analysis import forward_router_logits
    from datasweep.workloads.moe_steer.encoding import encode_batch

    model_dir = request.getfixturevalue(model_fixture)
    params, batches, model, tokenizer, layout = _setup(model_dir, paired_artifact, num_epochs=1)
    mask = build_expert_mask(layout.num_layers, layout.num_experts, layout.moe_layers, chosen)
    encoded = encode_batch(tokenizer, batches[0], params)

    def routed() -> list[tuple[torch.Tensor, torch.Tensor]]:
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        hooks = [
            layer.router.register_forward_hook(lambda _m, _i, out: seen.append((out[1], out[2])))
            for layer in layout.layers
        ]
        with torch.inference_mode():
            forward_router_logits(model, encoded.input_ids, encoded.attention_mask)
        for hook in hooks:
            hook.remove()
        return seen

    plain = routed()
    handles = training.mask_router_logits(layout, mask)
    masked = routed()
    for handle in handles:
        handle.remove()
    for position, layer in enumerate(layout.layers):
        allowed = set(np.nonzero(mask[layer.layer_idx])[0].tolist())
        weights, indices = masked[position]
        used = set(indices[weights > 1e-6].tolist())
        assert used <= allowed, (layer.layer_idx, used, allowed)
        assert set(plain[position][1][plain[position][0] > 1e-6].tolist()) - allowed  # it did route elsewhere
    again = routed()
    assert all(torch.equal(a[1], b[1]) for a, b in zip(again, plain, strict=True))

    # training with it: still only the chosen slices change, and the losses differ from gradient masking alone
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with_router = train_experts(
        model, tokenizer, layout, batches, mask, params.model_copy(update={"mask_router_logits": True})
    )
    assert _check_only_selected_changed(before, model, layout, mask) > 0
    model.load_state_dict(before)
    without = train_experts(
        model, tokenizer, layout, batches, mask, params.model_copy(update={"mask_router_logits": False})
    )
    assert with_router.losses != without.losses
