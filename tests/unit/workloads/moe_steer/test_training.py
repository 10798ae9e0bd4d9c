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
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, (layer, _) in _expert_param_names(model, layout).items() if mask[layer].any()}

    # and the saved model holds exactly these weights
    save_model(model, tokenizer, tmp_path / "final_model")
    reloaded, _, _, _ = load_model(tmp_path / "final_model", params)
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


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
    without = train_experts(model, tokenizer, layout, batches, mask, params)
    assert with_router.losses != without.losses
