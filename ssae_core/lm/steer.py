"""Steering a causal LM: add ``alpha * v`` to its residual stream while it runs.

Where a vector is added: exactly where :mod:`ssae_core.lm.embed` reads embeddings (see
:mod:`ssae_core.lm.layers`).

- layer ``L`` (int): the output of decoder block ``L`` (0-based), i.e. ``hidden_states[L + 1]``, by
  a forward hook on ``decoder_blocks(model)[L]``;
- layer ``None`` (written ``"final"`` in files): the output of the model's final norm, i.e.
  ``last_hidden_state``, by a forward hook on that norm (``model.model.norm`` for Llama).

Which token positions (``positions``):

- ``"all"``: every position of every forward pass;
- ``"prompt"``: positions of the prompt only, i.e. of the first forward pass of a sequence;
- ``"generated"``: positions after the prompt only (tokens the model generated and reads back).

The prompt length is the width of the first call of a sequence (with left padding, the padded
width, the same for every row: generation must use LEFT padding). A call continues the sequence
when it reads a KV cache that already holds tokens, or, without a cache, when it is one token
longer than the previous call and starts with the same prompt (what ``generate(use_cache=False)``
does at every step, beam search included); any other call starts a new sequence. So ``"prompt"``
and ``"generated"`` steer the same positions with and without the KV cache. With ``"generated"``,
the first new token is predicted unsteered (it comes from the prompt's last position); the vector
acts from the moment it is read back.

Files (safetensors, llama.cpp control vectors) and vectors of trained models:
:mod:`ssae_core.lm.vector_files`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ssae_core.errors import InputError
from ssae_core.lm.layers import (
    Layer,
    check_layer,
    decoder_blocks,
    final_norm,
    layer_name,
    num_layers,
    parse_layer,
    text_config,
)

POSITIONS = ("all", "prompt", "generated")
CACHE_ARGUMENTS = ("cache", "past_key_values")


def _as_vector(value: object, layer: Layer) -> torch.Tensor:
    if torch.is_tensor(value):
        vector = value.detach().to("cpu", torch.float32, copy=True)
    else:
        vector = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if vector.dim() != 1 or vector.numel() == 0:
        raise InputError(
            f"steering vector for layer {layer_name(layer)}: shape {tuple(vector.shape)}; "
            "give one vector of the model's width per layer"
        )
    if not torch.isfinite(vector).all():
        raise InputError(f"steering vector for layer {layer_name(layer)}: has NaN or inf")
    return vector.contiguous()


@dataclass
class SteeringVector:
    """Vectors to add to the residual stream, one per layer (``None`` = after the final norm).

    ``metadata``: free-form strings saved with the vector (model, layer, concept, alpha...).
    """

    layer_activations: dict[Layer, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layer_activations:
            raise InputError("steering vector: holds no layer; give at least one {layer: vector}")
        vectors: dict[Layer, torch.Tensor] = {}
        for key, value in self.layer_activations.items():
            layer = parse_layer(key)
            if layer in vectors:
                raise InputError(f"steering vector: layer {layer_name(layer)} given twice")
            vectors[layer] = _as_vector(value, layer)
        widths = {v.numel() for v in vectors.values()}
        if len(widths) != 1:
            raise InputError(f"steering vector: layers have different widths {sorted(widths)}")
        self.layer_activations = vectors
        self.metadata = {str(k): str(v) for k, v in self.metadata.items()}

    @property
    def dim(self) -> int:
        return next(iter(self.layer_activations.values())).numel()

    def scaled(self, factor: float) -> SteeringVector:
        """A copy with every vector multiplied by ``factor``."""
        return SteeringVector(
            {k: v * float(factor) for k, v in self.layer_activations.items()}, dict(self.metadata)
        )

    def apply(
        self, model: nn.Module, *, multiplier: float = 1.0, positions: str = "all"
    ) -> contextlib.AbstractContextManager[None]:
        """``with vector.apply(model): ...``: the same as :func:`steer` with this vector."""
        return steer(model, self, multiplier=multiplier, positions=positions)


# --------------------------------------------------------------------------- hooks


def _cached_length(past: Any) -> int:
    """Tokens already in a KV cache (0 without one)."""
    if past is None:
        return 0
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    if isinstance(past, (tuple, list)) and past and past[0] is not None:  # legacy tuple cache
        return int(past[0][0].shape[-2])
    return 0


def _cache_argument(kwargs: Mapping[str, Any]) -> Any:
    """The KV cache a call passes to the model body, under whichever name this transformers uses
    (``cache`` from 5.x, ``past_key_values`` before; 5.x still accepts the old name)."""
    for name in CACHE_ARGUMENTS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


class _PositionTracker:
    """A forward pre-hook on the model body: where the current call's tokens sit in the sequence
    (``offset``) and how long its prompt is (``prompt_length``); see the module docstring."""

    def __init__(self) -> None:
        self.offset = 0
        self.prompt_length = 0
        self._prompt: torch.Tensor | None = None  # the first call's tokens (without a cache)
        self._last_width = 0

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = kwargs.get("input_ids")
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None and args:
            tokens = args[0]
        if tokens is None:
            raise RuntimeError("steering: the model was called without input_ids or inputs_embeds")
        width = tokens.shape[1]
        cached = _cached_length(_cache_argument(kwargs))
        if cached > 0:
            if self.prompt_length == 0:  # the first call reads a cache filled elsewhere
                self.prompt_length = cached + width
            self.offset = cached
            self._prompt = None
            return
        self.offset = 0
        if not self._continues(tokens):
            self.prompt_length = width
            self._prompt = tokens.detach()
        self._last_width = width

    def _continues(self, tokens: torch.Tensor) -> bool:
        """Whether a cache-less call re-reads the sequence so far plus one token (compared on
        the prompt only, so that beam search may reorder rows between steps)."""
        prompt = self._prompt
        return (
            prompt is not None
            and tokens.shape[0] == prompt.shape[0]
            and tokens.shape[1] == self._last_width + 1
            and tokens.shape[2:] == prompt.shape[2:]
            and torch.equal(tokens[:, : self.prompt_length], prompt)
        )

    def mask(self, width: int, positions: str, device: torch.device) -> torch.Tensor:
        """Boolean [width]: which of the current call's positions to steer."""
        index = self.offset + torch.arange(width, device=device)
        return index < self.prompt_length if positions == "prompt" else index >= self.prompt_length


