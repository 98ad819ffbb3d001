"""Steering a causal LM: add ``alpha * v`` to its residual stream while it runs, and export vectors.

Where a vector is added: exactly where :mod:`ssae_core.embed` reads embeddings.

- layer ``L`` (int): the output of decoder block ``L`` (0-based), i.e. ``hidden_states[L + 1]``, by
  a forward hook on ``lm.decoder_blocks(model)[L]``;
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

Files: :func:`save_steering_vector` writes safetensors ``{layer: vector}`` (keys ``"final"`` or
the block index as a string) with string metadata (model, layer, concept, latent, method,
alpha...); :func:`load_steering_vectors` reads it (and llama.cpp control vectors) back. Vectors are
stored already scaled (``alpha * v``), so ``multiplier=1`` reproduces the steering.

llama.cpp control vectors (:func:`export_gguf`), as llama.cpp reads them
(``common_control_vector_load_one`` and ``llama_adapter_cvec`` in its sources): a GGUF file with
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model type, e.g.
``llama``; informative only) and ``controlvector.layer_count`` (int32, the number of direction
tensors; informative only), and one 1-D float32 tensor ``direction.{k}`` of length d per layer.
llama.cpp adds ``direction.{k}`` (times ``--control-vector-scaled`` strength) to the output of
block ``k`` counted from 0 (its ``l_out`` of layer ``il = k``), at every position, prompt included.
So the tensor name is our block index unchanged: block ``L`` -> ``direction.L``. ``k = 0`` is
rejected by llama.cpp, so block 0 cannot be exported, and neither can the final-norm position
(llama.cpp has no control vector after the output norm, and adding before it is not equivalent:
the norm rescales). Both raise :class:`InputError`; re-extract embeddings at a block layer >= 1.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssae_core import lm
from ssae_core.errors import InputError
from ssae_core.io import atomic_file

POSITIONS = ("all", "prompt", "generated")
FINAL = "final"
GGUF_ARCH = "controlvector"
GGUF_TENSOR_PREFIX = "direction."
GGUF_METADATA_PREFIX = "ssae."
CACHE_ARGUMENTS = ("cache", "past_key_values")
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


def _as_vector(value: object, layer: Layer) -> torch.Tensor:
    if torch.is_tensor(value):
        vector = value.detach().to("cpu", torch.float32, copy=True)
    else:
        vector = torch.as_tensor(np.asarray(value, dtype=np.float32))
    if vector.dim() != 1 or vector.numel() == 0:
        raise InputError(
            f"steering vector for layer {lm.layer_name(layer)}: shape {tuple(vector.shape)}; "
            "give one vector of the model's width per layer"
        )
    if not torch.isfinite(vector).all():
        raise InputError(f"steering vector for layer {lm.layer_name(layer)}: has NaN or inf")
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
                raise InputError(f"steering vector: layer {lm.layer_name(layer)} given twice")
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

    def save(self, path: str | Path) -> Path:
        return save_steering_vector(self, path)

    def export_gguf(self, path: str | Path, *, model_hint: str | None = None) -> Path:
        return export_gguf(self, path, model_hint=model_hint)


# --------------------------------------------------------------------------- hooks


def final_norm(model: nn.Module) -> nn.Module:
    """The norm whose output is ``last_hidden_state``: the sibling of the decoder blocks named
    ``norm`` (Llama, Mistral, Qwen, Gemma), ``final_layernorm`` (Phi), ``ln_f`` (GPT-2)..."""
    blocks = lm.decoder_blocks(model)
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
    layer is hooked where :mod:`ssae_core.embed` reads it (block output, or final-norm output).
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
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    width = getattr(text_config, "hidden_size", None)
    n_layers = lm.num_layers(config)
    targets: list[tuple[nn.Module, torch.Tensor]] = []
    for layer, vector in total.items():
        lm.check_layer(layer, n_layers, name)
        if width is not None and vector.numel() != width:
            raise InputError(
                f"steering vector of width {vector.numel()} for model {name} of width {width}; "
                "use vectors learned from this model's embeddings"
            )
        module = final_norm(model) if layer is None else lm.decoder_blocks(model)[layer]
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


def complete(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    template: str | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), batched with left padding.

    Run it inside :func:`steer` to get steered continuations.
    """
    from ssae_core.embed import left_pad, pad_token_id, tokenize

    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens {max_new_tokens}: must be at least 1")
    ids = tokenize(tokenizer, list(prompts), template=template)
    for prompt, row in zip(prompts, ids, strict=True):
        if not row:
            raise InputError(f"prompt {prompt!r}: has no tokens; give some text")
    pad = pad_token_id(tokenizer)
    settings = copy.deepcopy(model.generation_config)
    for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        if hasattr(settings, key):
            setattr(settings, key, None)
    settings.do_sample = False
    settings.num_beams = 1
    settings.max_new_tokens = max_new_tokens
    settings.max_length = None
    settings.pad_token_id = pad
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(ids), batch_size):
        input_ids_BT, mask_BT = left_pad(ids[start : start + batch_size], pad)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids_BT.to(device),
                attention_mask=mask_BT.to(device),
                generation_config=settings,
            )
        new = out[:, input_ids_BT.shape[1] :].cpu()
        texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts


