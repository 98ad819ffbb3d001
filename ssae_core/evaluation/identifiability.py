"""Identifiability of a trained run: MCC against known shifts, cross-seed MCC, UDR, and MCC
against the full-rank state coding of the pairs' labels.

The ``shift`` column codes a pair by concepts, and concepts may be linearly dependent: cat's 135
contrasts ``attribute:a->b`` are differences of only 27 independent value changes
(``a->c`` = ``a->b`` + ``b->c``). :func:`state_coding` codes the same pairs by the states of each
labelled variable instead: per variable one column per value except a reference value, with
entry 1[x~ has the value] - 1[x has it]. On cat that is 3 x 9 = 27 columns; on binary
(language en/fr, gender masc/fem) it is the shift coding itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ssae_core.io import EmbeddingTable, PairLabels
from ssae_core.metrics import (
    match_columns,
    mcc,
    pairwise,
    percentile_interval,
    resample_weights,
    rounded,
    summary,
    udr,
    vector_mcc,
)
from ssae_core.model import ShiftAutoencoder


class StateCoding(NamedTuple):
    """Pairs coded by the change of every labelled variable's state (reference values left out)."""

    codes_NC: np.ndarray
    """1[x~ has value] - 1[x has value] per pair and non-reference value, in {-1, 0, 1}."""
    columns: list[str]
    """``variable=value`` of each column, variables in ``state_names`` order."""
    references: dict[str, str]
    """The value left out of each variable (its first value, :meth:`PairLabels.values_of`)."""

    @property
    def rank(self) -> int:
        return int(np.linalg.matrix_rank(self.codes_NC)) if self.codes_NC.size else 0


