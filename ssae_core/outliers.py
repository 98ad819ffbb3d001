"""Massive-activation outliers: pairs whose shift norm is many times the median.

Some one-word texts have residual norms of thousands against a median of about 190 at block 15 of
SmolLM2 (DESIGN section 10); a handful of such pairs among thousands can hold most of the shift
variance and own the fit. One rule everywhere: a vector is an outlier when its L2 norm exceeds
``factor`` x the median norm of the *training* vectors of the same kind. Training
(``TrainConfig.drop_outliers``) drops such pairs and records the threshold; evaluation applies the
recorded threshold to held-out pairs, so both splits get the same treatment.
"""

from __future__ import annotations

import numpy as np


def norms(x_ND: np.ndarray) -> np.ndarray:
    """L2 norm of every row, in float64."""
    return np.linalg.norm(np.asarray(x_ND, dtype=np.float64), axis=1)


def threshold(train_ND: np.ndarray, factor: float) -> float:
    """``factor`` x the median row norm of ``train_ND`` (inf where that median is 0, as when
    most rows are zero: then no row counts as an outlier)."""
    median = float(np.median(norms(train_ND))) if len(train_ND) else 0.0
    return factor * median if median > 0 else float("inf")


def above(x_ND: np.ndarray, limit: float) -> np.ndarray:
    """True for rows whose norm exceeds ``limit``."""
    return norms(x_ND) > limit


def count(train_ND: np.ndarray, others: dict[str, np.ndarray], factor: float) -> dict[str, int]:
    """How many rows of the training rows and of each other split exceed ``factor`` x the median
    norm of the training rows."""
    limit = threshold(train_ND, factor)
    return {"train": int(above(train_ND, limit).sum())} | {
        name: int(above(rows, limit).sum()) for name, rows in others.items()
    }
