"""Where the experts of a mixture-of-experts causal LM live (transformers 5: fused 3D expert tensors).

`discover_moe_layout` finds, for every decoder layer that has a sparse MoE block, its router and its fused
expert parameters (`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I], ...: every parameter of the experts
module whose first dimension is the number of experts). Dense layers (Qwen2-MoE `mlp_only_layers`,
`decoder_sparse_step`) have no router, so the model's `router_logits` tuple skips them: tuple index j
belongs to decoder layer `moe_layers[j]`. Shared experts (Qwen2-MoE) are not part of the experts module and
are never selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasweep.workloads.moe_steer.errors import MoeSteerInputError


@dataclass
class MoeLayer:
    layer_idx: int
    router: Any  # nn.Module
    experts: Any  # nn.Module holding the fused expert tensors
    expert_params: dict[str, Any] = field(default_factory=dict)  # name -> nn.Parameter [E, ...]


@dataclass
class MoeLayout:
    num_layers: int
    num_experts: int
    top_k: int
    layers: list[MoeLayer]

    @property
    def moe_layers(self) -> list[int]:
        """Decoder layer index of each entry of the model's router_logits tuple."""
        return [layer.layer_idx for layer in self.layers]


def _decoder_layers(model: Any) -> list[Any]:
    for owner in (getattr(model, "model", None), model):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if layers is not None:
            return list(layers)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise MoeSteerInputError(f"{type(model).__name__}: cannot find the decoder layers (model.model.layers)")
    return list(layers)


def _config_value(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# Fused expert tensors of a gated (SwiGLU) expert: gate_up_proj [E, 2I, H] and down_proj [E, H, I], no biases.
EXPERT_PROJECTIONS = 3


def expert_parameter_count(config: Any) -> int:
    """Parameters of one routed expert, from the model config alone (no weights): moe-steer trains exactly
    (selected experts x this) parameters. hidden_size x expert intermediate size x EXPERT_PROJECTIONS, where
    the expert intermediate size is `moe_intermediate_size` (Qwen-MoE; its `intermediate_size` is the dense
    MLP's) or else `intermediate_size` (OLMoE, Mixtral). `config` is a transformers config or its config.json
    as a dict."""

    def value(name: str) -> Any:
        return config.get(name) if isinstance(config, dict) else getattr(config, name, None)

    hidden = value("hidden_size")
    intermediate = value("moe_intermediate_size") or value("intermediate_size")
    if not isinstance(hidden, int) or not isinstance(intermediate, int):
        raise MoeSteerInputError(
            "model config has no hidden_size / (moe_)intermediate_size: cannot size an expert; "
            "moe-steer needs an MoE causal LM such as OLMoE or Qwen-MoE"
        )
    return EXPERT_PROJECTIONS * hidden * intermediate


def discover_moe_layout(model: Any) -> MoeLayout:
    """The MoE layers of `model`; a clear error when it has none (a dense model) or old-style experts."""
    import torch

    config = model.config
    name = getattr(config, "model_type", type(model).__name__)
    num_experts = _config_value(config, "num_experts", "num_local_experts", "n_routed_experts")
    top_k = _config_value(config, "num_experts_per_tok", "moe_top_k", "top_k")
    if num_experts is None or top_k is None:
        raise MoeSteerInputError(
            f"base model ({name}) is not a mixture-of-experts model: its config has no num_experts / "
            "num_experts_per_tok; moe-steer needs an MoE causal LM such as OLMoE or Qwen-MoE"
        )
    decoder_layers = _decoder_layers(model)
    layers: list[MoeLayer] = []
    for layer_idx, decoder_layer in enumerate(decoder_layers):
        found: MoeLayer | None = None
        for _, module in decoder_layer.named_modules():
            experts = getattr(module, "experts", None)
            router = getattr(module, "gate", None)
            if experts is None or router is None or not isinstance(experts, torch.nn.Module):
                continue
            fused = {
                param_name: param
                for param_name, param in experts.named_parameters(recurse=False)
                if param.dim() == 3 and param.shape[0] == num_experts
            }
            if not fused:
                if isinstance(experts, torch.nn.ModuleList):
                    raise MoeSteerInputError(
                        f"base model ({name}) layer {layer_idx} stores experts as a ModuleList "
                        "(transformers < 5); "
                        "moe-steer expects fused 3D expert tensors: use transformers >= 5"
                    )
                continue
            found = MoeLayer(layer_idx=layer_idx, router=router, experts=experts, expert_params=fused)
            break
        if found is not None:
            layers.append(found)
    if not layers:
        raise MoeSteerInputError(
            f"base model ({name}) has no sparse MoE layers (no module with a router 'gate' and fused "
            "'experts' tensors); moe-steer needs an MoE causal LM such as OLMoE or Qwen-MoE"
        )
    return MoeLayout(num_layers=len(decoder_layers), num_experts=num_experts, top_k=top_k, layers=layers)
