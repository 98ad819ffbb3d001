"""Steering measured by what it changes: held-out logistic probes of every labelled variable.

In memory by nature: a probe is fitted on every training text of the scored table at once
(L-BFGS over all rows), so the tables are read whole by :func:`ssae_core.io.load_embeddings`,
which takes the table's own size and one slice more, whatever its row groups.

The cosine score of :mod:`ssae_core.evaluation.steering_accuracy` compares a steered embedding
with the whole target embedding, most of which no concept vector can move. Here a probe reads the
state of each labelled variable (``language``, ``gender``, cat's ``shape`` ...; see
:class:`ssae_core.io.PairLabels`) and steering is judged by what the probes see change.

Probes. One multinomial logistic regression per variable over the values its texts take:
features standardised with the training mean and std, L2 penalty ``0.5 * l2 * ||W||^2`` added to
the summed cross-entropy (``l2 = 1`` is scikit-learn's ``C = 1``; the bias is not penalised),
fitted from zeros by scipy's L-BFGS-B in float64 (deterministic). A probe sees only the TRAINING
texts of the scored table: both texts of every training pair, identical rows (the same embedding
with the same states) once. In distribution that is the source's training split; out of
distribution the target's (the probe must read the target's texts; vectors still come from the
source). Each probe's accuracy on the scored table's test texts is reported.

Steering. For every method's fixed concept vectors (:func:`method_directions`: unit v_c and the
fitted alpha_c) and every single-concept test pair of concept c (sign s), the SOURCE embedding z
is steered to z + s * alpha_c * v_c, and:

- flip: the probe of c's variable predicts the pair's x~ state (the target state) at the steered
  embedding; the flip rate is the share of c's test pairs that flip (the ``identity`` reference
  is the same share at z itself, i.e. the probe's error);
- target probability: the probe's probability of the target state at the steered embedding;
- selectivity: the mean over every OTHER labelled variable (with a probe) of
  |P(current state | steered) - P(current state | z)|, averaged over the pairs; 0 is perfectly
  selective. ``None`` for concepts of a set that labels no other variable (lang, gender, corr,
  truthfulqa);
- cosine gain: cos(z + step, z~) - cos(z, z~), the existing steering score per pair.

References, on the same pairs:

- ``random``: per method, a random unit vector per concept (seeded by ``random_seed``, the same
  for every method and member) at that method's alpha: a floor that keeps the step size;
- ``test_md``: the mean signed shift of c's single-concept TEST pairs, normalised, with alpha
  chosen from ``ceiling_multiples`` x its own least-squares alpha on those pairs: the multiple
  with the highest flip rate (ties: the smallest) for the probe scores, the one with the highest
  mean cosine for the cosine scores. It is fitted on the test pairs themselves, hence a ceiling
  for fixed vectors, not a method.

Comparing methods. The ``common`` columns average over the concepts that every member of every
method could score (the common set; its size and names are reported). The ``all_concepts``
columns average over every concept with test pairs and a probe, a concept a member could not
match counting as a failure: flip rate 0, cosine gain 0 (the unsteered z). Concept means come
first, then one value per member (:func:`ssae_core.metrics.seed_summary`). Intervals
(``*_interval``) are percentile bootstrap intervals of the seed mean over test entities
(``labels.group``: words, professions, phrases, questions), resampled whole
(:func:`ssae_core.metrics.bootstrap_interval`).

Shapes in names: N scored pairs, D embedding width, K source concepts, C probe classes, T texts,
V variables.

The result of :func:`evaluate_probe_steering` (numbers rounded; ``None`` where missing)::

    {"concept_map": {src: tgt}, "train_split", "test_split", "probe_table": "source" | "target",
     "n_test_pairs", "n_single_concept_test_pairs", "n_test_entities",
     "config": {"l2", "max_iter", "ceiling_multiples", "random_seed", "resamples",
                "bootstrap_seed", "level"},
     "probes": {variable: {"status", "values", "n_train_texts", "n_test_texts",
                           "train_accuracy", "test_accuracy", "converged", "iterations"}},
     "common_set": {"n_concepts", "concepts", "n_with_test_pairs", "n_selectivity_concepts"},
     "concepts": {src concept: {
         "target_concept", "variable", "status", "n_test_pairs", "n_test_entities",
         "other_variables",
         "identity": {"flip_rate", "target_probability", "cosine"},
         "test_md": {"alpha", "alpha_multiple", "flip_rate", "target_probability",
                     "selectivity", "cosine_alpha_multiple", "cosine", "cosine_gain"} | None}},
     "references": {"identity" | "test_md": {         # seed_summary of one value each
         "common": {"flip_rate", "flip_rate_interval", "cosine", "cosine_gain",
                    "cosine_gain_interval", "target_probability", "selectivity"},
         "all_concepts": {"flip_rate", "flip_rate_interval", "cosine", "cosine_gain",
                          "cosine_gain_interval"}}},
     "methods": {name: {
         "seeds": [...] | None,                          # None for md
         "concepts": {src concept: {"status", "flip_rate", "target_probability",
                                    "selectivity", "cosine_gain",
                                    "random": {"flip_rate", "selectivity"}}},   # seed_summary
         "common": {"flip_rate", "flip_rate_interval", "cosine", "cosine_gain",
                    "cosine_gain_interval", "target_probability", "selectivity",
                    "random_flip_rate", "random_selectivity"},
         "all_concepts": {"n_unmatched", "flip_rate", "flip_rate_interval", "cosine",
                          "cosine_gain", "cosine_gain_interval"}}}}

``cosine`` is the mean steered cosine cos(z + step, z~) (for ``identity``: cos(z, z~), the
baseline, whose gain is 0 by definition). An interval is
``{"low", "high", "level", "resamples", "n_groups"}`` (None when the set is empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from ssae_core.errors import InputError
from ssae_core.evaluation.steering_accuracy import (
    MERGE_THRESHOLD,
    NO_LATENT,
    NO_TEST_PAIRS,
    STATUS_OK,
    ConceptDirections,
    SteeringModel,
    concept_steps,
    grouped_stats,
    mean_difference_directions,
    method_directions,
    row_cosine,
    scored_rows,
    steering_setup,
    unit_rows,
)
from ssae_core.io import EmbeddingTable, PairLabels
from ssae_core.metrics import bootstrap_interval, rounded, seed_summary

NO_PROBE = "no probe of its variable (fewer than two values in the training texts)"
CEILING_MULTIPLES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of the probe evaluation (:func:`evaluate_probe_steering`)."""

    l2: float = 1.0
    """L2 penalty 0.5 * l2 * ||W||^2 added to the summed cross-entropy (1 = scikit-learn's C=1)."""
    max_iter: int = 1000
    """Most L-BFGS-B iterations per probe."""
    ceiling_multiples: tuple[float, ...] = CEILING_MULTIPLES
    """Multiples of the test-set MD's own alpha searched for its best alpha (the ceiling)."""
    random_seed: int = 0
    """Seed of the random unit vectors (the floor)."""
    resamples: int = 1000
    """Bootstrap resamples of test entities for every interval."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap."""
    level: float = 0.95
    """Coverage of the percentile intervals."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l2) and self.l2 > 0):
            raise InputError(f"l2={self.l2}: must be a positive number, e.g. 1.0")
        if self.max_iter < 1:
            raise InputError(f"max_iter={self.max_iter}: must be at least 1")
        multiples = self.ceiling_multiples
        if not multiples or any(not (math.isfinite(m) and m > 0) for m in multiples):
            raise InputError(
                f"ceiling_multiples={list(multiples)}: give positive multiples, e.g. [0.5, 1, 2]"
            )
        if not 0 < self.level < 1:
            raise InputError(f"level={self.level}: must be in (0, 1), e.g. 0.95")
        if self.resamples < 1:
            raise InputError(f"resamples={self.resamples}: must be at least 1")


# --------------------------------------------------------------------------- probes


class LabelledTexts(NamedTuple):
    """The distinct texts of some pairs with the states of every labelled variable."""

    z_TD: np.ndarray
    states_TV: np.ndarray
    pair_id_T: np.ndarray
    """The pair each text was taken from (its first occurrence)."""
    side_T: np.ndarray
    """0: the pair's x, 1: its x~."""


