"""How much of the encoder / decoder backbone trains: ``full``, ``lora`` (peft adapters), ``frozen``.

As in the authors' trainer, ``lora`` puts adapters on the MLP layers of every block (``blocks.N.mlp.fc1/fc2``) and
keeps the final norm trainable; ``frozen`` freezes the ViT backbone. The parts around the backbone (latent tokens,
level and latent position embeddings, the pixel head, quantizers, convs) always train.

``merged_state_dict`` folds the adapters into the weights, so a model trained with LoRA is saved in the plain
layout every loader reads.
"""
from __future__ import annotations

import torch
import torch.nn as nn

LORA_TARGETS = r".*blocks\.\d+\.mlp\.fc\d"


def apply_tuning(backbone: nn.Module, method: str, *, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
    """Set up ``backbone`` (a timm ViT) for ``method`` in place."""
    if method == "full":
        return
    if method == "frozen":
        backbone.requires_grad_(False)
        return
    if method != "lora":
        raise ValueError(f"tuning method must be full, lora or frozen, got {method!r}")
    from peft import LoraConfig, inject_adapter_in_model
    inject_adapter_in_model(LoraConfig(target_modules=LORA_TARGETS, r=r, lora_alpha=alpha, lora_dropout=dropout),
                            backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith("norm."))


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every LoRA layer replaced by its merged plain Linear weights."""
    from peft.tuners.lora import LoraLayer
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        prefix = f"{name}." if name else ""
        weight = state.pop(f"{prefix}base_layer.weight").clone()
        for adapter in module.active_adapters:
            weight += module.get_delta_weight(adapter).to(weight.dtype)
        state[f"{prefix}weight"] = weight
        if f"{prefix}base_layer.bias" in state:
            state[f"{prefix}bias"] = state.pop(f"{prefix}base_layer.bias")
        for k in [k for k in state if k.startswith(f"{prefix}lora_")]:
            del state[k]
    return state
