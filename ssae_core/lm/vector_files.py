"""Steering vectors on disk: safetensors files, llama.cpp control vectors, trained model folders.

Files: :func:`save_steering_vector` writes safetensors ``{layer: vector}`` (keys ``"final"`` or
the block index as a string) with string metadata (model, layer, concept, latent, method,
alpha...); :func:`load_steering_vectors` reads it (and llama.cpp control vectors) back. Vectors are
stored already scaled (``alpha * v``), so ``multiplier=1`` reproduces the steering.

llama.cpp control vectors (:func:`export_gguf`), as llama.cpp reads them
(``common_control_vector_load_one`` and ``llama_adapter_cvec`` in its sources): a GGUF file with
``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the architecture, the
model config's ``model_type``, e.g. ``llama``; llama.cpp ignores it, repeng's ``import_gguf``
requires it, so an export without a known architecture is refused) and
``controlvector.layer_count`` (int32, the number of direction tensors; informative only), and one
1-D float32 tensor ``direction.{k}`` of length d per layer.
llama.cpp adds ``direction.{k}`` (times ``--control-vector-scaled`` strength) to the output of
block ``k`` counted from 0 (its ``l_out`` of layer ``il = k``), at every position, prompt included.
So the tensor name is our block index unchanged: block ``L`` -> ``direction.L``. ``k = 0`` is
rejected by llama.cpp, so block 0 cannot be exported, and neither can the final-norm position
(llama.cpp has no control vector after the output norm, and adding before it is not equivalent:
the norm rescales). Both raise :class:`InputError`; re-extract embeddings at a block layer >= 1.
A negative block index (counted from the end) must be resolved against a model first
(:meth:`SteeringVector.resolved`): files record block indices as the model counts them.

**Evidence.** Every vector file records, as metadata strings, how far the vector can be trusted
(:data:`EVIDENCE_KEYS`): its method, model and layer; ``pairs_sha256``, the SHA-256 of the pair
table its embeddings were read from (as ``ssae embed`` records it); for a vector of a trained
member, its seed, L1 budget, budget ratio and status (the member's :class:`MemberRecord`), and,
from :mod:`ssae_core.evaluation.vector_evidence`, the cross-seed stability of its latent, the
run's decoder UDR, the concept its latent matches on the labelled training pairs with the match
score, and ``alpha_fit`` (the least-squares scale of the concept's training shifts along the
vector's unit direction). A field that does not apply is left out, never invented.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssae_core.errors import InputError
from ssae_core.io import OUTPUT_KEY, SHOWN_COMMANDS, output_stamp, safe_output
from ssae_core.lm import loading
from ssae_core.lm.layers import Layer, layer_name, num_layers, parse_layer
from ssae_core.lm.steer import SteeringVector
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import load_model
from ssae_core.tensor_files import load_tensors, save_tensors

VECTOR_COMMAND = "steering-vector"  # the stamp of every vector file (steer --export, vector md)
SHOWN_VECTOR_COMMANDS = SHOWN_COMMANDS[VECTOR_COMMAND]
GGUF_ARCH = "controlvector"
GGUF_TENSOR_PREFIX = "direction."
GGUF_METADATA_PREFIX = "ssae."
GGUF_FIX = (
    "give a llama.cpp control vector (as llama.cpp and repeng write them), or export it again "
    "with --export-gguf of `ssae vector md` or `ssae steer`"
)
EVIDENCE_KEYS = (
    "method",
    "model",
    "layer",
    "pairs_sha256",
    "seed",
    "budget",
    "budget_ratio",
    "status",
    "latent",
    "seeds",
    "latent_stability_mean",
    "latent_stability_min",
    "decoder_udr",
    "concept",
    "matched_concept",
    "match_score",
    "matched_by",
    "alpha_fit",
)
"""The metadata a vector file carries on how far it can be trusted (module docstring)."""


def save_steering_vector(
    vector: SteeringVector, path: str | Path, *, option: str = "--export"
) -> Path:
    """Write ``{layer: vector}`` (keys ``final`` or a block index) and metadata, atomically; an
    existing file is replaced only if it is a steering-vector file this tool wrote."""
    save_vector_files(vector, safetensors=path, option=option)
    return Path(path)


def save_vector_files(
    vector: SteeringVector,
    *,
    safetensors: str | Path | None = None,
    option: str = "--export",
    gguf: str | Path | None = None,
    model_hint: str | None = None,
) -> None:
    """Write ``vector`` as a safetensors file and/or a llama.cpp control vector (see
    :func:`export_gguf`), all or nothing: each is written beside its target first, and none
    replaces its target unless all were written (an existing file is replaced only if it is a
    steering-vector file this tool wrote)."""
    if gguf is not None:
        check_gguf_exportable(vector)
        hint = gguf_model_hint(vector, model_hint)
    with contextlib.ExitStack() as staged:
        if safetensors is not None:
            tmp = staged.enter_context(
                safe_output(safetensors, VECTOR_COMMAND, kind="file", option=option)
            )
            tensors = {layer_name(k): v for k, v in vector.layer_activations.items()}
            save_tensors(tensors, tmp, {**vector.metadata, **output_stamp(VECTOR_COMMAND)})
        if gguf is not None:
            tmp = staged.enter_context(
                safe_output(gguf, VECTOR_COMMAND, kind="file", option="--export-gguf")
            )
            _write_gguf(vector, tmp, hint)


def load_steering_vectors(path: str | Path) -> SteeringVector:
    """A vector saved by :func:`save_steering_vector`, or a llama.cpp control vector (``.gguf``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a .safetensors or .gguf steering vector")
    if path.suffix == ".gguf":
        return _load_gguf(path)
    tensors, metadata = load_tensors(path, fix=f"export it again ({SHOWN_VECTOR_COMMANDS})")
    metadata.pop(OUTPUT_KEY, None)
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise InputError(
                f"{path}: tensor {key} holds {str(tensor.dtype).removeprefix('torch.')}; a "
                "steering vector holds floats (float32, float16 or bfloat16): re-export it"
            )
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
        if layer < 0:
            raise InputError(
                f"layer {layer} counts from the end of a model: resolve it against the model "
                "before exporting (vector.resolved(model), or give --lm)"
            )


def gguf_model_hint(vector: SteeringVector, model_hint: str | None = None) -> str:
    """The architecture written as ``controlvector.model_hint``: ``model_hint``, else the
    vector's recorded ``model_type``; neither is a one-line :class:`InputError`."""
    hint = (model_hint or vector.metadata.get("model_type") or "").strip()
    if not hint:
        raise InputError(
            "llama.cpp control vector: the model's architecture is unknown (repeng requires "
            "controlvector.model_hint); give it as --model-hint (model_hint= in Python): the "
            "model config's model_type, e.g. llama"
        )
    return hint


def export_gguf(vector: SteeringVector, path: str | Path, *, model_hint: str | None = None) -> Path:
    """Write a llama.cpp control vector: tensor ``direction.L`` = the vector of block ``L``.

    Use it with ``llama-cli -m MODEL.gguf --control-vector FILE.gguf`` (strength 1 reproduces
    ``multiplier=1``; ``--control-vector-scaled FILE.gguf S`` multiplies by ``S``). The vector's
    metadata is kept as ``ssae.*`` string keys. ``controlvector.model_hint`` is ``model_hint``,
    else the vector's ``model_type`` metadata (:func:`gguf_model_hint`). See the module docstring
    for the conventions.
    """
    save_vector_files(vector, gguf=path, model_hint=model_hint)
    return Path(path)


def _write_gguf(vector: SteeringVector, path: Path, hint: str) -> None:
    """The control vector file of :func:`export_gguf` at ``path`` (a path made atomic)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
    writer.add_string(OUTPUT_KEY, VECTOR_COMMAND)
    writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
    writer.add_int32(f"{GGUF_ARCH}.layer_count", len(vector.layer_activations))
    for key, value in vector.metadata.items():
        if value:  # gguf's add_string drops an empty string silently: leave it out openly
            writer.add_string(f"{GGUF_METADATA_PREFIX}{key}", value)
    for layer, values in sorted(vector.layer_activations.items()):
        writer.add_tensor(f"{GGUF_TENSOR_PREFIX}{layer}", values.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def recorded_lm(recorded: str) -> str | None:
    """The model name to load for a recorded ``model`` metadata value (``embedded:...`` -> the
    embedded model; ``""`` -> None)."""
    if not recorded:
        return None
    return loading.EMBEDDED if recorded.startswith(f"{loading.EMBEDDED}:") else recorded


def recorded_model_config(vector: SteeringVector) -> Any | None:
    """The config of the model the vector records (``model`` metadata), or None when it records
    none or the config cannot be read here (a hub id offline, a folder since moved)."""
    name = recorded_lm(vector.metadata.get("model", ""))
    if name is None:
        return None
    try:
        source = loading.resolve_model(name, verbose=False)
        return loading.load_config(source)
    except InputError:
        return None


def with_model(vector: SteeringVector, config: Any) -> SteeringVector:
    """``vector`` as files record it for a known model: negative block indices resolved
    against ``config`` and the architecture in ``model_type``."""
    known = vector.resolved(num_layers(config))
    model_type = getattr(config, "model_type", None)
    if model_type:
        known.metadata["model_type"] = str(model_type)
    return known


def _load_gguf(path: Path) -> SteeringVector:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, struct.error...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable GGUF file ({reason}); {GGUF_FIX}") from None
    arch = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch is not None and arch.contents() != GGUF_ARCH:  # none: tensors only, still read
        raise InputError(
            f"{path}: not a llama.cpp control vector (architecture is not controlvector); "
            f"{GGUF_FIX}"
        )
    metadata = {
        key[len(GGUF_METADATA_PREFIX) :]: str(field.contents())
        for key, field in reader.fields.items()
        if key.startswith(GGUF_METADATA_PREFIX) and key != OUTPUT_KEY
    }
    hint = reader.fields.get(f"{GGUF_ARCH}.model_hint")
    if hint is not None:
        metadata.setdefault("model_type", str(hint.contents()))
    vectors: dict[Layer, torch.Tensor] = {}
    for tensor in reader.tensors:
        suffix = tensor.name.removeprefix(GGUF_TENSOR_PREFIX)
        if not tensor.name.startswith(GGUF_TENSOR_PREFIX) or not suffix.isdigit() or suffix == "0":
            raise InputError(
                f"{path}: tensor {tensor.name!r} is not direction.N with N >= 1; {GGUF_FIX}"
            )
        values = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
        layer = int(suffix)
        # llama.cpp sums repeated directions of one layer; so do we
        vectors[layer] = vectors[layer] + values if layer in vectors else values
    if not vectors:
        raise InputError(f"{path}: control vector holds no direction tensors; {GGUF_FIX}")
    return SteeringVector(vectors, metadata)


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
    ``final`` or a block index); ``layer`` overrides it (a negative block counts from the end of
    the model the vector is applied to, see :meth:`SteeringVector.resolved`). The metadata holds
    the member's evidence (:func:`record_evidence`); add its run's and training data's with
    :func:`ssae_core.evaluation.vector_evidence.with_evidence` before saving it.
    """
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
        "layer": layer_name(resolved),
        "template": str(provenance.get("template", "")),
        "latent": str(index),
        "concept": concept or "",
        "method": str(config.get("method", "")),
        "seed": str(config.get("seed", "")),
        "alpha": repr(float(alpha)),
        "scale": "vector = alpha * unit decoder column in raw embedding units",
        "source": str(model_dir),
        **record_evidence(model),
    }
    return SteeringVector({resolved: float(alpha) * vectors_MD[index]}, metadata)


def record_evidence(model: ShiftAutoencoder) -> dict[str, str]:
    """The evidence a member's folder holds: the hash of its data, and its budget and status
    (its :class:`MemberRecord`; none for a member trained before records existed)."""
    provenance = model.config.get("provenance") or {}
    out = {"pairs_sha256": str(provenance["pairs_sha256"])} if "pairs_sha256" in provenance else {}
    try:
        record = model.record
    except InputError:
        return out
    out["status"] = record.status
    for key in ("budget", "budget_ratio"):
        value = getattr(record, key)
        if value is not None:
            out[key] = repr(float(value))
    return out


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
