"""How far a steering vector can be trusted: the evidence its file records, and what
``ssae vector show`` prints of any vector file.

The member's own folder gives its data hash, budget and status
(:func:`~ssae_core.lm.vector_files.record_evidence`); this module adds what needs the rest of
its run and its training data (:func:`with_evidence`):

- ``seeds``, ``latent_stability_mean``, ``latent_stability_min``: where the run folder holds
  several seeds of the member's method and sparsity, the mean and minimum over the other seeds of
  the |cosine| of the latent's decoder column with its one-to-one match there (the inspection
  page's stability, :func:`~ssae_core.evaluation.inspection.cross_seed_stability`), and
  ``decoder_udr``, the median pairwise decoder MCC of those seeds (as ``metrics/udr.json``);
- ``matched_concept``, ``match_score``, ``matched_by``, ``alpha_fit``: where the training
  embeddings the member records are at hand and labelled, the concept its latent is matched to
  on the training pairs (:func:`~ssae_core.evaluation.steering_accuracy.match_concepts`), the
  |score| of that match (the |correlation| of its code with the concept's labels, one term of
  the MCC, or the |cosine| with the concept's mean shift), and the least-squares scale of the
  concept's training shifts along the vector's unit direction
  (:func:`~ssae_core.evaluation.steering_accuracy.fit_alpha`; its sign says whether the file's
  direction points along +concept).

A field that does not apply (one seed, no labels, a latent matched to no concept) is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ssae_core.errors import InputError
from ssae_core.evaluation.inspection import cross_seed_stability
from ssae_core.evaluation.steering_accuracy import fit_alpha, learned_directions
from ssae_core.io import EmbeddingTable, load_embeddings, written_by
from ssae_core.lm.layers import layer_name
from ssae_core.lm.steer import SteeringVector
from ssae_core.lm.vector_files import (
    EVIDENCE_KEYS,
    VECTOR_COMMAND,
    load_steering_vectors,
    vector_from_model,
)
from ssae_core.metrics import pairwise, rounded, udr, vector_mcc
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import RUN_FILE, load_model, load_run, training_rows

EVIDENCE_NOTE = (
    "evidence: recorded by ssae (none: does not apply to this vector, or the file was written "
    "before the field existed)"
)
FOREIGN_NOTE = (
    "evidence: absent (not written by ssae: method, data hash, budget, status, stability, "
    "concept match and fitted alpha are unknown)"
)


def _number(value: float) -> str:
    return repr(rounded(float(value)))


def run_peers(model: ShiftAutoencoder, model_dir: str | Path) -> list[ShiftAutoencoder]:
    """The members of ``model``'s run folder with its method and sparsity (``model`` among them),
    or just ``model`` when its folder is not in a run folder."""
    folder = Path(model_dir)
    run = folder if (folder / RUN_FILE).exists() else folder.parent
    if not (run / RUN_FILE).exists():
        return [model]
    same = ("method", "sparsity", "latent_dim", "dim")
    members = [
        m for m in load_run(run) if all(m.config.get(k) == model.config.get(k) for k in same)
    ]
    seeds = [m.config.get("seed") for m in members]
    return members if model.config.get("seed") in seeds else [model]


def stability_evidence(model: ShiftAutoencoder, latent: int, model_dir: str | Path) -> dict:
    """Cross-seed stability of ``latent`` and the decoder UDR (module docstring); empty for a
    member without other seeds."""
    members = run_peers(model, model_dir)
    if len(members) < 2:
        return {}
    seeds = [m.config.get("seed") for m in members]
    stability = cross_seed_stability(
        [m.steering_vectors for m in members], seeds.index(model.config.get("seed"))
    )
    decoders = [m.net.W_dec_SMD.detach()[0].numpy() for m in members]
    return {
        "seeds": ",".join(str(s) for s in seeds),
        "latent_stability_mean": _number(stability.mean_M[latent]),
        "latent_stability_min": _number(stability.min_M[latent]),
        "decoder_udr": _number(udr(pairwise(decoders, vector_mcc))),
    }


def training_table(model: ShiftAutoencoder) -> EmbeddingTable | None:
    """The labelled training rows the member records (None: not at hand, or unlabelled)."""
    provenance = model.config.get("provenance") or {}
    source = provenance.get("embeddings")
    if not source or not Path(source).exists():
        return None
    try:
        table = load_embeddings(source)
        rows = training_rows(table, str(provenance.get("split", "train")), source)
    except InputError:
        return None
    labelled = rows.shift is not None and rows.concepts and len(rows)
    return rows if labelled and rows.dim == model.config.get("dim", rows.dim) else None


def label_evidence(
    model: ShiftAutoencoder, latent: int, train: EmbeddingTable | None = None
) -> dict:
    """The concept ``latent`` is matched to on the labelled training pairs (``train``, else
    :func:`training_table`), the match's |score|, how it was matched and the fitted alpha
    (module docstring); empty without labels or a match."""
    train = training_table(model) if train is None else train
    if train is None:
        return {}
    matching = learned_directions(model, train).matching
    concept = next((k for k, group in enumerate(matching.members) if latent in group), None)
    if concept is None:
        return {}
    unit_D = model.steering_vectors[latent].astype(np.float64)
    vectors_KD = np.tile(unit_D, (train.shift.shape[1], 1))
    alpha = fit_alpha(vectors_KD, train.delta, train.shift)[0][concept]
    return {
        "matched_concept": str(train.concepts[concept]),
        "match_score": _number(abs(matching.score_K[concept])),
        "matched_by": matching.by[concept],
        "alpha_fit": _number(alpha),
    }


def with_evidence(vector: SteeringVector, model_dir: str | Path) -> SteeringVector:
    """``vector`` (of one latent of the member at ``model_dir``, as
    :func:`~ssae_core.lm.vector_files.vector_from_model` makes it) with the evidence of its run
    and training data in its metadata."""
    return _with_evidence(vector, load_model(model_dir), model_dir, None)


def _with_evidence(
    vector: SteeringVector,
    model: ShiftAutoencoder,
    model_dir: str | Path,
    train: EmbeddingTable | None,
) -> SteeringVector:
    """:func:`with_evidence` of a loaded member (``train``: its training rows, if read)."""
    latent = int(vector.metadata["latent"])
    found = {**stability_evidence(model, latent, model_dir), **label_evidence(model, latent, train)}
    values = next(iter(vector.layer_activations.values()))
    if "alpha_fit" in found and float(values.double() @ _unit(model, latent)) < 0:
        found["alpha_fit"] = _number(-float(found["alpha_fit"]))  # the file points the other way
    return SteeringVector(dict(vector.layer_activations), {**vector.metadata, **found})


def _unit(model: ShiftAutoencoder, latent: int) -> torch.Tensor:
    """The latent's unit decoder column in raw embedding units (float64)."""
    return torch.from_numpy(model.steering_vectors[latent].astype(np.float64))


