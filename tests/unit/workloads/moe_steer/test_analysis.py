"""Risk difference: hand computation on fixed router logits, padding, selection, OLMoE and Qwen2-MoE models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.workloads.moe_steer.analysis import (
    AnalysisResult,
    analyze_batches,
    build_expert_mask,
    count_expert_hits,
    forward_router_logits,
    rank_experts,
    select_experts,
    target_token_mask,
)
from datasweep.workloads.moe_steer.data import build_batches, load_prompts
from datasweep.workloads.moe_steer.encoding import encode_batch
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.moe_steer.experts import discover_moe_layout
from datasweep.workloads.moe_steer.stage import load_model

# Two prompts (row 0 safe, row 1 unsafe), 3 positions, 4 experts, top-2; row 0 position 2 is padding.
TOKEN_MASK = torch.tensor([[True, True, False], [True, True, True]])
LABELS = torch.tensor([0, 1])
LAYER0 = torch.tensor(
    [
        [3.0, 2.0, 0.0, 0.0],  # safe    -> {0, 1}
        [3.0, 0.0, 2.0, 0.0],  # safe    -> {0, 2}
        [0.0, 0.0, 5.0, 5.0],  # padding -> {2, 3}, must not count
        [0.0, 0.0, 3.0, 2.0],  # unsafe  -> {2, 3}
        [2.0, 0.0, 3.0, 0.0],  # unsafe  -> {0, 2}
        [0.0, 3.0, 0.0, 2.0],  # unsafe  -> {1, 3}
    ]
)
LAYER1 = torch.tensor([[5.0, 4.0, 0.0, 0.0]] * 2 + [[0.0, 0.0, 9.0, 9.0]] + [[5.0, 4.0, 0.0, 0.0]] * 3)


def test_counts_and_risk_difference_match_a_hand_computation() -> None:
    hits, tokens = count_expert_hits([LAYER0, LAYER1], TOKEN_MASK, LABELS, top_k=2, num_experts=4)
    assert tokens.tolist() == [2.0, 3.0]
    assert hits[0].tolist() == [[2, 1, 1, 0], [1, 1, 2, 2]]
    assert hits[1].tolist() == [[2, 2, 0, 0], [3, 3, 0, 0]]
    freq = hits / tokens[None, :, None]
    risk_diff = (freq[:, 1] - freq[:, 0]).numpy()
    np.testing.assert_allclose(risk_diff[0], [1 / 3 - 1, 1 / 3 - 1 / 2, 2 / 3 - 1 / 2, 2 / 3 - 0])
    np.testing.assert_allclose(risk_diff[1], [0, 0, 0, 0])


def test_padding_tokens_are_ignored() -> None:
    with_padding, tokens = count_expert_hits([LAYER0], TOKEN_MASK, LABELS, top_k=2, num_experts=4)
    padding_counted, _ = count_expert_hits([LAYER0], torch.ones_like(TOKEN_MASK), LABELS, top_k=2, num_experts=4)
    assert with_padding[0, 0].tolist() == [2, 1, 1, 0]
    assert padding_counted[0, 0].tolist() == [2, 1, 2, 1]  # what counting the pad row would wrongly add
    assert tokens.tolist() == [2.0, 3.0]


def test_last_target_token_per_row() -> None:
    mask = target_token_mask(TOKEN_MASK, "last")
    assert mask.tolist() == [[False, True, False], [False, False, True]]
    hits, tokens = count_expert_hits([LAYER0], mask, LABELS, top_k=2, num_experts=4)
    assert tokens.tolist() == [1.0, 1.0]
    assert hits[0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]


def test_ranking_and_selection_rules() -> None:
    mean = np.array([[0.5, -0.2, 0.3], [0.4, 0.45, -0.6]])
    assert rank_experts(mean, "unsafe")[:3] == [(0, 0), (1, 1), (1, 0)]
    assert rank_experts(mean, "safe")[0] == (1, 2)
    assert select_experts(mean, MoeSteerParams(top_n=3)) == [(0, 0), (1, 1), (1, 0)]
    # only experts leaning towards the direction (issue 15): top_n=5 stops at the last positive one
    assert select_experts(mean, MoeSteerParams(top_n=5)) == [(0, 0), (1, 1), (1, 0), (0, 2)]
    assert select_experts(mean, MoeSteerParams(top_n=5, positive_only=False))[-1] == (0, 1)
    assert select_experts(mean, MoeSteerParams(top_n=5, direction="safe")) == [(1, 2), (0, 1)]
    # the threshold is strict (seed 004 uses >): an expert exactly at it is not selected
    assert select_experts(mean, MoeSteerParams(top_n=None, threshold=0.4)) == [(0, 0), (1, 1)]
    assert select_experts(mean, MoeSteerParams(top_n=3, max_per_layer=1)) == [(0, 0), (1, 1)]
    assert select_experts(mean, MoeSteerParams(top_n=None, threshold=0.35)) == [(0, 0), (1, 1), (1, 0)]
    assert select_experts(mean, MoeSteerParams(top_n=1, threshold=0.1)) == [(0, 0)]
    assert select_experts(mean, MoeSteerParams(top_n=5, threshold=0.9)) == []
    assert select_experts(mean, MoeSteerParams(top_n=1, direction="safe")) == [(1, 2)]
    # tuple position -> decoder layer (dense layer 0 skipped)
    mask = build_expert_mask(3, 3, [1, 2], [(0, 0), (1, 1)])
    assert mask.tolist() == [[False] * 3, [True, False, False], [False, True, False]]


def _batches(data: Path, **overrides: object) -> tuple[MoeSteerParams, list]:  # type: ignore[type-arg]
    params = MoeSteerParams(batch_size=4, device="cpu", **overrides)  # type: ignore[arg-type]
    prompts, _ = load_prompts(params, data=data)
    return params, build_batches(prompts, params)


def test_counting_matches_the_models_own_routing_and_ignores_padding(tiny_olmoe: Path, paired_artifact: Path) -> None:
    params, batches = _batches(paired_artifact)
    model, tokenizer, layout, _ = load_model(tiny_olmoe, params)
    assert layout.moe_layers == [0, 1]
    assert (layout.num_experts, layout.top_k) == (8, 2)
    records = batches[0]
    encoded = encode_batch(tokenizer, records, params)
    assert not bool(encoded.prompt_mask.all())  # the batch really has padding

    routed: list[torch.Tensor] = []
    hooks = [layer.router.register_forward_hook(lambda _m, _i, out: routed.append(out[2])) for layer in layout.layers]
    with torch.inference_mode():
        logits = forward_router_logits(model, encoded.input_ids, encoded.attention_mask)
    for hook in hooks:
        hook.remove()
    hits, tokens = count_expert_hits(logits, encoded.prompt_mask, encoded.label_ids, 2, 8)
    flat_mask = encoded.prompt_mask.reshape(-1)
    flat_labels = encoded.label_ids[:, None].expand_as(encoded.prompt_mask).reshape(-1)
    for layer, chosen in enumerate(routed):
        for label in (0, 1):
            picked = chosen[flat_mask & (flat_labels == label)]
            expected = torch.bincount(picked.reshape(-1), minlength=8).double()
            assert torch.equal(hits[layer, label], expected)

    # each prompt alone (no padding at all) gives the same counts as the padded batch
    alone = torch.zeros_like(hits)
    for row, record in enumerate(records):
        single = encode_batch(tokenizer, [record], params)
        with torch.inference_mode():
            single_logits = forward_router_logits(model, single.input_ids, single.attention_mask)
        single_hits, _ = count_expert_hits(single_logits, single.prompt_mask, encoded.label_ids[row : row + 1], 2, 8)
        alone += single_hits
    assert torch.equal(alone, hits)
    assert tokens.sum() == flat_mask.sum()


def test_analysis_over_batches_aggregates_mean_and_std(tiny_olmoe: Path, paired_artifact: Path) -> None:
    params, batches = _batches(paired_artifact)
    model, tokenizer, layout, _ = load_model(tiny_olmoe, params)
    result = analyze_batches(model, tokenizer, layout, batches, params)
    assert result.p_safe.shape == (6, 2, 8)
    # every token picks top_k experts: frequencies per layer sum to top_k
    np.testing.assert_allclose(result.p_safe.sum(axis=2), 2.0)
    np.testing.assert_allclose(result.p_unsafe.sum(axis=2), 2.0)
    np.testing.assert_allclose(result.mean, (result.p_unsafe - result.p_safe).mean(axis=0))
    np.testing.assert_allclose(result.std, (result.p_unsafe - result.p_safe).std(axis=0, ddof=1))
    # a batch on its own reproduces its row of the per-batch table
    alone = analyze_batches(model, tokenizer, layout, batches[2:3], params)
    np.testing.assert_array_equal(alone.risk_diff[0], result.risk_diff[2])


def test_qwen2_moe_dense_layer_is_skipped_and_shared_expert_is_not_an_expert(
    tiny_qwen_moe: Path, paired_artifact: Path
) -> None:
    params, batches = _batches(paired_artifact, max_batches=2)
    model, tokenizer, layout, _ = load_model(tiny_qwen_moe, params)
    assert layout.num_layers == 3
    assert layout.moe_layers == [1, 2]
    assert set(layout.layers[0].expert_params) == {"gate_up_proj", "down_proj"}
    result = analyze_batches(model, tokenizer, layout, batches, params)
    assert result.moe_layers == [1, 2]
    assert result.p_safe.shape == (2, 2, 6)
    np.testing.assert_allclose(result.p_unsafe.sum(axis=2), 2.0)


def test_non_moe_model_is_rejected(tiny_llama: Path) -> None:
    with pytest.raises(MoeSteerInputError, match=r"base model \(llama\) is not a mixture-of-experts model"):
        load_model(tiny_llama, MoeSteerParams(device="cpu"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    model.config.num_experts, model.config.num_experts_per_tok = 4, 2  # a config that lies
    with pytest.raises(MoeSteerInputError, match="has no sparse MoE layers"):
        discover_moe_layout(model)


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(MoeSteerInputError, match=r"has no config\.json"):
        load_model(tmp_path, MoeSteerParams(device="cpu"))


def test_pooled_and_per_batch_mean_can_disagree_in_sign() -> None:
    # one layer, one expert. Batch 0: 10 safe tokens (all hit), 90 unsafe (20 % hit): diff -0.8.
    # Batch 1: 90 safe (none hit), 10 unsafe (50 % hit): diff +0.5. Mean over batches -0.15; pooled over
    # tokens p_unsafe = (18 + 5) / 100, p_safe = (10 + 0) / 100: +0.13.
    result = AnalysisResult(
        moe_layers=[0],
        num_experts=1,
        top_k=1,
        p_safe=np.array([[[1.0]], [[0.0]]]),
        p_unsafe=np.array([[[0.2]], [[0.5]]]),
        tokens=np.array([[10.0, 90.0], [90.0, 10.0]]),
        seconds=0.0,
    )
    assert result.aggregate("per-batch-mean")[0, 0] == pytest.approx(-0.15)
    assert result.aggregate("pooled")[0, 0] == pytest.approx(0.13)
    assert select_experts(result.aggregate("per-batch-mean"), MoeSteerParams(top_n=1)) == []
    assert select_experts(result.aggregate("pooled"), MoeSteerParams(top_n=1, aggregation="pooled")) == [(0, 0)]


def test_analysis_output_reports_both_aggregations(tiny_olmoe: Path, paired_artifact: Path, tmp_path: Path) -> None:
    import json

    from datasweep.workloads.moe_steer.stage import analyze_stage

    params = MoeSteerParams(batch_size=4, device="cpu", max_batches=3, aggregation="pooled", top_n=3)
    model, tokenizer, layout, device = load_model(tiny_olmoe, params)
    analyze_stage(model, tokenizer, layout, device, tmp_path, params, paired_artifact)
    table = json.loads((tmp_path / "risk_diff.json").read_text())
    assert table["aggregation"] == "pooled"
    rows = table["ranking"]
    assert all(row["risk_diff"] == row["risk_diff_pooled"] for row in rows)
    assert [row["risk_diff"] for row in rows] == sorted((row["risk_diff"] for row in rows), reverse=True)
    assert {"risk_diff_mean", "risk_diff_std", "p_unsafe_pooled", "p_safe_pooled"} <= rows[0].keys()
    assert len(table["risk_diff_pooled"]) == len(table["risk_diff_mean"]) == 2
    selected = [row for row in rows if row["selected"]]
    assert selected
    assert all(row["risk_diff"] > 0 for row in selected)