# --------------------------------------------------------------------------- files


def save_steering_vector(vector: SteeringVector, path: str | Path) -> Path:
    """Write ``{layer: vector}`` (keys ``final`` or a block index) and metadata, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {lm.layer_name(k): v.contiguous() for k, v in vector.layer_activations.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(vector.metadata))
    return path


def load_steering_vectors(path: str | Path) -> SteeringVector:
    """A vector saved by :func:`save_steering_vector`, or a llama.cpp control vector (``.gguf``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a .safetensors or .gguf steering vector")
    if path.suffix == ".gguf":
        return _load_gguf(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path}: not a safetensors steering vector ({exc})") from None
    try:
        return SteeringVector(tensors, metadata)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def check_gguf_exportable(vector: SteeringVector) -> None:
    """Raise :class:`InputError` unless every layer of ``vector`` is a block llama.cpp can steer."""
    for layer in vector.layer_activations:
        if layer is None or layer == 0:
            where = "the final-norm output" if layer is None else "the output of block 0"
            raise InputError(
                f"llama.cpp control vectors cannot steer {where} (they add to block outputs "
                "1..n-1); export a vector of a block layer >= 1 (embed with --layer L)"
            )


def export_gguf(vector: SteeringVector, path: str | Path, *, model_hint: str | None = None) -> Path:
    """Write a llama.cpp control vector: tensor ``direction.L`` = the vector of block ``L``.

    Use it with ``llama-cli -m MODEL.gguf --control-vector FILE.gguf`` (strength 1 reproduces
    ``multiplier=1``; ``--control-vector-scaled FILE.gguf S`` multiplies by ``S``). The vector's
    metadata is kept as ``ssae.*`` string keys. See the module docstring for the conventions.
    """
    import gguf

    check_gguf_exportable(vector)
    path = Path(path)
    hint = model_hint or vector.metadata.get("model_type") or vector.metadata.get("model", "")
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_int32(f"{GGUF_ARCH}.layer_count", len(vector.layer_activations))
        for key, value in vector.metadata.items():
            writer.add_string(f"{GGUF_METADATA_PREFIX}{key}", value)
        for layer, values in sorted(vector.layer_activations.items()):
            writer.add_tensor(f"{GGUF_TENSOR_PREFIX}{layer}", values.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _load_gguf(path: Path) -> SteeringVector:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, struct.error...
        raise InputError(f"{path}: not a GGUF file ({exc})") from None
    arch = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch is None or arch.contents() != GGUF_ARCH:
        raise InputError(
            f"{path}: not a llama.cpp control vector (architecture is not controlvector)"
        )
    metadata = {
        key[len(GGUF_METADATA_PREFIX) :]: str(field.contents())
        for key, field in reader.fields.items()
        if key.startswith(GGUF_METADATA_PREFIX)
    }
    hint = reader.fields.get(f"{GGUF_ARCH}.model_hint")
    if hint is not None:
        metadata.setdefault("model_type", str(hint.contents()))
    vectors: dict[Layer, torch.Tensor] = {}
    for tensor in reader.tensors:
        suffix = tensor.name.removeprefix(GGUF_TENSOR_PREFIX)
        if not tensor.name.startswith(GGUF_TENSOR_PREFIX) or not suffix.isdigit() or suffix == "0":
            raise InputError(f"{path}: tensor {tensor.name!r} is not direction.N with N >= 1")
        values = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
        layer = int(suffix)
        # llama.cpp sums repeated directions of one layer; so do we
        vectors[layer] = vectors[layer] + values if layer in vectors else values
    if not vectors:
        raise InputError(f"{path}: control vector holds no direction tensors")
    return SteeringVector(vectors, metadata)


# --------------------------------------------------------------------------- from a trained model


_FROM_PROVENANCE: Any = object()


def vector_from_model(
    model_dir: str | Path,
    *,
    latent: int | None = None,
    concept: str | None = None,
    matching: Mapping[str, int] | None = None,
    alpha: float = 1.0,
    layer: object = _FROM_PROVENANCE,
) -> SteeringVector:
    """``alpha`` x the unit steering vector (decoder column, raw embedding units) of one latent.

    Pick the latent by index (``latent``) or by ``concept`` name; a name needs a ``matching``
    ``{concept: latent}`` (else the model config's ``concept_latents``; a model with one latent
    and one concept matches trivially). Decoder columns have an arbitrary sign: try both signs of
    ``alpha``. The layer is the one the training embeddings were read at (``provenance.layer``:
    ``final`` or a block index); ``layer`` overrides it.
    """
    from ssae_core.runs import load_model

    model = load_model(model_dir)
    config = model.config
    vectors_MD = model.steering_vectors
    index = _pick_latent(config, vectors_MD.shape[0], latent, concept, matching, model_dir)
    provenance = config.get("provenance") or {}
    if layer is _FROM_PROVENANCE:
        if "layer" not in provenance:
            raise InputError(
                f"{model_dir}: its embeddings record no LM layer (synthetic data?); pass a layer "
                "to steer an LM with it"
            )
        layer = provenance["layer"]
    resolved = parse_layer(layer)
    if not math.isfinite(float(alpha)):
        raise InputError(f"alpha {alpha!r}: must be a finite number")
    concepts = config.get("concepts") or []
    if concept is None and matching is None and len(concepts) == vectors_MD.shape[0] == 1:
        concept = concepts[0]
    metadata = {
        "model": str(provenance.get("model", "")),
        "revision": str(provenance.get("revision", "")),
        "layer": lm.layer_name(resolved),
        "template": str(provenance.get("template", "")),
        "latent": str(index),
        "concept": concept or "",
        "method": str(config.get("method", "")),
        "seed": str(config.get("seed", "")),
        "alpha": repr(float(alpha)),
        "scale": "vector = alpha * unit decoder column in raw embedding units",
        "source": str(model_dir),
    }
    return SteeringVector({resolved: float(alpha) * vectors_MD[index]}, metadata)


def _pick_latent(
    config: Mapping[str, Any],
    num_latents: int,
    latent: int | None,
    concept: str | None,
    matching: Mapping[str, int] | None,
    model_dir: object,
) -> int:
    if (latent is None) == (concept is None):
        raise InputError("give exactly one of latent (an index) and concept (a name)")
    if concept is not None:
        concepts = config.get("concepts") or []
        if concept not in concepts:
            known = ", ".join(concepts) if concepts else "none"
            raise InputError(f"concept {concept!r}: not in {model_dir} (concepts: {known})")
        matching = matching if matching is not None else config.get("concept_latents")
        if matching is None and len(concepts) == num_latents == 1:
            matching = {concept: 0}
        if not matching or concept not in matching:
            raise InputError(
                f"concept {concept!r}: {model_dir} has {num_latents} latents and no matching of "
                "concepts to latents; pick one with --latent (see `ssae encode`)"
            )
        latent = matching[concept]
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < num_latents:
        raise InputError(f"latent {latent!r}: {model_dir} has latents 0..{num_latents - 1}")
    return latent


# --------------------------------------------------------------------------- command line


STEER_EXAMPLE = """\
example (after `dvc repro`, from the repository root; models/study/lang/aff is the aff run of
the lang set, English -> French nouns: one concept, so one latent, latent 0):
  ssae steer models/study/lang/aff/seed-0 --lm models/lm --latent 0 --alpha 30 \\
      --prompt "My favourite food is" --max-new-tokens 16
  ssae steer models/study/lang/aff/seed-0 --latent 0 --alpha 30 --positions generated \\
      --prompt "The weather today is" --prompt "My house has a" --max-new-tokens 30
  ssae steer models/study/lang/aff/seed-0 --latent 0 --alpha 30 --export lang.safetensors
SSAE runs of the selected grid cell (metrics/udr.json) are in models/study/SET/grid/lr-LR/,
one folder per budget and seed (eps-0.25_seed-0...). `ssae train` trains your own.

Decoder columns have an arbitrary sign: if the text moves away from the concept, flip --alpha.
alpha is in embedding units (the fitted size of each concept's shift, alpha_fit, is listed in
metrics/behaviour.json and metrics/REPORT.md). The vector is added where the training embeddings
were read (the final-norm output by default, or the output of block L). --export-gguf needs a
block layer >= 1 (llama.cpp control vectors add to block outputs); use it with
`llama-cli -m MODEL.gguf --control-vector FILE.gguf`.
"""


def add_steer_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ssae steer`` on the ``ssae`` subcommand parser."""
    from ssae_core.cli import add_device_arguments

    p = sub.add_parser(
        "steer",
        help="generate text with and without a latent's steering vector; export the vector",
        description="Add alpha x (unit steering vector of one latent of a trained model) to the "
        "LM's residual stream at the layer its embeddings were read from, and print greedy "
        "continuations of each prompt without and with steering. The vector can be saved as "
        "safetensors (loadable by ssae_core.steer.load_steering_vectors) or as a llama.cpp "
        "control vector.",
        epilog=STEER_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", help="a trained model folder (e.g. runs/lang/seed-0)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latent", type=int, help="index of the latent whose vector is used")
    which.add_argument(
        "--concept",
        help="concept name, for models with one latent per concept and a recorded matching",
    )
    p.add_argument(
        "--alpha",
        type=float,
        required=True,
        help="scale of the unit vector, in raw embedding units (norms: ~50 for the final normed "
        "state of SmolLM2); the sign picks the direction",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="text to continue (repeat for several prompts); optional with --export",
    )
    p.add_argument(
        "--lm",
        default=None,
        help="the language model: hub id, local folder, or 'embedded' (default: the model "
        "recorded with the training embeddings)",
    )
    p.add_argument(
        "--positions",
        choices=POSITIONS,
        default="all",
        help="steer every token, only the prompt's, or only generated tokens "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=20, help="tokens to generate (default: %(default)s)"
    )
    p.add_argument(
        "--template",
        default=None,
        help="prompt template with {text}, or 'chat' (default: the template recorded with the "
        "training embeddings, usually none; '{text}' forces the raw prompt)",
    )
    add_device_arguments(p)
    p.add_argument("--export", metavar="FILE", help="also save the vector as safetensors")
    p.add_argument(
        "--export-gguf",
        metavar="FILE",
        help="also save it as a llama.cpp control vector (block layers >= 1 only)",
    )
    p.set_defaults(func=run_steer)
    return p


def _default_lm(recorded: str) -> str | None:
    if not recorded:
        return None
    return lm.EMBEDDED if recorded.startswith(f"{lm.EMBEDDED}:") else recorded


def run_steer(args: argparse.Namespace) -> None:
    """``ssae steer``: print unsteered vs steered continuations, write the requested exports."""
    if not args.prompt and not (args.export or args.export_gguf):
        raise InputError("give --prompt TEXT to generate, or --export/--export-gguf FILE")
    vector = vector_from_model(
        args.model_dir, latent=args.latent, concept=args.concept, alpha=args.alpha
    )
    if args.export_gguf:
        check_gguf_exportable(vector)
    net = tokenizer = None
    if args.prompt:
        recorded = vector.metadata["model"]
        name = args.lm if args.lm is not None else _default_lm(recorded)
        if name is None:
            raise InputError(f"{args.model_dir}: records no language model; give --lm")
        source = lm.resolve_model(name)
        if recorded and source.name != recorded:
            print(
                f"warning: the vector comes from embeddings of {recorded}; steering {source.name}",
                file=sys.stderr,
            )
        net = lm.load_model(source, device=args.device, dtype=args.dtype)
        tokenizer = lm.load_tokenizer(source)
        vector.metadata["model_type"] = str(getattr(net.config, "model_type", ""))
    if args.export:
        save_steering_vector(vector, args.export)
        print(f"wrote {args.export}")
    if args.export_gguf:
        export_gguf(vector, args.export_gguf)
        print(f"wrote {args.export_gguf}")
    if net is None:
        return
    template = args.template
    if template is None:
        template = vector.metadata.get("template") or None
    plain = complete(
        net, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens, template=template
    )
    with steer(net, vector, positions=args.positions):
        steered = complete(
            net, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens, template=template
        )
    label = args.concept if args.concept is not None else f"latent {vector.metadata['latent']}"
    print(
        f"steering: {label}, alpha {args.alpha:g}, layer {vector.metadata['layer']}, "
        f"positions {args.positions}"
    )
    for prompt, before, after in zip(args.prompt, plain, steered, strict=True):
        print(f"\nprompt:    {prompt}")
        print(f"unsteered: {before}")
        print(f"steered:   {after}")


__all__ = [
    "FINAL",
    "POSITIONS",
    "SteeringVector",
    "add_steer_parser",
    "check_gguf_exportable",
    "complete",
    "export_gguf",
    "final_norm",
    "load_steering_vectors",
    "parse_layer",
    "run_steer",
    "save_steering_vector",
    "steer",
    "vector_from_model",
]
