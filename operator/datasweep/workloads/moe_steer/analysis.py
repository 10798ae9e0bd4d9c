"""Risk difference per expert: how much more often an expert is routed to for unsafe than for safe prompts.

For batch b, MoE layer l and expert i: p_label[l, i] = (target tokens of that label whose router top-k
contains i) / (target tokens of that label); risk_diff[l, i] = p_unsafe - p_safe. Batches are combined in one
of two ways (`aggregation`): per-batch-mean (seed 004: mean, and sample standard deviation, of the batches'
risk differences) or pooled (the SteerMoE paper: hits and tokens summed over all batches, then one
p_unsafe - p_safe). With unequal token counts per batch the two differ, even in sign; both are reported.
Experts are ranked by the chosen one and selected by top_n / threshold / max_per_layer, only those leaning
towards `direction` (risk difference > 0 once signed) unless positive_only is off.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasweep.api.stages.moe_steer import MoeSteerParams
from datasweep.store.atomic import atomic_open, atomic_write_bytes, atomic_write_json
from datasweep.workloads.moe_steer.data import BatchRecord
from datasweep.workloads.moe_steer.encoding import encode_batch
from datasweep.workloads.moe_steer.errors import MoeSteerInputError
from datasweep.workloads.moe_steer.experts import MoeLayout

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

EXPERT_MASK_FILE = "expert_mask.npy"
RISK_JSON_FILE = "risk_diff.json"
RISK_CSV_FILE = "risk_diff.csv"
RISK_PER_BATCH_FILE = "risk_diff_per_batch.npy"
SELECTED_FILE = "selected_experts.json"


def target_token_mask(prompt_mask: Any, target_tokens: str) -> Any:
    """The tokens whose routing is counted: every non-padding prompt token, or each row's last one."""
    import torch

    if target_tokens == "all":
        return prompt_mask
    positions = torch.arange(prompt_mask.shape[1], device=prompt_mask.device).expand_as(prompt_mask)
    last = torch.where(prompt_mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    mask = torch.zeros_like(prompt_mask)
    rows = torch.nonzero(last >= 0).squeeze(1)
    mask[rows, last[rows]] = True
    return mask


def count_expert_hits(
    router_logits: Sequence[Any], token_mask: Any, label_ids: Any, top_k: int, num_experts: int
) -> tuple[Any, Any]:
    """Pure counting on router logits (no model): hits[l, c, i] and tokens[c] for labels c = 0 safe, 1 unsafe.

    router_logits[l] is [B*T, E] (row-major over batch then position, as transformers returns them);
    token_mask [B, T] marks the counted tokens (padding must be False); label_ids [B] holds 0/1.
    An expert is hit by a token when it is in the token's top-k by router probability (as the model routes).
    """
    import torch

    flat_mask = token_mask.reshape(-1).bool()
    flat_labels = label_ids.to(flat_mask.device)[:, None].expand(token_mask.shape).reshape(-1)[flat_mask]
    label_onehot = torch.nn.functional.one_hot(flat_labels, num_classes=2).to(torch.float64)  # [N, 2]
    tokens = label_onehot.sum(dim=0)
    hits = torch.zeros((len(router_logits), 2, num_experts), dtype=torch.float64, device=flat_mask.device)
    for layer, logits in enumerate(router_logits):
        if logits.shape != (flat_mask.shape[0], num_experts):
            raise ValueError(
                f"router logits of MoE layer {layer} have shape {tuple(logits.shape)}, "
                f"expected ({flat_mask.shape[0]}, {num_experts})"
            )
        kept = logits.to(flat_mask.device)[flat_mask]
        probs = torch.softmax(kept, dim=-1, dtype=torch.float32)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        selected = torch.zeros((kept.shape[0], num_experts), dtype=torch.float64, device=kept.device)
        selected.scatter_(1, chosen, 1.0)
        hits[layer] = label_onehot.T @ selected
    return hits, tokens


@dataclass
class AnalysisResult:
    moe_layers: list[int]  # decoder layer index of each analysed MoE layer
    num_experts: int
    top_k: int
    p_safe: FloatArray  # [batches, moe layers, experts]
    p_unsafe: FloatArray
    tokens: FloatArray  # [batches, 2] target tokens per label
    seconds: float

    @property
    def risk_diff(self) -> FloatArray:
        return self.p_unsafe - self.p_safe

    @property
    def mean(self) -> FloatArray:
        return np.asarray(self.risk_diff.mean(axis=0), dtype=np.float64)

    @property
    def std(self) -> FloatArray:
        ddof = 1 if self.risk_diff.shape[0] > 1 else 0
        return np.asarray(self.risk_diff.std(axis=0, ddof=ddof), dtype=np.float64)

    def _pooled_p(self, p: FloatArray, label: int) -> FloatArray:
        # p = hits / tokens per batch: the batch's hits are p * tokens
        tokens = self.tokens[:, label]
        return np.asarray((p * tokens[:, None, None]).sum(axis=0) / tokens.sum(), dtype=np.float64)

    @property
    def pooled_p_safe(self) -> FloatArray:
        return self._pooled_p(self.p_safe, 0)

    @property
    def pooled_p_unsafe(self) -> FloatArray:
        return self._pooled_p(self.p_unsafe, 1)

    @property
    def pooled(self) -> FloatArray:
        """Risk difference of activation counts pooled over all target tokens of all batches (the paper's)."""
        return self.pooled_p_unsafe - self.pooled_p_safe

    def aggregate(self, aggregation: str) -> FloatArray:
        """[moe layers, experts] risk difference used for ranking: per-batch-mean or pooled."""
        if aggregation == "pooled":
            return self.pooled
        if aggregation == "per-batch-mean":
            return self.mean
        raise ValueError(f"unknown aggregation {aggregation!r}; use per-batch-mean or pooled")


def forward_router_logits(model: Any, input_ids: Any, attention_mask: Any) -> tuple[Any, ...]:
    """Router logits of one batch; runs the decoder only (the LM head is not needed for routing)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    outputs = decoder(input_ids=input_ids, attention_mask=attention_mask, output_router_logits=True, use_cache=False)
    router_logits = getattr(outputs, "router_logits", None)
    if router_logits is None:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_router_logits=True, use_cache=False)
        router_logits = getattr(outputs, "router_logits", None)
    if not router_logits:
        raise MoeSteerInputError(f"{type(model).__name__} returned no router_logits; is it an MoE causal LM?")
    return tuple(router_logits)


def analyze_batches(
    model: Any,
    tokenizer: Any,
    layout: MoeLayout,
    batches: Sequence[Sequence[BatchRecord]],
    params: MoeSteerParams,
    device: Any = "cpu",
) -> AnalysisResult:
    """Run every batch through the model with router logits and compute per-batch activation frequencies."""
    import torch

    start = time.perf_counter()
    n_layers = len(layout.layers)
    p_safe = np.zeros((len(batches), n_layers, layout.num_experts))
    p_unsafe = np.zeros_like(p_safe)
    tokens = np.zeros((len(batches), 2))
    model.eval()
    with torch.inference_mode():
        for b, records in enumerate(batches):
            encoded = encode_batch(tokenizer, records, params, include_response=False)
            router_logits = forward_router_logits(
                model, encoded.input_ids.to(device), encoded.attention_mask.to(device)
            )
            if len(router_logits) != n_layers:
                raise MoeSteerInputError(
                    f"model returned {len(router_logits)} router outputs but has {n_layers} MoE layers "
                    f"(decoder layers {layout.moe_layers}); unsupported MoE layout"
                )
            mask = target_token_mask(encoded.prompt_mask, params.target_tokens).to(device)
            hits, counted = count_expert_hits(
                router_logits, mask, encoded.label_ids.to(device), layout.top_k, layout.num_experts
            )
            counted_np = counted.cpu().numpy()
            if (counted_np == 0).any():
                raise MoeSteerInputError(f"batch {b} has no target tokens for one label (empty prompts?)")
            freq = (hits / counted[None, :, None]).cpu().numpy()
            p_safe[b], p_unsafe[b], tokens[b] = freq[:, 0], freq[:, 1], counted_np
    return AnalysisResult(
        moe_layers=layout.moe_layers,
        num_experts=layout.num_experts,
        top_k=layout.top_k,
        p_safe=p_safe,
        p_unsafe=p_unsafe,
        tokens=tokens,
        seconds=time.perf_counter() - start,
    )


def rank_experts(mean: FloatArray, direction: str) -> list[tuple[int, int]]:
    """(moe layer position, expert) from most to least unsafe-leaning (or safe-leaning); ties by position."""
    score = mean if direction == "unsafe" else -mean
    order = sorted(np.ndindex(*score.shape), key=lambda pos: (-float(score[pos]), pos[0], pos[1]))
    return [(int(layer), int(expert)) for layer, expert in order]


def select_experts(risk_diff: FloatArray, params: MoeSteerParams) -> list[tuple[int, int]]:
    """Walk the ranking: keep experts with a (direction-signed) risk difference > 0 (positive_only) and
    > threshold (strictly, as seed 004), at most max_per_layer per layer, at most top_n."""
    score = risk_diff if params.direction == "unsafe" else -risk_diff
    chosen: list[tuple[int, int]] = []
    per_layer: dict[int, int] = {}
    for layer, expert in rank_experts(risk_diff, params.direction):
        if params.top_n is not None and len(chosen) >= params.top_n:
            break
        value = float(score[layer, expert])
        if params.threshold is not None and not value > params.threshold:
            break  # the ranking is sorted: nothing after this passes either
        if params.positive_only and not value > 0:
            break
        if params.max_per_layer is not None and per_layer.get(layer, 0) >= params.max_per_layer:
            continue
        per_layer[layer] = per_layer.get(layer, 0) + 1
        chosen.append((layer, expert))
    return chosen


def build_expert_mask(
    num_layers: int, num_experts: int, moe_layers: Sequence[int], selected: Sequence[tuple[int, int]]
) -> BoolArray:
    """[decoder layers, experts] booleans; rows of dense layers stay False."""
    mask = np.zeros((num_layers, num_experts), dtype=np.bool_)
    for position, expert in selected:
        mask[moe_layers[position], expert] = True
    return mask


def _npy_bytes(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_analysis(
    out_dir: str | Path,
    result: AnalysisResult,
    selected: Sequence[tuple[int, int]],
    num_layers: int,
    params: MoeSteerParams,
) -> BoolArray:
    """risk_diff.json / .csv (ranked), risk_diff_per_batch.npy, selected_experts.json, expert_mask.npy."""
    out = Path(out_dir)
    mean, std, pooled = result.mean, result.std, result.pooled
    used = result.aggregate(params.aggregation)
    p_safe, p_unsafe = result.p_safe.mean(axis=0), result.p_unsafe.mean(axis=0)
    pooled_safe, pooled_unsafe = result.pooled_p_safe, result.pooled_p_unsafe
    chosen = set(selected)
    ranking = rank_experts(used, params.direction)
    rows = [
        {
            "rank": rank,
            "layer": result.moe_layers[pos],
            "expert": expert,
            "risk_diff": float(used[pos, expert]),
            "risk_diff_mean": float(mean[pos, expert]),
            "risk_diff_std": float(std[pos, expert]),
            "risk_diff_pooled": float(pooled[pos, expert]),
            "p_unsafe_mean": float(p_unsafe[pos, expert]),
            "p_safe_mean": float(p_safe[pos, expert]),
            "p_unsafe_pooled": float(pooled_unsafe[pos, expert]),
            "p_safe_pooled": float(pooled_safe[pos, expert]),
            "selected": (pos, expert) in chosen,
        }
        for rank, (pos, expert) in enumerate(ranking, start=1)
    ]
    mask = build_expert_mask(num_layers, result.num_experts, result.moe_layers, selected)
    selected_rows = [row for row in rows if row["selected"]]
    atomic_write_json(
        out / RISK_JSON_FILE,
        {
            "num_batches": int(result.risk_diff.shape[0]),
            "num_layers": num_layers,
            "moe_layers": result.moe_layers,
            "num_experts": result.num_experts,
            "top_k": result.top_k,
            "target_tokens": params.target_tokens,
            "direction": params.direction,
            "aggregation": params.aggregation,
            "target_tokens_per_batch": {
                "safe": [int(n) for n in result.tokens[:, 0]],
                "unsafe": [int(n) for n in result.tokens[:, 1]],
            },
            "risk_diff_mean": mean.tolist(),
            "risk_diff_std": std.tolist(),
            "risk_diff_pooled": pooled.tolist(),
            # experts whose sign differs between the two aggregations (unequal token counts per batch)
            "sign_disagreements": [
                [result.moe_layers[pos], expert]
                for pos, expert in np.ndindex(*mean.shape)
                if np.sign(mean[pos, expert]) != np.sign(pooled[pos, expert])
            ],
            "ranking": rows,
        },
    )
    with atomic_open(out / RISK_CSV_FILE) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(out / RISK_PER_BATCH_FILE, _npy_bytes(result.risk_diff))
    atomic_write_json(
        out / SELECTED_FILE,
        {
            "selection": {
                "top_n": params.top_n,
                "threshold": params.threshold,
                "max_per_layer": params.max_per_layer,
                "direction": params.direction,
                "aggregation": params.aggregation,
                "positive_only": params.positive_only,
            },
            "experts": selected_rows,
        },
    )
    atomic_write_bytes(out / EXPERT_MASK_FILE, _npy_bytes(mask))
    return mask


def load_expert_mask(path: str | Path) -> BoolArray:
    source = Path(path)
    if not source.is_file():
        raise MoeSteerInputError(f"{source}: expert mask not found; run `datasweep worker moe-steer analyze` first")
    mask = np.load(source, allow_pickle=False)
    if mask.ndim != 2:
        raise MoeSteerInputError(f"{source}: expert mask must be 2D [layers, experts], got shape {mask.shape}")
    return np.asarray(mask, dtype=np.bool_)
