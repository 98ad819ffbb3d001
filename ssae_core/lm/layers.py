"""Where in a causal LM a vector is read or added: one owner of "layer" and of ``final``.

A layer is written ``L`` (an int, 0-based) for the output of decoder block ``L``, i.e.
``hidden_states[L + 1]`` of ``output_hidden_states``, or ``None`` (written ``"final"`` in files and
metadata) for the output of the model's final norm, i.e. ``last_hidden_state``. For the last block,
``L`` is the residual *before* the final norm, which ``output_hidden_states`` does not return (its
last entry is already normed). steering-vectors' ``decoder_block``, repeng's ``ControlModel`` layer
and llama.cpp's ``direction.L`` use the same block numbering.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssae_core.errors import InputError

FINAL = "final"
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm")

Layer = int | None


def parse_layer(layer: object) -> Layer:
    """A layer key: ``None``/``"final"`` (after the final norm) or a block index >= 0."""
    if layer is None or layer == FINAL:
        return None
    if isinstance(layer, str) and layer.strip().isdigit():
        return int(layer)
    if isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0:
        return layer
    raise InputError(f"layer {layer!r}: use 'final' (after the final norm) or a block index >= 0")


def layer_order(layer: Layer) -> tuple[bool, int]:
    """Sort key of layers: blocks in order, then ``final``."""
    return (layer is None, layer or 0)


def parse_layers(layers: object) -> list[Layer]:
    """A list of layers (block indices and/or ``final``), each once, in :func:`layer_order`."""
    if isinstance(layers, str | bytes) or not isinstance(layers, list | tuple) or not layers:
        raise InputError(
            f"layers {layers!r}: give a list of block indices and/or final, e.g. [15, final]"
        )
    parsed = [parse_layer(layer) for layer in layers]
    if len(set(parsed)) != len(parsed):
        raise InputError(f"layers {list(layers)!r}: a layer is given twice; list each once")
    return sorted(parsed, key=layer_order)


def layer_name(layer: int | None) -> str:
    """How the metadata records a layer: ``final`` or the block index."""
    return FINAL if layer is None else str(layer)


def text_config(config: Any) -> Any:
    """The language part of a (possibly multimodal) model config."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_layers(config: Any) -> int:
    """Number of decoder blocks of a (possibly multimodal) model config."""
    text = text_config(config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    raise InputError(f"model {getattr(config, 'name_or_path', '?')}: config has no layer count")


def check_layer(layer: int | None, n_layers: int, model_name: str) -> int | None:
    """Validate a layer index: ``None`` (final, normed) or a block index in ``0..n_layers-1``."""
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(
            f"layer {layer!r}: out of range for model {model_name} with {n_layers} blocks; "
            f"use 0..{n_layers - 1} (residual after that block) or omit it (final normed state)"
        )
    return layer


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder blocks (``model.layers`` for Llama, ``transformer.h`` for GPT-2...)."""
    n = num_layers(model.config)
    body = getattr(model, "base_model", model)
    for _, module in body.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise InputError(f"model {model.config.name_or_path}: cannot find its {n} decoder blocks")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm whose output is ``last_hidden_state``: the sibling of the decoder blocks named
    ``norm`` (Llama, Mistral, Qwen, Gemma), ``final_layernorm`` (Phi), ``ln_f`` (GPT-2)..."""
    blocks = decoder_blocks(model)
    body = getattr(model, "base_model", model)
    for parent in body.modules():
        if any(child is blocks for child in parent.children()):
            for name in FINAL_NORM_NAMES:
                module = parent._modules.get(name)
                if isinstance(module, nn.Module):
                    return module
    raise InputError(
        f"model {getattr(model.config, 'name_or_path', '?')}: cannot find its final norm (looked "
        f"for {', '.join(FINAL_NORM_NAMES)} beside the decoder blocks); steer a block layer instead"
    )
