"""Pair sets: the semi-synthetic ones (:mod:`.semisynthetic`) and TruthfulQA (:mod:`.truthfulqa`).

Only the semi-synthetic API is re-exported, so importing the package stays cheap and offline.
"""

from ssae_core.datasets.semisynthetic import (
    DATASETS,
    OOD_EVALUATIONS,
    CatConfig,
    PairsConfig,
    build_pairs,
    make_pairs,
    ood_vocabulary_overlap,
)

__all__ = [
    "DATASETS",
    "OOD_EVALUATIONS",
    "CatConfig",
    "PairsConfig",
    "build_pairs",
    "make_pairs",
    "ood_vocabulary_overlap",
]
