"""Identifiability metrics: MCC (matched |Pearson|) and UDR (median pairwise MCC across seeds),
the one mean/std summary every metrics file uses, and bootstrap intervals that resample whole
entities."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ssae_core.errors import InputError


class Matching(NamedTuple):
    """Columns ``rows[i]`` of the first matrix matched to ``cols[i]`` of the second."""

    mcc: float
    rows: np.ndarray
    cols: np.ndarray
    corr: np.ndarray  # signed correlation of each matched pair


def correlation_matrix(a_NK: np.ndarray, b_NL: np.ndarray) -> np.ndarray:
    """Pearson correlation between every column of ``a`` and every column of ``b``: [K, L].

    A constant column correlates 0 with everything.
    """
    a = np.asarray(a_NK, dtype=np.float64)
    b = np.asarray(b_NL, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"need two matrices with the same number of rows; got {a.shape}, {b.shape}"
        )
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    a_norm = np.linalg.norm(a, axis=0)
    b_norm = np.linalg.norm(b, axis=0)
    a = np.divide(a, a_norm, out=np.zeros_like(a), where=a_norm > 1e-12)
    b = np.divide(b, b_norm, out=np.zeros_like(b), where=b_norm > 1e-12)
    return a.T @ b


def match_columns(a_NK: np.ndarray, b_NL: np.ndarray) -> Matching:
    """Match min(K, L) columns one-to-one maximising the summed |correlation|."""
    corr = correlation_matrix(a_NK, b_NL)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    matched = corr[rows, cols]
    return Matching(float(np.abs(matched).mean()), rows, cols, matched)


def cosine_matrix(a_MD: np.ndarray, b_LD: np.ndarray) -> np.ndarray:
    """Cosine between every row of ``a`` and every row of ``b``: [M, L] (a zero row: 0)."""
    a = np.asarray(a_MD, dtype=np.float64)
    b = np.asarray(b_LD, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"need two matrices with the same number of columns; got {a.shape}, {b.shape}"
        )
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    b_norm = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, a_norm, out=np.zeros_like(a), where=a_norm > 1e-12)
    b = np.divide(b, b_norm, out=np.zeros_like(b), where=b_norm > 1e-12)
    return a @ b.T


def match_vectors(a_MD: np.ndarray, b_LD: np.ndarray) -> Matching:
    """Match min(M, L) rows (vectors, e.g. decoder rows of two seeds) one-to-one maximising the
    summed |cosine|, as :func:`match_columns` does with correlations; ``corr`` holds the signed
    cosine of each matched pair and ``mcc`` their mean |cosine|."""
    cos = cosine_matrix(a_MD, b_LD)
    rows, cols = linear_sum_assignment(-np.abs(cos))
    matched = cos[rows, cols]
    return Matching(float(np.abs(matched).mean()), rows, cols, matched)


def mcc(a_NK: np.ndarray, b_NL: np.ndarray) -> float:
    """Mean correlation coefficient: mean |Pearson| of optimally matched columns of a and b.

    Invariant to permutation, sign and scale of columns; with K != L the min(K, L) best matches
    count.
    """
    return match_columns(a_NK, b_NL).mcc


def vector_mcc(u_MD: np.ndarray, v_MD: np.ndarray) -> float:
    """MCC of two sets of vectors (e.g. decoder rows of two seeds): rows are compared as samples
    over the D coordinates, i.e. ``mcc(u.T, v.T)``."""
    return mcc(np.asarray(u_MD).T, np.asarray(v_MD).T)


def pairwise(values: list[np.ndarray], score) -> list[float]:
    """``score(a, b)`` for every unordered pair of items."""
    return [float(score(a, b)) for a, b in itertools.combinations(values, 2)]


def udr(pairwise_scores: list[float]) -> float:
    """Unsupervised disentanglement ranking score: the median of the pairwise cross-seed MCCs."""
    if not pairwise_scores:
        return float("nan")
    return float(np.median(pairwise_scores))


DIGITS = 6


def rounded(value: float | None, digits: int = DIGITS) -> float | None:
    """``value`` rounded for a metrics file; None for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def summary(values: Sequence[float | None], *, std_key: str = "std") -> dict:
    """Per-item ``values`` (None where missing or non-finite) with the mean and population std of
    the items present (None when there are none), all rounded; ``std_key`` names the std entry."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "values": [rounded(v) for v in values],
        "mean": rounded(float(np.mean(present))) if present else None,
        std_key: rounded(float(np.std(present))) if present else None,
    }


def seed_summary(values: Sequence[float | None]) -> dict:
    """:func:`summary` of one value per run member, its spread named ``std_seeds``."""
    return summary(values, std_key="std_seeds")


# --------------------------------------------------------------------------- bootstrap intervals


class Interval(NamedTuple):
    """A percentile bootstrap interval (``low`` / ``high`` None when no resample was finite)."""

    low: float | None
    high: float | None
    level: float
    resamples: int
    n_groups: int

    def to_dict(self) -> dict:
        return {
            "low": rounded(self.low),
            "high": rounded(self.high),
            "level": self.level,
            "resamples": self.resamples,
            "n_groups": self.n_groups,
        }


def group_resamples(
    groups: Sequence[object] | np.ndarray, resamples: int, seed: int
) -> list[np.ndarray]:
    """Row indices of ``resamples`` bootstrap resamples by group: each draws as many groups as
    there are, uniformly with replacement (``numpy.random.default_rng(seed)``), and takes every
    row of each drawn group (rows of a group in their original order, groups in drawn order)."""
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) == 0:
        raise InputError(f"groups: need one group label per row, got shape {labels.shape}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InputError(f"resamples={resamples!r}: must be a positive integer")
    _, group_N = np.unique(labels, return_inverse=True)
    order = np.argsort(group_N, kind="stable")
    counts = np.bincount(group_N)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(resamples, len(counts)))
    out = []
    for drawn in draws:
        lengths = counts[drawn]
        first = np.repeat(starts[drawn] - (np.cumsum(lengths) - lengths), lengths)
        out.append(order[first + np.arange(int(lengths.sum()))])
    return out


def bootstrap_interval(
    values: np.ndarray,
    groups: Sequence[object] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(values)`` that resamples whole groups.

    ``values``: one row per observation (axis 0; further axes are kept, so a statistic can see
    several columns per row, e.g. a concept index and one score per seed); ``groups``: the
    entity of each row (word, profession, question...). Rows of one entity are not independent
    (a question's answers, a profession's forms), so each resample draws entities with
    replacement and keeps all their rows (:func:`group_resamples`); with one row per group this
    is the ordinary iid percentile bootstrap. Seeded, hence deterministic. Resamples whose
    statistic is not finite are left out of the percentiles.
    """
    data = np.asarray(values)
    if data.ndim == 0 or len(data) != len(np.asarray(groups)):
        raise InputError(
            f"values: need one row per group label ({len(np.asarray(groups))}), "
            f"got shape {data.shape}"
        )
    if not 0 < level < 1:
        raise InputError(f"level={level!r}: must be in (0, 1), e.g. 0.95")
    rows = group_resamples(groups, resamples, seed)
    stats = np.array([float(statistic(data[r])) for r in rows])
    return percentile_interval(stats, level, len(np.unique(np.asarray(groups))))


def percentile_interval(stats: np.ndarray, level: float, n_groups: int) -> Interval:
    """The percentile interval of the resampled ``stats`` (non-finite ones left out)."""
    resamples = len(stats)
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return Interval(None, None, level, resamples, n_groups)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(float(low), float(high), level, resamples, n_groups)


def resample_weights(
    groups: Sequence[object] | np.ndarray, resamples: int, seed: int
) -> np.ndarray:
    """[resamples, N]: how often each row is drawn in each of :func:`group_resamples`' resamples
    (the same resamples), for statistics that are weighted sums."""
    num = len(np.asarray(groups))
    return np.stack(
        [np.bincount(r, minlength=num) for r in group_resamples(groups, resamples, seed)]
    ).astype(np.float64)