def require_labels(table: EmbeddingTable, what: str) -> PairLabels:
    """The labels of ``table``, or a one-line error saying how to get them."""
    if table.labels is None:
        raise InputError(
            f"the {what} table has no per-text labels (group, x_states, x_tilde_states); "
            "regenerate its pairs and re-extract the embeddings"
        )
    return table.labels


def labelled_texts(table: EmbeddingTable, what: str = "embedding") -> LabelledTexts:
    """Both texts of every pair of ``table``, each distinct (embedding, states) row once."""
    labels = require_labels(table, what)
    z = np.concatenate([table.z, table.z_tilde]).astype(np.float64)
    states = np.concatenate([labels.x_states, labels.x_tilde_states]).astype(str)
    pair_id = np.concatenate([table.pair_id, table.pair_id])
    side = np.repeat([0, 1], len(table))
    seen: dict[tuple[bytes, tuple[str, ...]], int] = {}
    for row in range(len(z)):
        seen.setdefault((z[row].tobytes(), tuple(states[row])), row)
    keep = np.array(sorted(seen.values()), dtype=np.int64)
    return LabelledTexts(z[keep], states[keep], pair_id[keep], side[keep])


@dataclass(frozen=True)
class LinearProbe:
    """A fitted multinomial logistic probe of one variable."""

    variable: str
    classes: tuple[str, ...]
    mean_D: np.ndarray
    scale_D: np.ndarray
    weight_DC: np.ndarray
    bias_C: np.ndarray
    train_pair_ids: np.ndarray
    """The pairs whose texts it was trained on."""
    n_train_texts: int
    converged: bool
    iterations: int

    def logits(self, z_ND: np.ndarray) -> np.ndarray:
        x = (np.asarray(z_ND, np.float64) - self.mean_D) / self.scale_D
        return x @ self.weight_DC + self.bias_C

    def probabilities(self, z_ND: np.ndarray) -> np.ndarray:
        """P(class | z) [N, C], classes in the order of ``classes``."""
        return softmax(self.logits(z_ND), axis=1)

    def predict(self, z_ND: np.ndarray) -> np.ndarray:
        """The most probable state of each row (object array of class names)."""
        return np.asarray(self.classes, dtype=object)[np.argmax(self.logits(z_ND), axis=1)]

    def probability_of(self, z_ND: np.ndarray, states_N: np.ndarray) -> np.ndarray:
        """P(states_N[i] | z_i) [N]; 0 for a state the probe never saw."""
        index = {c: i for i, c in enumerate(self.classes)}
        column = np.array([index.get(str(s), -1) for s in states_N], dtype=np.int64)
        proba = self.probabilities(z_ND)
        picked = proba[np.arange(len(column)), np.maximum(column, 0)]
        return np.where(column >= 0, picked, 0.0)


