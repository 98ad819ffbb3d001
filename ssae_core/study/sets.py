"""The pair sets' embeddings as the study reads them."""

from __future__ import annotations

import numpy as np

from ssae_core import outliers
from ssae_core.io import EmbeddingTable, load_embeddings, save_embeddings
from ssae_core.study.config import EntangleConfig, StudyConfig
from ssae_core.study.layout import LayerLayout
from ssae_core.synthetic import entangle


def write_entangled(config: EntangleConfig, at: LayerLayout, name: str) -> EmbeddingTable:
    """The robustness variant of one pair set at one layer: one seeded, dense invertible D x D
    map (params.yaml ``entangle``) applied to z and z~, written to ``at.entangled(name)``."""
    table = load_embeddings(at.embeddings(name))
    mixed = entangle(table, seed=config.seed, max_condition=config.max_condition)
    save_embeddings(mixed, at.entangled(name))
    return mixed


def load_set(
    study: StudyConfig, at: LayerLayout, name: str, *, entangled: bool = False
) -> EmbeddingTable:
    """The embeddings of one pair set at one layer as the study uses them: a seeded half of the
    pairs reversed.

    Pair order carries no information (z~ -> z is as much a pair as z -> z~), and it matters: in
    lang, gender, corr and truthfulqa every pair moves the same way (shift +1), so the concept
    direction is the MEAN shift, which the normalisation and the BatchNorm of the codes subtract.
    A model then can only learn the variation around it. Reading half of the pairs backwards
    makes the concept the main axis of variation (the cosine of each learnt vector with the
    mean-difference vector is in the behaviour section of metrics/REPORT.md) and leaves the
    steering scores unchanged (they are signed per pair).

    With ``study.drop_outliers``, the pairs whose shift norm exceeds ``study.outlier_factor`` x
    the median shift norm of the training split are dropped from every split.
    """
    path = at.entangled(name) if entangled else at.embeddings(name)
    table = load_embeddings(path).reoriented(study.reverse_fraction, study.reverse_seed)
    table.metadata["path"] = at.relative(path)
    if study.drop_outliers:
        table = table.select(~outlier_pairs(table, study.outlier_factor))
    return table


def outlier_pairs(table: EmbeddingTable, factor: float) -> np.ndarray:
    """bool [N]: the pairs whose shift norm exceeds ``factor`` x the median shift norm of the
    table's training split (what ``study.drop_outliers`` drops)."""
    train = table.subset("train").delta
    return outliers.above(table.delta, outliers.threshold(train, factor))
