"""Steering vectors of one concept for behavioural steering: one per method and run member.

For ``ssae`` and ``aff``, one per run member: the decoder row matched to the concept
(:func:`~ssae_core.evaluation.steering_accuracy.learned_directions`; a concept whose label is
constant, as in lang and truthfulqa, is matched by the cosine of each row with the mean training
shift) oriented along +concept; ``md``: the normalised mean training shift. Each comes with its
signed least-squares scale alpha_fit (the typical size of the concept's shift along the vector).
The behaviour stage steers with ``strength x typical residual norm x v``
(:mod:`~ssae_core.evaluation.behaviour.protocol`), the same length for every method, so methods
differ only in direction; ``steering_vector(multiplier)`` gives ``multiplier x alpha_fit x v``
(the inspection page's unit). The layer is the one the
embeddings were read at (their ``layer`` metadata; ``final`` = the output of the final norm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ssae_core.errors import InputError
from ssae_core.evaluation.steering_accuracy import (
    MEAN_DIFFERENCE,
    MERGE_THRESHOLD,
    SteeringModel,
    learned_directions,
    mean_difference_directions,
)
from ssae_core.io import EmbeddingTable
from ssae_core.lm.layers import Layer, layer_name, parse_layer
from ssae_core.lm.steer import SteeringVector
from ssae_core.metrics import rounded, seed_summary


class ConceptVector(NamedTuple):
    """One method's (one member's) steering vector for one concept."""

    method: str
    seed: int | None
    """The member's seed; None for md (one deterministic vector)."""
    layer: Layer
    unit_D: np.ndarray
    """Unit direction, oriented along +concept, raw embedding units."""
    alpha: float
    """Signed least-squares scale of the concept's training shifts on ``unit_D``."""
    latent: int | None
    """The matched latent (learnt models)."""
    match_score: float | None
    """Its match score (correlation, or cosine with the mean shift; learnt models)."""

    def steering_vector(self, multiplier: float) -> SteeringVector:
        """``multiplier * alpha * unit`` at this vector's layer."""
        return self.scaled(float(multiplier) * self.alpha, multiplier=repr(multiplier))

    def scaled(self, scale: float, **metadata: str) -> SteeringVector:
        """``scale * unit`` at this vector's layer."""
        evidence = {"latent": self.latent, "match_score": self.match_score}
        meta = {
            "method": self.method,
            "layer": layer_name(self.layer),
            "seed": str(self.seed),
            "alpha_fit": repr(self.alpha),
            **{k: repr(v) for k, v in evidence.items() if v is not None},
            **metadata,
        }
        values = float(scale) * np.asarray(self.unit_D, np.float64)
        return SteeringVector({self.layer: values.astype(np.float32)}, meta)


def embedding_layer(table: EmbeddingTable, what: str) -> Layer:
    """The LM layer an embedding table was read at (its ``layer`` metadata)."""
    if "layer" not in table.metadata:
        raise InputError(
            f"{what}: the embeddings record no LM layer (synthetic data?); steer with LM "
            "embeddings from the extract_embeddings stage"
        )
    return parse_layer(table.metadata["layer"])


def concept_vectors(
    train: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]],
    concept: str,
    *,
    seeds: Sequence[int] | None = None,
    merge_threshold: float = MERGE_THRESHOLD,
    what: str = "embeddings",
) -> dict[str, list[ConceptVector]]:
    """``{"md": [vector], method: [one vector per member]}`` for ``concept``, from the training
    rows ``train`` (see the module docstring). ``seeds`` keeps only members with those seeds."""
    concepts = list(train.concepts or [])
    if concept not in concepts:
        raise InputError(f"{what}: no concept {concept!r} (concepts: {concepts or 'none'})")
    if len(train) == 0:
        raise InputError(f"{what}: no training pairs to fit the {concept} vectors on")
    k = concepts.index(concept)
    layer = embedding_layer(train, what)
    if MEAN_DIFFERENCE in runs:
        raise InputError(f"method name {MEAN_DIFFERENCE!r} is reserved for the mean difference")
    md = mean_difference_directions(train)
    if not np.isfinite(md.alpha_K[k]):
        raise InputError(f"{what}: concept {concept!r} has no single-concept training pair")
    md_vector = ConceptVector(
        MEAN_DIFFERENCE, None, layer, md.vectors_KD[k], float(md.alpha_K[k]), None, None
    )
    out = {MEAN_DIFFERENCE: [md_vector]}
    for method, members in runs.items():
        chosen = [m for m in members if seeds is None or m.config.get("seed") in seeds]
        if not chosen:
            have = [m.config.get("seed") for m in members]
            raise InputError(f"method {method!r}: no member with seeds {seeds} (has {have})")
        vectors = []
        for model in chosen:
            seed = model.config.get("seed")
            recorded = (model.config.get("provenance") or {}).get("layer")
            if recorded is not None and parse_layer(recorded) != layer:
                raise InputError(
                    f"method {method!r} seed {seed}: trained on embeddings of layer {recorded}, "
                    f"but {what} are of layer {layer_name(layer)}; use runs of these embeddings"
                )
            if int(model.config.get("dim", train.dim)) != train.dim:
                raise InputError(
                    f"method {method!r} seed {seed}: width {model.config['dim']} != embedding "
                    f"width {train.dim}; use runs trained on {what}"
                )
            fitted = learned_directions(model, train, merge_threshold=merge_threshold)
            alpha = float(fitted.alpha_K[k])
            if not math.isfinite(alpha):
                raise InputError(f"method {method!r} seed {seed}: no latent matched {concept!r}")
            matching = fitted.matching
            latent = int(matching.latent_K[k]) if matching is not None else None
            score = float(matching.score_K[k]) if matching is not None else None
            vectors.append(
                ConceptVector(method, seed, layer, fitted.vectors_KD[k], alpha, latent, score)
            )
        out[method] = vectors
    return out


def vector_report(members: Sequence[ConceptVector], reference: ConceptVector | None = None) -> dict:
    """Seeds, fitted alphas, matched latents and (learnt models) the cosine of each vector with
    ``reference`` (the md vector): how far the learnt direction is from the mean shift."""
    learnt = members[0].seed is not None
    cosines = None
    if learnt and reference is not None:
        cosines = seed_summary([float(m.unit_D @ reference.unit_D) for m in members])
    return {
        "seeds": [m.seed for m in members] if learnt else None,
        "alpha_fit": seed_summary([m.alpha for m in members]),
        "latent": [m.latent for m in members] if learnt else None,
        "match_score": [rounded(m.match_score) for m in members] if learnt else None,
        "cosine_to_md": cosines,
    }
