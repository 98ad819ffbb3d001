"""Where in a causal LM a vector is read or added: one owner of "layer" and of ``final``.

A layer is written ``L`` (an int, 0-based) for the output of decoder block ``L``, i.e.
``hidden_states[L + 1]`` of ``output_hidden_states``, or ``None`` (written ``"final"`` in files and
metadata) for the output of the model's final norm, i.e. ``last_hidden_state``. For the last block,
``L`` is the residual *before* the final norm, which ``output_hidden_states`` does not return (its
last entry is already normed). steering-vectors' ``decoder_block``, repeng's ``ControlModel`` layer
and llama.cpp's ``direction.L`` use the same block numbering.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssae_core.errors import InputError

FINAL = "final"
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm")

Layer = int | None
LAYER_FOLDER = "layer-{}"
LAYER_FOLDER_PATTERN = re.compile(r"layer-(final|\d+)")


def parse_layer(layer: object) -> Layer:
    """A layer key: ``None``/``"final"`` (after the final norm) or a block index; a negative index
    counts from the end (-1: the last block), see :func:`resolve_layer`."""
    if layer is None or layer == FINAL:
        return None
    if isinstance(layer, str) and layer.strip().removeprefix("-").isdigit():
        return int(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        return layer
    raise InputError(
        f"layer {layer!r}: use 'final' (after the final norm) or a block index (-1: the last block)"
    )


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


def layer_folder(out: Path, layer: Layer) -> Path:
    """Where a run with ``layers`` writes the table of ``layer`` (``OUT/layer-15``,
    ``OUT/layer-final``)."""
    return out / LAYER_FOLDER.format(layer_name(layer))


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
    raise InputError(
        f"{model_label(getattr(config, 'name_or_path', ''))}: config has no layer count"
    )


def model_label(name: object) -> str:
    """``model NAME``, or ``the model`` where its name is not known."""
    text = str(name or "").strip()
    return f"model {text}" if text else "the model"


def check_layer(layer: int | None, n_layers: int, model_name: str) -> int | None:
    """Validate a layer index: ``None`` (final, normed) or a block index in ``0..n_layers-1``."""
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(
            f"layer {layer!r}: out of range for {model_label(model_name)} with {n_layers} "
            "blocks; "
            f"use 0..{n_layers - 1} (residual after that block) or omit it (final normed state)"
        )
    return layer


def resolve_layer(layer: object, n_layers: int, model_name: str = "") -> Layer:
    """The layer ``layer`` names in a model of ``n_layers`` blocks: ``None`` (final) or a block
    index in ``0..n_layers-1``; a negative index counts from the end, as in Python (-1 is block
    ``n_layers - 1``). Out of range: :class:`InputError` (by :func:`check_layer`)."""
    parsed = parse_layer(layer)
    if parsed is not None and -n_layers <= parsed < 0:
        parsed += n_layers
    return check_layer(parsed, n_layers, model_name)


# Where each architecture keeps its decoder blocks and its final norm, as attribute paths from
# the model's ``base_model`` (``model.model`` for Llama, ``model.transformer`` for GPT-2), keyed
# by ``config.model_type``. Every entry is checked by tests/test_architectures.py on a tiny random
# model (extraction against output_hidden_states, steering against a hand-written hook). Other
# architectures fall back to discovery: the first ModuleList with one entry per layer, and the
# norm beside it named one of FINAL_NORM_NAMES. Padding, position ids and BOS need no rule of
# their own for these architectures: inputs are left-padded with explicit position ids
# (ssae_core.lm.embed), and the BOS rule reads the tokenizer (ssae_core.lm.tokens).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("layers", "norm"),
    "mistral": ("layers", "norm"),
    "qwen2": ("layers", "norm"),
    "gemma2": ("layers", "norm"),
    "gemma3_text": ("layers", "norm"),
    # Gemma 3 with its vision tower: the tower's encoder has its own ModuleList of blocks, which
    # discovery would take when it has as many blocks as the language model
    "gemma3": ("language_model.layers", "language_model.norm"),
    "phi3": ("layers", "norm"),
    "gpt_neox": ("layers", "final_layer_norm"),
    "gpt2": ("h", "ln_f"),
}


def _body(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _table_module(model: nn.Module, part: int) -> nn.Module | None:
    """The module at the ARCHITECTURES path of ``model``'s type (part 0: blocks, 1: final norm)."""
    paths = ARCHITECTURES.get(getattr(model.config, "model_type", None) or "")
    if paths is None:
        return None
    try:
        return _body(model).get_submodule(paths[part])
    except AttributeError:
        return None


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder blocks: the ARCHITECTURES entry of its type, else the first ModuleList
    of the body with one entry per layer."""
    n = num_layers(model.config)
    listed = _table_module(model, 0)
    if isinstance(listed, nn.ModuleList) and len(listed) == n:
        return listed
    for _, module in _body(model).named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise InputError(f"model {model.config.name_or_path}: cannot find its {n} decoder blocks")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm whose output is ``last_hidden_state``: the ARCHITECTURES entry of the model's type,
    else the sibling of the decoder blocks named ``norm`` (Llama, Mistral, Qwen, Gemma),
    ``final_layernorm`` (Phi), ``ln_f`` (GPT-2)..."""
    listed = _table_module(model, 1)
    if listed is not None:
        return listed
    blocks = decoder_blocks(model)
    for parent in _body(model).modules():
        if any(child is blocks for child in parent.children()):
            for name in FINAL_NORM_NAMES:
                module = parent._modules.get(name)
                if isinstance(module, nn.Module):
                    return module
    raise InputError(
        f"model {getattr(model.config, 'name_or_path', '?')}: cannot find its final norm (looked "
        f"for {', '.join(FINAL_NORM_NAMES)} beside the decoder blocks); steer a block layer instead"
    )
