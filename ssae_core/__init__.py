"""Sparse Shift Autoencoders (SSAE): identifiable steering vectors from multi-concept shifts.

The public API, importable from ``ssae_core`` (each name is loaded on first use, so that
``import ssae_core`` stays cheap):

- the model and its training: :class:`StackedSSAE`, :class:`ShiftAutoencoder`,
  :class:`TrainConfig`, :func:`train`, :func:`train_run`, :func:`load_run`, :func:`load_model`,
  :func:`encode_table`;
- identifiability: :func:`mcc`, :func:`udr`, :func:`state_coding` (the full-rank coding of
  labelled pairs);
- evaluation: :func:`evaluate_steering` (cosine), :func:`evaluate_probe_steering` (held-out
  probes: flip rate, selectivity), :func:`bootstrap_interval` (resampling whole entities);
- your own pairs: :class:`CustomPairsConfig`, :func:`write_custom_pairs` (``ssae pairs``);
- the language model: :func:`load_lm`, :func:`extract_embeddings`, :func:`embed_texts`,
  :func:`steer`, :func:`complete`, :func:`at_typical_strength` (``ssae steer --strength``'s
  unit), :class:`SteeringVector`, :func:`vector_from_model`, :func:`concept_vector` (the latent
  matched to a labelled concept, oriented), :func:`with_evidence` (a model vector's
  cross-seed stability, concept match and fitted alpha), :func:`mean_difference_vector`,
  :func:`save_steering_vector`, :func:`load_steering_vectors`, :func:`export_gguf`;
- files and configuration: :class:`EmbeddingTable`, :func:`load_embeddings`,
  :func:`load_pairs`, :func:`load_config`, :class:`InputError`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("ssae")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

_API = {
    "StackedSSAE": "ssae_core.model",
    "ShiftAutoencoder": "ssae_core.model",
    "TrainConfig": "ssae_core.train",
    "train": "ssae_core.train",
    "train_run": "ssae_core.runs",
    "load_run": "ssae_core.runs",
    "load_model": "ssae_core.runs",
    "encode_table": "ssae_core.runs",
    "mcc": "ssae_core.metrics",
    "udr": "ssae_core.metrics",
    "bootstrap_interval": "ssae_core.metrics",
    "state_coding": "ssae_core.evaluation.identifiability",
    "evaluate_steering": "ssae_core.evaluation.steering_accuracy",
    "evaluate_probe_steering": "ssae_core.evaluation.probes",
    "extract_embeddings": "ssae_core.lm.embed",
    "embed_texts": "ssae_core.lm.embed",
    "steer": "ssae_core.lm.steer",
    "SteeringVector": "ssae_core.lm.steer",
    "vector_from_model": "ssae_core.lm.vector_files",
    "save_steering_vector": "ssae_core.lm.vector_files",
    "load_steering_vectors": "ssae_core.lm.vector_files",
    "export_gguf": "ssae_core.lm.vector_files",
    "mean_difference_vector": "ssae_core.evaluation.mean_difference",
    "with_evidence": "ssae_core.evaluation.vector_evidence",
    "concept_vector": "ssae_core.evaluation.vector_evidence",
    "load_lm": "ssae_core.lm.loading",
    "complete": "ssae_core.lm.tokens",
    "at_typical_strength": "ssae_core.evaluation.behaviour.language",
    "CustomPairsConfig": "ssae_core.datasets.custom",
    "write_custom_pairs": "ssae_core.datasets.custom",
    "EmbeddingTable": "ssae_core.io",
    "load_embeddings": "ssae_core.io",
    "load_pairs": "ssae_core.io",
    "load_config": "ssae_core.config",
    "InputError": "ssae_core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ssae_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
