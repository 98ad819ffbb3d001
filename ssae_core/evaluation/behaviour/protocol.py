"""The protocol both behaviours share: sweep strengths on TRAINING items, choose each method's
operating point there, evaluate the chosen points on HELD-OUT items next to the unsteered model,
the prompting baseline and prompting combined with each vector.

A strength is in units of the typical residual norm at the steered layer
(:func:`~ssae_core.lm.steer.typical_norm`): strength s adds ``s x norm x v`` (v the method's unit
vector, oriented along +concept), so strength 1 adds a vector as long as a typical hidden state.
Strength 0 is the unsteered model, always a candidate operating point (a method whose every
strength scores worse than not steering is reported at 0).

Each behaviour's scores are one value per condition and item in [0, 1] (``accuracy`` for MC1;
``concept``, ``fluency`` and ``detected`` for language); :func:`summarise` takes means over items
and members and percentile bootstrap intervals over items
(:func:`ssae_core.metrics.bootstrap_interval`).

Shapes in names: C conditions, N items (prompts or questions), S members.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ssae_core.evaluation.behaviour.fluency import operating_point
from ssae_core.evaluation.behaviour.vectors import ConceptVector
from ssae_core.lm.steer import SteeringVector
from ssae_core.metrics import bootstrap_interval, rounded

PROMPTING = "prompting"
UNSTEERED = "unsteered"


class Condition(NamedTuple):
    """One steered evaluation: a method's member at one strength, with or without the
    instruction in the prompt."""

    name: str
    """``unsteered``, ``prompting``, the method, or ``prompting + METHOD``."""
    method: str | None
    member: int
    strength: float
    instructed: bool
    vector: SteeringVector | None


def at_strength(vector: ConceptVector, strength: float, norm: float) -> SteeringVector | None:
    """``strength x norm x unit`` at the vector's layer; None at strength 0 (unsteered)."""
    if strength == 0:
        return None
    return vector.scaled(strength * norm, strength=repr(strength))


def sweep(
    vectors: Mapping[str, Sequence[ConceptVector]], strengths: Sequence[float], norm: float
) -> list[Condition]:
    """Every method's member at every non-zero strength (no instruction)."""
    return [
        Condition(method, method, i, float(s), False, at_strength(v, s, norm))
        for s in strengths
        if s != 0
        for method, members in vectors.items()
        for i, v in enumerate(members)
    ]


def held_out(
    vectors: Mapping[str, Sequence[ConceptVector]], chosen: Mapping[str, float], norm: float
) -> list[Condition]:
    """Unsteered, prompting, each method at its chosen strength, prompting + each method."""
    out = [
        Condition(UNSTEERED, None, 0, 0.0, False, None),
        Condition(PROMPTING, None, 0, 0.0, True, None),
    ]
    for instructed in (False, True):
        for method, members in vectors.items():
            name = f"{PROMPTING} + {method}" if instructed else method
            s = chosen[method]
            out += [
                Condition(name, method, i, s, instructed, at_strength(v, s, norm))
                for i, v in enumerate(members)
            ]
    return out


def choose_points(
    conditions: Sequence[Condition],
    measures: Mapping[str, np.ndarray],
    unsteered: Mapping[str, np.ndarray],
    score: Callable[[Mapping[str, float]], float],
) -> tuple[dict[str, float], list[dict]]:
    """Each method's operating point and the sweep rows it was chosen from. ``measures``:
    ``{measure: [C, N]}`` of ``conditions`` (a :func:`sweep`), ``unsteered``: ``{measure: [N]}``
    (strength 0); a row holds the means over items and members of every measure and
    ``score(means)``; the point is the strength of the best score (ties: the weakest)."""
    rows, chosen = [], {}
    for method in dict.fromkeys(c.method for c in conditions if c.method is not None):
        strengths = sorted({0.0, *(c.strength for c in conditions if c.method == method)})
        by_strength = {}
        for s in strengths:
            picked = [i for i, c in enumerate(conditions) if c.method == method and c.strength == s]
            means = {
                k: float(np.mean(v[picked]) if picked else np.mean(unsteered[k]))
                for k, v in measures.items()
            }
            by_strength[s] = score(means)
            rows.append(
                {"method": method, "strength": s, **{k: rounded(v) for k, v in means.items()}}
                | {"score": rounded(by_strength[s])}
            )
        chosen[method] = operating_point(by_strength)
    return chosen, rows


def _interval(values_N: np.ndarray, *, resamples: int, seed: int, level: float) -> list:
    """``[low, high]``: percentile bootstrap interval of the mean over items."""
    found = bootstrap_interval(
        values_N, np.arange(len(values_N)), resamples=resamples, seed=seed, level=level
    )
    return [rounded(found.low), rounded(found.high)]


def summarise(
    conditions: Sequence[Condition],
    measures: Mapping[str, np.ndarray],
    *,
    resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per condition name: its strength, members, and per measure the mean over items and
    members with a bootstrap interval over items (of the per-item mean over members) and the
    per-member means."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(c.name for c in conditions):
        rows = [i for i, c in enumerate(conditions) if c.name == name]
        entry: dict = {"strength": conditions[rows[0]].strength, "members": len(rows)}
        for measure, values_CN in measures.items():
            per_item_N = np.asarray(values_CN, dtype=np.float64)[rows].mean(axis=0)
            entry[measure] = {
                "mean": rounded(float(per_item_N.mean())),
                "interval": _interval(per_item_N, resamples=resamples, seed=seed, level=level),
                "per_member": [rounded(float(np.mean(values_CN[r]))) for r in rows],
            }
        out[name] = entry
    return out
