"""Fluency-aware steering scores: a continuation counts for the concept only if it is fluent.

A language detector calls ``desil de de de de`` French, and the unsteered model gives repetition a
low perplexity, so neither alone tells steering from breakage. A continuation is **fluent** when

- it is not degenerate: the share of distinct tokens among its tokens is at least
  ``min_distinct`` (``de de de de ...`` has about 0.1, ordinary text 0.8-1.0), and
- its perplexity under the UNSTEERED model, given its prompt, is at most a bound set from the
  unsteered continuations of the training prompts: ``perplexity_factor`` times the largest of
  them (so the bound is never tuned on held-out prompts).

Scores of a condition (AxBench-style): the **concept share** (continuations both fluent and
showing the concept), the **fluency share**, and their **harmonic mean**, the score an operating
point is chosen by (:func:`operating_point`, on training prompts only).

Shapes in names: N continuations, B bootstrap resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ssae_core.errors import InputError


def distinct_share(token_ids: Sequence[int]) -> float:
    """Distinct tokens / tokens (0 for an empty continuation: nothing was said)."""
    return len(set(token_ids)) / len(token_ids) if token_ids else 0.0


def text_perplexities(logprob_N: np.ndarray, count_N: np.ndarray) -> np.ndarray:
    """Perplexity of each continuation from its summed log-probability and token count (inf for
    one without tokens)."""
    count_N = np.asarray(count_N, dtype=np.float64)
    out_N = np.full(count_N.shape, np.inf)
    has = count_N > 0
    out_N[has] = np.exp(-np.asarray(logprob_N, dtype=np.float64)[has] / count_N[has])
    return out_N


class FluencyRule(NamedTuple):
    """When a continuation is fluent (module docstring)."""

    min_distinct: float
    max_perplexity: float

    def fluent(self, distinct_N: np.ndarray, perplexity_N: np.ndarray) -> np.ndarray:
        """Bool [N]: fluent continuations."""
        return (np.asarray(distinct_N) >= self.min_distinct) & (
            np.asarray(perplexity_N) <= self.max_perplexity
        )


def fluency_rule(
    unsteered_perplexity_N: np.ndarray, *, min_distinct: float, perplexity_factor: float
) -> FluencyRule:
    """The rule whose perplexity bound is ``perplexity_factor`` x the largest finite perplexity of
    the unsteered continuations (of the training prompts)."""
    finite = np.asarray(unsteered_perplexity_N)[np.isfinite(unsteered_perplexity_N)]
    if finite.size == 0:
        raise InputError("fluency: the unsteered model wrote no continuation to set a bound from")
    return FluencyRule(float(min_distinct), float(perplexity_factor * finite.max()))


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); 0 when both are 0."""
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def operating_point(scores: Mapping[float, float]) -> float:
    """The strength with the best score (``{strength: score}``, measured on training data only);
    ties go to the weakest strength."""
    if not scores:
        raise InputError("operating point: no strengths were scored")
    best = max(scores.values())
    if math.isnan(best):
        raise InputError("operating point: scores are NaN")
    return min((s for s, v in scores.items() if v == best), key=lambda s: (abs(s), s))