def concept_vector(model_dir: str | Path, concept: str) -> SteeringVector:
    """The unit steering vector of the latent matched to ``concept`` on the member's labelled
    training pairs (as :func:`label_evidence` matches it), oriented along +concept (the sign of
    its fitted alpha), with its evidence (:func:`with_evidence`)."""
    model = load_model(model_dir)
    train = training_table(model)
    if train is None:
        raise InputError(
            f"{model_dir}: its training embeddings are not at hand or carry no labels; pick "
            "the latent by index (vector_from_model(..., latent=K))"
        )
    if concept not in train.concepts:
        raise InputError(
            f"concept {concept!r}: not a concept of {model_dir}'s training pairs; one of "
            f"{', '.join(map(str, train.concepts))}"
        )
    matched = learned_directions(model, train).matching.members[list(train.concepts).index(concept)]
    if not matched:
        raise InputError(f"concept {concept!r}: no latent of {model_dir} is matched to it")
    found = label_evidence(model, matched[0], train)
    sign = 1.0 if float(found["alpha_fit"]) >= 0 else -1.0
    vector = vector_from_model(model_dir, latent=matched[0], alpha=sign)
    return _with_evidence(vector, model, model_dir, train)


# --------------------------------------------------------------------------- ssae vector show


def _evidence_lines(metadata: Mapping[str, str], ours: bool) -> list[str]:
    """One line per evidence field (ours), then every other metadata entry."""
    if not ours:
        return [FOREIGN_NOTE] + [
            f"metadata.{k}: {v or 'none'}" for k, v in sorted(metadata.items())
        ]
    lines = [EVIDENCE_NOTE] + [f"{k}: {metadata.get(k) or 'none'}" for k in EVIDENCE_KEYS]
    others = sorted(k for k in metadata if k not in EVIDENCE_KEYS)
    return lines + [f"{k}: {metadata[k] or 'none'}" for k in others]


def show_lines(path: str | Path) -> list[str]:
    """What ``ssae vector show`` prints of a vector file, one field per line: format, writer,
    model hint (GGUF), width, layers, norms, then the evidence (module docstring). A file that
    cannot be read as a vector is a one-line :class:`InputError`."""
    path = Path(path)
    vector = load_steering_vectors(path)
    ours = written_by(path) == VECTOR_COMMAND
    metadata = dict(vector.metadata)
    gguf = path.suffix == ".gguf"
    lines = [
        f"file: {path}",
        f"format: {'gguf (llama.cpp control vector)' if gguf else 'safetensors'}",
        f"written_by: {'ssae' if ours else 'not ssae'}",
    ]
    if gguf:
        lines.append(f"model_hint: {metadata.get('model_type') or 'absent'}")
        if not ours:
            metadata.pop("model_type", None)  # the hint itself, just shown
    lines.append(f"width: {vector.dim}")
    lines.append("layers: " + ",".join(layer_name(k) for k in vector.layer_activations))
    lines += [
        f"norm.{layer_name(k)}: {float(v.double().norm()):.6g}"
        for k, v in vector.layer_activations.items()
    ]
    return lines + _evidence_lines(metadata, ours)