def _adder(vector_D: torch.Tensor, tracker: _PositionTracker | None, positions: str):
    """A forward hook that adds ``vector_D`` to the module's output (a tensor or a tuple whose
    first item is the hidden state [..., T, D]) at the chosen positions."""
    cast: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        key = (hidden.dtype, hidden.device)
        if key not in cast:
            cast[key] = vector_D.to(device=hidden.device, dtype=hidden.dtype)
        delta = cast[key]
        if tracker is not None:
            keep_T = tracker.mask(hidden.shape[-2], positions, hidden.device)
            delta = keep_T[:, None].to(hidden.dtype) * delta
        steered = hidden + delta
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def _summed(vectors: SteeringVector | Iterable[SteeringVector]) -> dict[Layer, torch.Tensor]:
    """One vector per layer: the sum of every given vector at that layer."""
    items = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not items or not all(isinstance(v, SteeringVector) for v in items):
        raise InputError("steer: give a SteeringVector or a list of them")
    total: dict[Layer, torch.Tensor] = {}
    for item in items:
        for layer, vector in item.layer_activations.items():
            total[layer] = total[layer] + vector if layer in total else vector.clone()
    return total


@contextlib.contextmanager
def steer(
    model: nn.Module,
    vectors: SteeringVector | Iterable[SteeringVector],
    *,
    multiplier: float = 1.0,
    positions: str = "all",
) -> Iterator[None]:
    """Add ``multiplier * vector`` to the residual stream of ``model`` inside the ``with`` block.

    ``vectors``: one :class:`SteeringVector` or several (summed where they share a layer); each
    layer is hooked where :mod:`ssae_core.lm.embed` reads it (block output, or final-norm output).
    ``positions``: ``all``, ``prompt`` or ``generated`` (see the module docstring). Works with
    ``model(...)`` and ``model.generate(...)``, batched with left padding, with or without the KV
    cache. Every hook is removed on exit, also when the block raises. Contexts may be nested.
    """
    if positions not in POSITIONS:
        raise InputError(f"positions {positions!r}: use one of {', '.join(POSITIONS)}")
    if not math.isfinite(float(multiplier)):
        raise InputError(f"multiplier {multiplier!r}: must be a finite number")
    total = _summed(vectors)
    config = model.config
    name = getattr(config, "name_or_path", "?")
    width = getattr(text_config(config), "hidden_size", None)
    n_layers = num_layers(config)
    targets: list[tuple[nn.Module, torch.Tensor]] = []
    for layer, vector in total.items():
        check_layer(layer, n_layers, name)
        if width is not None and vector.numel() != width:
            raise InputError(
                f"steering vector of width {vector.numel()} for model {name} of width {width}; "
                "use vectors learned from this model's embeddings"
            )
        module = final_norm(model) if layer is None else decoder_blocks(model)[layer]
        targets.append((module, vector * float(multiplier)))

    tracker = None if positions == "all" else _PositionTracker()
    handles = []
    try:
        if tracker is not None:
            body = getattr(model, "base_model", model)
            handles.append(body.register_forward_pre_hook(tracker, with_kwargs=True))
        for module, vector in targets:
            # prepend: run before transformers' own output-capturing hooks, so that
            # output_hidden_states reports the steered states
            hook = _adder(vector, tracker, positions)
            handles.append(module.register_forward_hook(hook, prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- generation


# --------------------------------------------------------------------------- files


# --------------------------------------------------------------------------- from a trained model


# --------------------------------------------------------------------------- command line
