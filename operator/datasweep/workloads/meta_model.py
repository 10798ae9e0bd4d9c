"""Models built from a config alone on torch's meta device: real sizes, no memory, no weights (needs torch).

The ground truth for datasweep.core.memory's parameter counts (tests) and the bench's real-size models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# model_type -> the class a stage of that kind trains (qa: encoders with a question-answering head)
ENCODERS = ("bert", "roberta", "xlm-roberta")


def build(config: Mapping[str, Any], device: str = "meta", dtype: Any = None) -> Any:
    """The model a training stage builds from this config.json content (causal LM, or QA head for encoders)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForQuestionAnswering

    settings = dict(config)
    kind = settings.pop("model_type")
    built = AutoConfig.for_model(kind, **settings)
    auto = AutoModelForQuestionAnswering if kind in ENCODERS else AutoModelForCausalLM
    with torch.device(device):
        settings_for_build = {"dtype": dtype} if dtype is not None else {}
        return auto.from_config(built, **settings_for_build)  # type: ignore[no-untyped-call]


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def per_expert_count(model: Any) -> int:
    """Parameters of one routed expert: the fused expert tensors' [E, ...] slices of one layer (0: dense)."""
    from datasweep.workloads.moe_steer.experts import discover_moe_layout

    if getattr(model.config, "num_experts", None) is None and getattr(model.config, "num_local_experts", None) is None:
        return 0
    layer = discover_moe_layout(model).layers[0]
    return sum(param[0].numel() for param in layer.expert_params.values())