def _loss_and_grad(
    params: np.ndarray, x_TD: np.ndarray, y_TC: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    dim, num = x_TD.shape[1], y_TC.shape[1]
    weight, bias = params[: dim * num].reshape(dim, num), params[dim * num :]
    log_p = log_softmax(x_TD @ weight + bias, axis=1)
    error = np.exp(log_p) - y_TC
    loss = -float((y_TC * log_p).sum()) + 0.5 * l2 * float((weight**2).sum())
    grad = np.concatenate([(x_TD.T @ error + l2 * weight).ravel(), error.sum(axis=0)])
    return loss, grad


def fit_probe(texts: LabelledTexts, variable: int, name: str, config: ProbeConfig) -> LinearProbe:
    """The logistic probe of variable ``variable`` (column of ``texts.states_TV``)."""
    states = texts.states_TV[:, variable]
    classes = tuple(sorted({str(v) for v in states}))
    if len(classes) < 2:
        raise InputError(f"variable {name!r}: its training texts take one value; cannot probe it")
    mean = texts.z_TD.mean(axis=0)
    std = texts.z_TD.std(axis=0)
    scale = np.where(std > 1e-12, std, 1.0)
    x = (texts.z_TD - mean) / scale
    y = (states[:, None] == np.array(classes)[None, :]).astype(np.float64)
    dim, num = x.shape[1], len(classes)
    result = minimize(
        _loss_and_grad,
        np.zeros(dim * num + num),
        args=(x, y, config.l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": config.max_iter},
    )
    return LinearProbe(
        variable=name,
        classes=classes,
        mean_D=mean,
        scale_D=scale,
        weight_DC=result.x[: dim * num].reshape(dim, num),
        bias_C=result.x[dim * num :],
        train_pair_ids=np.unique(texts.pair_id_T),
        n_train_texts=len(states),
        converged=bool(result.success),
        iterations=int(result.nit),
    )


def fit_probes(train: EmbeddingTable, config: ProbeConfig) -> dict[str, LinearProbe | None]:
    """One probe per labelled variable of ``train`` (None for a variable whose training texts
    take a single value), trained on :func:`labelled_texts` of ``train`` only."""
    labels = require_labels(train, "training")
    texts = labelled_texts(train, "training")
    return {
        name: fit_probe(texts, k, name, config) if len(set(texts.states_TV[:, k])) > 1 else None
        for k, name in enumerate(labels.state_names)
    }


def _probe_report(
    probes: Mapping[str, LinearProbe | None], train: EmbeddingTable, test: EmbeddingTable
) -> dict:
    """Classes, sizes and train / held-out accuracy of every probe."""
    names = require_labels(train, "training").state_names
    train_texts, test_texts = labelled_texts(train), labelled_texts(test)
    out = {}
    for k, name in enumerate(names):
        probe = probes[name]
        if probe is None:
            values = sorted({str(v) for v in train_texts.states_TV[:, k]})
            out[name] = {"status": NO_PROBE, "values": values}
            continue

        def accuracy(texts: LabelledTexts, column: int = k, p: LinearProbe = probe) -> float:
            return float(np.mean(p.predict(texts.z_TD) == texts.states_TV[:, column]))

        out[name] = {
            "status": STATUS_OK,
            "values": list(probe.classes),
            "n_train_texts": probe.n_train_texts,
            "n_test_texts": len(test_texts.z_TD),
            "train_accuracy": rounded(accuracy(train_texts)),
            "test_accuracy": rounded(accuracy(test_texts)),
            "converged": probe.converged,
            "iterations": probe.iterations,
        }
    return out


# --------------------------------------------------------------------------- steering effects


class ProbePairs(NamedTuple):
    """The single-concept test pairs that are scored, with what the probes need of them."""

    z_ND: np.ndarray
    z_tilde_ND: np.ndarray
    concept_N: np.ndarray
    """The SOURCE concept whose vector steers each pair."""
    sign_N: np.ndarray
    group_N: np.ndarray
    """The test entity of each pair (bootstrap unit)."""
    variable_N: np.ndarray
    """Index (into ``state_names``) of the variable the pair's concept changes."""
    target_N: np.ndarray
    """The state of that variable in x~."""
    current_NV: np.ndarray
    """The state of every variable in x."""
    base_probability_NV: np.ndarray
    """P(current state | z) of every variable's probe (NaN without a probe)."""
    identity_cosine_N: np.ndarray
    state_names: list[str]

    @classmethod
    def of(
        cls,
        test: EmbeddingTable,
        pairs: list[tuple[int, int]],
        target_names: list[str],
        probes: Mapping[str, LinearProbe | None],
    ) -> ProbePairs:
        labels = require_labels(test, "scored")
        rows, concept_N, sign_N = scored_rows(test, pairs, len(target_names))
        variable_K = {s: _concept_variable(labels, target_names[t]) for s, t in pairs}
        variable_N = np.array([variable_K[int(c)] for c in concept_N], dtype=np.int64)
        z, z_tilde = test.z[rows].astype(np.float64), test.z_tilde[rows].astype(np.float64)
        current = labels.x_states[rows].astype(str)
        target = labels.x_tilde_states[rows].astype(str)[np.arange(len(rows)), variable_N]
        base = np.full(current.shape, np.nan)
        for k, name in enumerate(labels.state_names):
            if probes.get(name) is not None and len(rows):
                base[:, k] = probes[name].probability_of(z, current[:, k])
        return cls(
            z,
            z_tilde,
            concept_N,
            sign_N,
            labels.group[rows].astype(str),
            variable_N,
            target.astype(object),
            current,
            base,
            row_cosine(z, z_tilde),
            list(labels.state_names),
        )


def _concept_variable(labels: PairLabels, concept: str) -> int:
    """Index of the variable that ``concept`` contrasts (from ``labels.concept_states``)."""
    if concept not in labels.concept_states:
        raise InputError(
            f"concept {concept!r}: the table's concept_states do not say which variable it "
            f"changes (have {sorted(labels.concept_states)}); regenerate the pairs"
        )
    variable = labels.concept_states[concept][0]
    if variable not in labels.state_names:
        raise InputError(
            f"concept {concept!r}: its variable {variable!r} is not labelled "
            f"(variables: {labels.state_names}); regenerate the pairs"
        )
    return labels.state_names.index(variable)


class Effects(NamedTuple):
    """What one step per pair does (NaN where the pair has no step)."""

    flip_N: np.ndarray
    """1 where the probe of the pair's variable predicts the target state after the step."""
    target_probability_N: np.ndarray
    selectivity_N: np.ndarray
    """Mean |change| of P(current state) over the other variables (NaN: none)."""
    cosine_gain_N: np.ndarray


def steering_effects(
    pairs: ProbePairs, probes: Mapping[str, LinearProbe | None], step_ND: np.ndarray
) -> Effects:
    """Flip, target probability, selectivity and cosine gain of ``z + step`` for every pair."""
    num = len(pairs.z_ND)
    valid = np.isfinite(step_ND).all(axis=1)
    steered = pairs.z_ND + np.where(valid[:, None], step_ND, 0.0)
    flip, target_p = np.full(num, np.nan), np.full(num, np.nan)
    change_sum, change_count = np.zeros(num), np.zeros(num)
    for k, name in enumerate(pairs.state_names):
        probe = probes.get(name)
        if probe is None:
            continue
        own = pairs.variable_N == k
        if own.any():
            flip[own] = probe.predict(steered[own]) == pairs.target_N[own]
            target_p[own] = probe.probability_of(steered[own], pairs.target_N[own])
        other = ~own
        if other.any():
            after = probe.probability_of(steered[other], pairs.current_NV[other, k])
            change_sum[other] += np.abs(after - pairs.base_probability_NV[other, k])
            change_count[other] += 1
    selectivity = np.full(num, np.nan)
    np.divide(change_sum, change_count, out=selectivity, where=change_count > 0)
    gain = row_cosine(steered, pairs.z_tilde_ND) - pairs.identity_cosine_N
    effects = Effects(flip, target_p, selectivity, gain)
    return Effects(*(np.where(valid, values, np.nan) for values in effects))


def random_directions(num: int, dim: int, seed: int) -> np.ndarray:
    """``num`` random unit vectors [num, D] (Gaussian, normalised), seeded."""
    return unit_rows(np.random.default_rng(seed).standard_normal((num, dim)))


def _concept_means(values_N: np.ndarray, pairs: ProbePairs, num: int) -> np.ndarray:
    return grouped_stats(values_N, pairs.concept_N, num)[0]


class _Scores(NamedTuple):
    """Per-pair effects and per-concept means of one member's vectors and of its random floor."""

    effects: Effects
    random: Effects
    flip_K: np.ndarray
    target_probability_K: np.ndarray
    selectivity_K: np.ndarray
    cosine_gain_K: np.ndarray
    random_flip_K: np.ndarray
    random_selectivity_K: np.ndarray


def _score_member(
    pairs: ProbePairs,
    probes: Mapping[str, LinearProbe | None],
    directions: ConceptDirections,
    random_KD: np.ndarray,
) -> _Scores:
    num = len(directions.alpha_K)
    effects = steering_effects(
        pairs, probes, concept_steps(directions, pairs.concept_N, pairs.sign_N)
    )
    floor = directions._replace(vectors_KD=random_KD)
    random = steering_effects(pairs, probes, concept_steps(floor, pairs.concept_N, pairs.sign_N))
    means = [
        _concept_means(v, pairs, num)
        for v in (
            effects.flip_N,
            effects.target_probability_N,
            effects.selectivity_N,
            effects.cosine_gain_N,
            random.flip_N,
            random.selectivity_N,
        )
    ]
    return _Scores(effects, random, *means)


# --------------------------------------------------------------------------- the ceiling


class _Ceiling(NamedTuple):
    """The test-set MD vectors at their best alpha multiple, per source concept."""

    effects: Effects
    """Probe effects at each concept's best multiple by flip rate."""
    cosine_gain_N: np.ndarray
    """Cosine gain at each concept's best multiple by mean cosine."""
    alpha_K: np.ndarray
    probe_multiple_K: np.ndarray
    cosine_multiple_K: np.ndarray


def _test_md_directions(
    test: EmbeddingTable, pairs: list[tuple[int, int]], num: int
) -> ConceptDirections:
    """The test-set MD directions of the target concepts, indexed by source concept (its
    ``n_train_K`` counts the TEST pairs they average)."""
    target = mean_difference_directions(test)
    vectors = np.full((num, test.dim), np.nan)
    alpha = np.full(num, np.nan)
    count = np.zeros(num, np.int64)
    for s, t in pairs:
        vectors[s], alpha[s], count[s] = (
            target.vectors_KD[t],
            target.alpha_K[t],
            target.n_train_K[t],
        )
    return ConceptDirections(vectors, alpha, count, None)


def _best_per_concept(values_GN: np.ndarray, pairs: ProbePairs, num: int) -> np.ndarray:
    """Index of the grid entry with the highest concept mean (first on ties) per concept."""
    means = np.stack([_concept_means(v, pairs, num) for v in values_GN])
    return np.argmax(np.nan_to_num(means, nan=-np.inf), axis=0)


def _ceiling(
    pairs: ProbePairs,
    probes: Mapping[str, LinearProbe | None],
    directions: ConceptDirections,
    multiples: Sequence[float],
) -> _Ceiling:
    num = len(directions.alpha_K)
    grid = sorted(multiples)
    step = concept_steps(directions, pairs.concept_N, pairs.sign_N)
    runs = [steering_effects(pairs, probes, m * step) for m in grid]
    by_flip = _best_per_concept(np.stack([r.flip_N for r in runs]), pairs, num)
    by_cosine = _best_per_concept(np.stack([r.cosine_gain_N for r in runs]), pairs, num)
    rows = np.arange(len(pairs.z_ND))
    chosen = Effects(
        *(
            np.stack([getattr(r, f) for r in runs])[by_flip[pairs.concept_N], rows]
            for f in Effects._fields
        )
    )
    gain = np.stack([r.cosine_gain_N for r in runs])[by_cosine[pairs.concept_N], rows]
    grid_K = np.asarray(grid)
    return _Ceiling(chosen, gain, directions.alpha_K, grid_K[by_flip], grid_K[by_cosine])


# --------------------------------------------------------------------------- aggregation


def _concept_macro_mean(values_N2: np.ndarray) -> float:
    """Mean over concepts of the mean per concept; rows are (concept index, value)."""
    concept = values_N2[:, 0].astype(np.int64)
    sums = np.bincount(concept, weights=values_N2[:, 1])
    counts = np.bincount(concept)
    present = counts > 0
    return float(np.mean(sums[present] / counts[present]))


def _over(values_K: np.ndarray, mask_K: np.ndarray) -> float | None:
    """Mean of the finite ``values_K`` of the concepts in ``mask_K`` (None: none)."""
    picked = values_K[mask_K]
    picked = picked[np.isfinite(picked)]
    return float(picked.mean()) if len(picked) else None


def _interval(
    pairs: ProbePairs,
    member_values: list[np.ndarray],
    mask_K: np.ndarray,
    config: ProbeConfig,
) -> dict | None:
    """Bootstrap interval over test entities of the seed mean of the concept macro-average of
    per-pair ``member_values`` (one [N] array per member), over the concepts of ``mask_K``."""
    rows = mask_K[pairs.concept_N]
    if not rows.any():
        return None
    stacked = np.stack([v[rows] for v in member_values])
    values = np.column_stack([pairs.concept_N[rows], stacked.mean(axis=0)])
    return bootstrap_interval(
        values,
        pairs.group_N[rows],
        _concept_macro_mean,
        resamples=config.resamples,
        seed=config.bootstrap_seed,
        level=config.level,
    ).to_dict()


def _difference_interval(
    pairs: ProbePairs,
    first: list[np.ndarray],
    second: list[np.ndarray],
    mask_K: np.ndarray,
    config: ProbeConfig,
) -> dict | None:
    """Paired bootstrap interval over test entities of (seed mean of ``first``) minus (seed mean
    of ``second``), each the concept macro-average of per-pair values over the concepts of
    ``mask_K``: both sides see the same resampled entities, so the interval of the difference is
    narrower than two separate intervals would suggest."""
    rows = mask_K[pairs.concept_N]
    if not rows.any():
        return None
    a = np.stack([v[rows] for v in first]).mean(axis=0)
    b = np.stack([v[rows] for v in second]).mean(axis=0)
    values = np.column_stack([pairs.concept_N[rows], a, b])

    def difference(data: np.ndarray) -> float:
        return _concept_macro_mean(data[:, [0, 1]]) - _concept_macro_mean(data[:, [0, 2]])

    interval = bootstrap_interval(
        values,
        pairs.group_N[rows],
        difference,
        resamples=config.resamples,
        seed=config.bootstrap_seed,
        level=config.level,
    ).to_dict()
    return {"difference": rounded(difference(values)), **interval}


DIFFERENCES = (("ssae", "aff"), ("md", "identity"))
"""The paired flip-rate differences every evaluation reports (where both sides exist): SSAE
against aff (the paper's steering claims) and MD against no steering (whether the evaluation can
tell a steering vector from none at all)."""


def _differences(
    pairs: ProbePairs,
    scores: Mapping[str, list[_Scores]],
    identity: Effects,
    mask_K: np.ndarray,
    config: ProbeConfig,
) -> dict:
    """:data:`DIFFERENCES` of the flip rate on the concepts of ``mask_K`` (the common set)."""
    flips = {name: [m.effects.flip_N for m in members] for name, members in scores.items()}
    flips["identity"] = [identity.flip_N]
    return {
        f"{a}-{b}": _difference_interval(pairs, flips[a], flips[b], mask_K, config)
        for a, b in DIFFERENCES
        if a in flips and b in flips
    }


def _column(
    members: list[tuple[Effects, np.ndarray]],
    pairs: ProbePairs,
    mask_K: np.ndarray,
    failures_count_zero: bool,
    config: ProbeConfig,
) -> dict:
    """Flip rate, cosine (steered) and cosine gain, and without ``failures_count_zero`` also
    target probability and selectivity, over the concepts of ``mask_K``: concept means, then one
    value per member (``members``: its effects and the cosine gain per pair to use). With
    ``failures_count_zero`` a concept a member did not score counts flip rate 0 and gain 0."""
    zero = failures_count_zero

    def per_pair(values_N: np.ndarray) -> np.ndarray:
        return np.nan_to_num(values_N, nan=0.0) if zero else values_N

    def summary_of(member_values: list[np.ndarray]) -> dict:
        num = len(mask_K)
        return seed_summary([_over(_concept_means(v, pairs, num), mask_K) for v in member_values])

    flips = [per_pair(e.flip_N) for e, _ in members]
    gains = [per_pair(g) for _, g in members]
    out = {
        "flip_rate": summary_of(flips),
        "flip_rate_interval": _interval(pairs, flips, mask_K, config),
        "cosine": summary_of([pairs.identity_cosine_N + g for g in gains]),
        "cosine_gain": summary_of(gains),
        "cosine_gain_interval": _interval(pairs, gains, mask_K, config),
    }
    if not zero:
        out["target_probability"] = summary_of([e.target_probability_N for e, _ in members])
        out["selectivity"] = summary_of([e.selectivity_N for e, _ in members])
    return out


class _ConceptSets(NamedTuple):
    n_test_K: np.ndarray
    probed_K: np.ndarray
    """The concept's variable has a probe."""
    eligible_K: np.ndarray
    """Scored concepts with test pairs and a probe: the ``all_concepts`` set."""
    common_K: np.ndarray
    """Eligible concepts every member of every method scored: the ``common`` set."""
    has_other_K: np.ndarray
    """Another labelled variable has a probe (the concept has a selectivity)."""


def _concept_sets(
    pairs: ProbePairs,
    probes: Mapping[str, LinearProbe | None],
    concept_pairs: list[tuple[int, int]],
    scores: Mapping[str, list[_Scores]],
    num: int,
) -> _ConceptSets:
    n_test_K = np.bincount(pairs.concept_N, minlength=num)
    probed_K, has_other_K = np.zeros(num, bool), np.zeros(num, bool)
    probed_V = np.array([probes.get(name) is not None for name in pairs.state_names])
    for s, _ in concept_pairs:
        rows = pairs.concept_N == s
        if rows.any():
            variable = pairs.variable_N[rows][0]
            probed_K[s] = probed_V[variable]
            has_other_K[s] = np.delete(probed_V, variable).any()
    eligible_K = (n_test_K > 0) & probed_K
    common_K = eligible_K.copy()
    for members in scores.values():
        for member in members:
            common_K &= np.isfinite(member.flip_K)
    return _ConceptSets(n_test_K, probed_K, eligible_K, common_K, has_other_K)


def _method_report(
    scores: list[_Scores],
    pairs: ProbePairs,
    sets: _ConceptSets,
    concept_pairs: list[tuple[int, int]],
    source_names: list[str],
    config: ProbeConfig,
) -> dict:
    members = [(m.effects, m.effects.cosine_gain_N) for m in scores]
    common = _column(members, pairs, sets.common_K, False, config)
    common["random_flip_rate"] = seed_summary(
        [_over(m.random_flip_K, sets.common_K) for m in scores]
    )
    common["random_selectivity"] = seed_summary(
        [_over(m.random_selectivity_K, sets.common_K) for m in scores]
    )
    everything = {
        "n_unmatched": [int((sets.eligible_K & ~np.isfinite(m.flip_K)).sum()) for m in scores],
        **_column(members, pairs, sets.eligible_K, True, config),
    }
    concepts = {source_names[s]: _method_concept(scores, s, sets) for s, _ in concept_pairs}
    return {"concepts": concepts, "common": common, "all_concepts": everything}


def _method_concept(scores: list[_Scores], s: int, sets: _ConceptSets) -> dict:
    """One method's scores of source concept ``s``, one value per member."""
    if not sets.n_test_K[s]:
        return {"status": NO_TEST_PAIRS}
    if not sets.probed_K[s]:
        return {"status": NO_PROBE}
    if not any(math.isfinite(m.flip_K[s]) for m in scores):
        return {"status": NO_LATENT}

    def per_member(field: str) -> dict | None:
        values = [float(getattr(m, field)[s]) for m in scores]
        if not any(math.isfinite(v) for v in values):
            return None
        return seed_summary(values)

    return {
        "status": STATUS_OK,
        "flip_rate": per_member("flip_K"),
        "target_probability": per_member("target_probability_K"),
        "selectivity": per_member("selectivity_K"),
        "cosine_gain": per_member("cosine_gain_K"),
        "random": {
            "flip_rate": per_member("random_flip_K"),
            "selectivity": per_member("random_selectivity_K"),
        },
    }


def _concept_entry(
    s: int,
    target: str,
    labels: PairLabels,
    pairs: ProbePairs,
    sets: _ConceptSets,
    probes: Mapping[str, LinearProbe | None],
    references: tuple[Effects, _Ceiling],
) -> dict:
    """What is method-independent about source concept ``s``: its variable, test pairs, the
    unsteered z and the test-set MD ceiling."""
    identity, ceiling = references
    variable = labels.state_names[_concept_variable(labels, target)]
    rows = pairs.concept_N == s
    entry: dict = {
        "target_concept": target,
        "variable": variable,
        "status": STATUS_OK,
        "n_test_pairs": int(rows.sum()),
        "n_test_entities": len(set(pairs.group_N[rows])),
        "other_variables": [v for v in labels.state_names if v != variable and probes.get(v)],
        "identity": None,
        "test_md": None,
    }
    if not sets.eligible_K[s]:
        entry["status"] = NO_TEST_PAIRS if not sets.n_test_K[s] else NO_PROBE
        return entry

    def mean(values_N: np.ndarray) -> float | None:
        finite = values_N[rows][np.isfinite(values_N[rows])]
        return rounded(float(finite.mean())) if len(finite) else None

    identity_cosine = pairs.identity_cosine_N
    entry["identity"] = {
        "flip_rate": mean(identity.flip_N),
        "target_probability": mean(identity.target_probability_N),
        "cosine": mean(identity_cosine),
    }
    entry["test_md"] = {
        "alpha": rounded(ceiling.alpha_K[s]),
        "alpha_multiple": float(ceiling.probe_multiple_K[s]),
        "flip_rate": mean(ceiling.effects.flip_N),
        "target_probability": mean(ceiling.effects.target_probability_N),
        "selectivity": mean(ceiling.effects.selectivity_N),
        "cosine_alpha_multiple": float(ceiling.cosine_multiple_K[s]),
        "cosine": mean(identity_cosine + ceiling.cosine_gain_N),
        "cosine_gain": mean(ceiling.cosine_gain_N),
    }
    return entry


def _references(
    pairs: ProbePairs, sets: _ConceptSets, identity: Effects, ceiling: _Ceiling, config: ProbeConfig
) -> dict:
    """The unsteered z and the test-set MD ceiling over the common set and over all concepts."""
    members = {
        "identity": [(identity, identity.cosine_gain_N)],
        "test_md": [(ceiling.effects, ceiling.cosine_gain_N)],
    }
    return {
        name: {
            "common": _column(member, pairs, sets.common_K, False, config),
            "all_concepts": _column(member, pairs, sets.eligible_K, True, config),
        }
        for name, member in members.items()
    }


def evaluate_probe_steering(
    source: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]] | None = None,
    *,
    target: EmbeddingTable | None = None,
    concept_map: Mapping[str, str] | None = None,
    mean_difference: bool = True,
    config: ProbeConfig | None = None,
    merge_threshold: float = MERGE_THRESHOLD,
    train_split: str = "train",
    test_split: str = "test",
    probes: Mapping[str, LinearProbe | None] | None = None,
) -> dict:
    """Probe-measured steering of every method on one table (or source -> target, as
    :func:`~ssae_core.evaluation.steering_accuracy.evaluate_steering`: the same arguments, the
    same vectors and alpha), as the JSON-ready dict of the module docstring. The scored table
    (the source, or ``target``) must carry labels (:class:`~ssae_core.io.PairLabels`); its
    ``train_split`` texts train the probes, unless ``probes`` gives them (:func:`fit_probes` of
    that split with ``config``, from an earlier call on the same table)."""
    config = config or ProbeConfig()
    runs = dict(runs or {})
    setup = steering_setup(source, target, concept_map, train_split, test_split)
    scored_table = source if target is None else target
    probe_train = scored_table.subset(train_split)
    if len(probe_train) == 0:
        raise InputError(f"the scored table has no '{train_split}' rows to train probes on")
    if probes is None:
        probes = fit_probes(probe_train, config)
    pairs = ProbePairs.of(setup.test, setup.pairs, setup.target_names, probes)
    num = len(setup.source_names)
    random_KD = random_directions(num, source.dim, config.random_seed)
    directions = method_directions(
        setup.train, runs, mean_difference=mean_difference, merge_threshold=merge_threshold
    )
    scores = {
        name: [_score_member(pairs, probes, d, random_KD) for d in members]
        for name, members in directions.items()
    }
    test_md = _test_md_directions(setup.test, setup.pairs, num)
    ceiling = _ceiling(pairs, probes, test_md, config.ceiling_multiples)
    identity = steering_effects(pairs, probes, np.zeros_like(pairs.z_ND))
    sets = _concept_sets(pairs, probes, setup.pairs, scores, num)
    labels = require_labels(setup.test, "scored")
    methods = {
        name: {
            "seeds": [m.config.get("seed") for m in runs[name]] if name in runs else None,
            **_method_report(member, pairs, sets, setup.pairs, setup.source_names, config),
        }
        for name, member in scores.items()
    }
    return {
        "concept_map": {setup.source_names[s]: setup.target_names[t] for s, t in setup.pairs},
        "train_split": train_split,
        "test_split": test_split,
        "probe_table": "source" if target is None else "target",
        "n_test_pairs": len(setup.test),
        "n_single_concept_test_pairs": len(pairs.concept_N),
        "n_test_entities": len(set(pairs.group_N)),
        "config": {**asdict(config), "ceiling_multiples": list(config.ceiling_multiples)},
        "probes": _probe_report(probes, probe_train, setup.test),
        "common_set": {
            "n_concepts": int(sets.common_K.sum()),
            "concepts": [setup.source_names[k] for k in np.flatnonzero(sets.common_K)],
            "n_with_test_pairs": int(sets.eligible_K.sum()),
            "n_selectivity_concepts": int((sets.common_K & sets.has_other_K).sum()),
        },
        "concepts": {
            setup.source_names[s]: _concept_entry(
                s, setup.target_names[t], labels, pairs, sets, probes, (identity, ceiling)
            )
            for s, t in setup.pairs
        },
        "references": _references(pairs, sets, identity, ceiling, config),
        "methods": methods,
        "differences": _differences(pairs, scores, identity, sets.common_K, config),
    }