def state_coding(labels: PairLabels) -> StateCoding:
    """The full-rank coding of the pairs of ``labels`` (see the module docstring)."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    references: dict[str, str] = {}
    for name in labels.state_names:
        x, x_tilde = labels.variable(name)
        reference, *others = labels.values_of(name)
        references[name] = reference
        for value in others:
            columns.append((x_tilde == value).astype(np.float64) - (x == value))
            names.append(f"{name}={value}")
    codes = np.stack(columns, axis=1) if columns else np.zeros((len(labels.group), 0))
    return StateCoding(codes, names, references)


def _state_mcc(
    codes: list[np.ndarray], rescaled: list[np.ndarray] | None, test: EmbeddingTable
) -> dict:
    """MCC of each member's codes against the state coding of ``test``'s labels."""
    coding = state_coding(test.labels)
    if not coding.codes_NC.size or np.ptp(coding.codes_NC, axis=0).max() == 0:
        return {}
    info = {"n_columns": len(coding.columns), "rank": coding.rank, "columns": coding.columns}
    out = {"state_mcc": {**summary([mcc(c, coding.codes_NC) for c in codes]), **info}}
    if rescaled is not None:
        out["state_mcc_rescaled"] = summary([mcc(c, coding.codes_NC) for c in rescaled])
    return out


def score_run(models: list[ShiftAutoencoder], test: EmbeddingTable) -> dict:
    """Identifiability scores of the members of one run on held-out pairs.

    - ``mcc``: codes vs the true concept shifts, per seed (only if the table has ``shift`` that
      varies); for layer normalisation also ``mcc_rescaled`` (codes x per-sample std).
    - ``state_mcc``: codes vs the full-rank :func:`state_coding` of the pairs' labels, per seed
      (only for tables with labels whose coding varies), with ``n_columns``, ``rank`` (of the
      held-out coding) and ``columns``; ``state_mcc_rescaled`` as ``mcc_rescaled``.
    - ``decoder_mcc`` / ``codes_mcc``: pairwise MCC across seeds of decoder rows (the paper's
      Table 2) and of held-out codes, each with its ``udr`` (median of the pairwise values).
    """
    delta = test.delta
    codes = [m.encode(delta) for m in models]
    out: dict = {"seeds": [m.config["seed"] for m in models], "num_test_pairs": len(test)}
    layer_norm = models[0].normalizer.mode == "layer"
    rescaled = [m.encode(delta, rescale=True) for m in models] if layer_norm else None
    if test.shift is not None and np.ptp(test.shift, axis=0).max() > 0:
        out["mcc"] = summary([mcc(c, test.shift) for c in codes])
        if rescaled is not None:
            out["mcc_rescaled"] = summary([mcc(c, test.shift) for c in rescaled])
    if test.labels is not None and len(test):
        out.update(_state_mcc(codes, rescaled, test))
    decoders = [m.net.W_dec_SMD.detach()[0].numpy() for m in models]
    dec_pairs = pairwise(decoders, vector_mcc)
    code_pairs = pairwise(codes, mcc)
    out["decoder_mcc"] = {**summary(dec_pairs), "udr": round(udr(dec_pairs), 6)}
    out["codes_mcc"] = {**summary(code_pairs), "udr": round(udr(code_pairs), 6)}
    records = [m.record for m in models]
    out["multiplier"] = summary([r.multiplier for r in records])
    out["l1"] = summary([r.l1 for r in records])
    out["val_l1"] = summary([r.val_l1 for r in records])
    out["val_l1_se"] = summary([r.val_l1_se for r in records])
    out["steps"] = summary([r.steps for r in records])
    return out


def _matched_columns(codes_NM: np.ndarray, target_NC: np.ndarray) -> np.ndarray:
    """[N, 2, J]: the code and target columns that :func:`match_columns` pairs on all rows."""
    matching = match_columns(codes_NM, target_NC)
    return np.stack([codes_NM[:, matching.rows], target_NC[:, matching.cols]], axis=1)


def _weighted_mcc(columns_N2J: np.ndarray, weights_RN: np.ndarray) -> np.ndarray:
    """[R]: mean |Pearson correlation| of each matched (code, target) column pair under each row
    weighting (a column constant under a weighting counts 0)."""
    a, b = columns_N2J[:, 0], columns_N2J[:, 1]
    total = weights_RN.sum(axis=1, keepdims=True)
    mean_a, mean_b = weights_RN @ a / total, weights_RN @ b / total
    cov = weights_RN @ (a * b) / total - mean_a * mean_b
    var_a = np.clip(weights_RN @ (a * a) / total - mean_a**2, 0, None)
    var_b = np.clip(weights_RN @ (b * b) / total - mean_b**2, 0, None)
    denominator = np.sqrt(var_a * var_b)
    corr = np.divide(cov, denominator, out=np.zeros_like(cov), where=denominator > 1e-12)
    return np.abs(corr).mean(axis=1)


def mcc_difference(
    first: list[ShiftAutoencoder],
    second: list[ShiftAutoencoder],
    test: EmbeddingTable,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict | None:
    """Paired bootstrap interval over test entities (``labels.group``) of the seed-mean MCC of
    ``first``'s codes minus ``second``'s, against the full-rank coding of the labels (or the known
    shifts of a table without labels). Each member's column matching is made once on all test
    pairs (the MCC reported) and kept in the resamples, so the interval covers the sampling of
    test entities, not the matching's own variance. None where there is nothing to score against."""
    if test.labels is not None and len(test):
        target = state_coding(test.labels).codes_NC
        groups = test.labels.group
    elif test.shift is not None:
        target, groups = np.asarray(test.shift, dtype=np.float64), np.arange(len(test))
    else:
        return None
    if not target.size or np.ptp(target, axis=0).max() == 0:
        return None
    sides = [
        [_matched_columns(m.encode(test.delta).astype(np.float64), target) for m in side]
        for side in (first, second)
    ]

    weights = resample_weights(groups, resamples, seed)
    full = np.ones((1, len(test)))

    def difference(w: np.ndarray) -> np.ndarray:
        means = [np.mean([_weighted_mcc(c, w) for c in side], axis=0) for side in sides]
        return means[0] - means[1]

    n_groups = len(np.unique(np.asarray(groups)))
    interval = percentile_interval(difference(weights), level, n_groups).to_dict()
    return {"difference": rounded(float(difference(full)[0])), **interval}
