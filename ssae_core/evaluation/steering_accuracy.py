"""Steering accuracy: does adding a concept's fixed vector to z move it onto z~?

In memory by nature: every steered test embedding is scored against the targets of all test pairs
and latents are matched on the codes of all training pairs, so the tables are read whole by
:func:`ssae_core.io.load_embeddings` (the table's own size and one slice more, whatever its row
groups).

Protocol, for every concept c that has single-concept test pairs (exactly one non-zero entry in
``shift``, at c; its sign s says whether the pair moves along +c or reverses it):

1. A fixed steering vector v_c, unit norm, pointing in the +c direction, learnt on TRAINING pairs:

   - ``md`` (mean difference, supervised): the mean of s * d_z over the single-concept training
     pairs of c (reverse pairs are flipped so they point along +c), normalised.
   - a learnt model (``ssae``, ``aff``): the decoder row matched to c (:func:`match_concepts`):
     codes of all training pairs are correlated with the training shift matrix, one latent per
     concept is chosen by ``linear_sum_assignment`` on |corr| (as MCC does), and the row is
     flipped when the correlation is negative. Latents whose decoder rows are near duplicates
     (|cos| > ``merge_threshold``) are merged first (:func:`merge_duplicate_latents`).

2. A scale alpha_c, the least-squares fit of s * d_z on v_c over the single-concept TRAINING pairs
   of c: alpha_c = mean(s * <d_z, v_c>) (v_c has unit norm). The same rule for every method.
   alpha is signed: a vector matched with the wrong orientation gets a negative alpha, which
   undoes the error, so scores never hinge on the sign convention.

3. The score on the single-concept TEST pairs of c: cos(z + s * alpha_c * v_c, z~), next to the
   identity baseline cos(z, z~) and the gain (score - identity); means and standard deviations
   over pairs, and for learnt models over seeds (one value per member of the run).

4. The paper-parity variant ``reconstruction``: cos(z + r(d_z), z~) with r the model's
   reconstruction of each test pair's own shift. It sees the test shift, so it is not a steering
   score in the sense above; it is reported under its own name.

Out of distribution (``target=``): vectors and alpha learnt on the source table's training pairs
are applied to the target table's single-concept test pairs, with ``concept_map`` naming which
source concept steers which target concept (e.g. ``{"gender": "gender"}`` for binary -> gender,
``{"french": "language"}`` for corr -> lang; see
:data:`ssae_core.datasets.semisynthetic.OOD_EVALUATIONS`).

A concept that cannot be scored keeps its entry with a ``status`` that says why and ``None``
scores, never 0: :data:`NO_TEST_PAIRS`, :data:`NO_TRAIN_PAIRS` (no alpha or mean difference can be
fitted) or :data:`NO_LATENT` (the model has fewer distinct latents than concepts).

Shapes in names: N pairs, D embedding width, M latents, G merged latent groups, K concepts.

The result of :func:`evaluate_steering`::

    {"concept_map": {src: tgt}, "merge_threshold", "train_split", "test_split",
     "n_train_pairs", "n_test_pairs", "n_single_concept_test_pairs",
     "methods": {name: {
         "seeds": [...] | None,                       # None for md (one deterministic member)
         "duplicates_merged": [per member] | None,    # latents absorbed by merging
         "concepts": {source concept: {
             "target_concept", "status", "n_train_pairs", "n_test_pairs",
             "identity": {"mean", "std_pairs"},       # cos(z, z~)
             "steered": {"values", "mean", "std_seeds", "std_pairs"},   # values: per member
             "gain": {"values", "mean", "std_seeds"},                   # steered - identity
             "alpha": {"values", "mean", "std_seeds"},
             "match": {"latent", "merged_latents", "corr", "abs_corr", "by"},   # learnt only
             "reconstruction": {...like steered}, "reconstruction_gain": {...like gain}}},
         "aggregate": {"n_concepts", "n_scored", "steered", "identity", "gain",
                       "reconstruction", "reconstruction_gain"}}}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from ssae_core.datasets.semisynthetic import single_concept
from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable
from ssae_core.metrics import correlation_matrix, rounded, seed_summary

MERGE_THRESHOLD = 0.95
MEAN_DIFFERENCE = "md"
STATUS_OK = "ok"
NO_TEST_PAIRS = "no single-concept test pairs"
NO_TRAIN_PAIRS = "no single-concept training pairs"
NO_LATENT = "no latent matched"
MATCH_BY_CORRELATION = "correlation"
MATCH_BY_MEAN_SHIFT = "mean_shift_cosine"


class SteeringModel(Protocol):
    """What the evaluation needs of a trained model (a ``ShiftAutoencoder``)."""

    config: dict

    @property
    def steering_vectors(self) -> np.ndarray: ...  # [M, D], raw units, unit rows

    def encode(self, delta_ND: np.ndarray) -> np.ndarray: ...  # [N, M]

    def reconstruct(self, delta_ND: np.ndarray) -> np.ndarray: ...  # [N, D], raw units


# --------------------------------------------------------------------------- labels and helpers


def single_concept_labels(shift_NK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pair: the index of the one concept it changes (-1 unless exactly one changes) and
    the sign of that change (+1 forward, -1 reverse, 0 for pairs that are not single-concept)."""
    shift = np.asarray(shift_NK, dtype=np.float64)
    single = single_concept(shift)
    concept_N = np.where(single, np.argmax(shift != 0, axis=1), -1).astype(np.int64)
    picked = shift[np.arange(len(shift)), np.maximum(concept_N, 0)] if len(shift) else shift[:, 0]
    return concept_N, np.where(single, np.sign(picked), 0.0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def row_cosine(a_ND: np.ndarray, b_ND: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a_ND, axis=1) * np.linalg.norm(b_ND, axis=1)
    return np.einsum("nd,nd->n", a_ND, b_ND) / norms.clip(1e-12)


def _signed_sums(
    concept_N: np.ndarray, sign_N: np.ndarray, values_ND: np.ndarray, num: int
) -> tuple[np.ndarray, np.ndarray]:
    """sum of sign * values per concept [K, D] and the number of pairs per concept [K]
    (pairs with concept -1 are skipped); one sparse product, fast for 135 concepts."""
    keep = concept_N >= 0
    rows = np.flatnonzero(keep)
    weights = sparse.csr_matrix(
        (sign_N[keep], (concept_N[keep], rows)), shape=(num, len(concept_N))
    )
    return np.asarray(weights @ values_ND), np.bincount(concept_N[keep], minlength=num)


def grouped_stats(
    values_N: np.ndarray, group_N: np.ndarray, num: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, population std and count of ``values`` per group [K]; NaN where a group is empty.
    Entries with group -1 are skipped."""
    keep = group_N >= 0
    group, values = group_N[keep], values_N[keep]
    count = np.bincount(group, minlength=num)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(group, weights=values, minlength=num) / count
        dev = values - mean[group]
        std = np.sqrt(np.bincount(group, weights=dev * dev, minlength=num) / count)
    return mean, std, count


# --------------------------------------------------------------------------- latent matching


class LatentGroups(NamedTuple):
    """Latents merged because their decoder rows are near duplicates."""

    members: list[tuple[int, ...]]
    """Latent indices of each group in increasing order; the first is the representative."""
    group_M: np.ndarray
    """Group index of every latent."""
    sign_M: np.ndarray
    """+1 or -1: orientation of each latent's row relative to its group's representative."""
    vectors_GD: np.ndarray
    """Unit direction of each group: the sign-aligned mean of its members' unit rows (a singleton
    group keeps its row exactly)."""

    @property
    def assign_MG(self) -> np.ndarray:
        """Signed membership matrix: ``codes_NM @ assign_MG`` are the merged codes [N, G]."""
        return _assign_matrix(self.group_M, self.sign_M, len(self.members))


def _assign_matrix(group_M: np.ndarray, sign_M: np.ndarray, num_groups: int) -> np.ndarray:
    assign = np.zeros((len(group_M), num_groups))
    assign[np.arange(len(group_M)), group_M] = sign_M
    return assign


def merge_duplicate_latents(
    vectors_MD: np.ndarray, threshold: float = MERGE_THRESHOLD
) -> LatentGroups:
    """Group latents whose decoder rows are near duplicates: |cos| > ``threshold``, single linkage
    (connected components of that graph; anti-parallel rows count as duplicates too, since
    h_i d + h_j (-d) = (h_i - h_j) d).

    A group acts as one latent: its code is the sign-aligned SUM of its members' codes (what the
    decoder adds along the shared direction), its vector the sign-aligned mean of the members'
    unit rows, renormalised. ``threshold = 1`` merges nothing.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"merge_threshold={threshold}: must be in (0, 1]; 1 merges nothing")
    unit_MD = unit_rows(vectors_MD)
    num = len(unit_MD)
    cos_MM = unit_MD @ unit_MD.T
    _, labels = connected_components(sparse.csr_matrix(np.abs(cos_MM) > threshold), directed=False)
    # number groups by their lowest latent, so that the grouping does not depend on scipy's order
    first_of_label = {}
    for latent, label in enumerate(labels):
        first_of_label.setdefault(label, latent)
    order = sorted(first_of_label.values())
    group_of_first = {latent: g for g, latent in enumerate(order)}
    group_M = np.array([group_of_first[first_of_label[label]] for label in labels], np.int64)
    representative_M = np.array(order, np.int64)[group_M]
    sign_M = np.where(cos_MM[np.arange(num), representative_M] < 0, -1.0, 1.0)
    members = [tuple(int(i) for i in np.flatnonzero(group_M == g)) for g in range(len(order))]
    vectors_GD = unit_rows(_assign_matrix(group_M, sign_M, len(order)).T @ unit_MD)
    return LatentGroups(members, group_M, sign_M, vectors_GD)


class ConceptMatching(NamedTuple):
    """One (merged) latent per concept. Arrays have one entry per concept; unmatched concepts
    have latent -1, no members, NaN score and a NaN vector."""

    latent_K: np.ndarray
    """Representative latent (lowest index of the matched group) or -1."""
    members: list[tuple[int, ...]]
    """Every latent merged into the matched group."""
    score_K: np.ndarray
    """Signed match score: Pearson correlation of the merged code with the concept's training
    labels, or (for a concept whose training label never varies) the cosine of the group vector
    with the concept's mean signed training shift."""
    by: list[str]
    """How each concept was matched: ``correlation``, ``mean_shift_cosine`` or ``""`` (none)."""
    vectors_KD: np.ndarray
    """Unit steering vector of each concept, oriented so that +vector is +concept."""
    groups: LatentGroups


def concept_scores(
    codes_NM: np.ndarray,
    shift_NK: np.ndarray,
    vectors_MD: np.ndarray,
    *,
    delta_ND: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """How well each latent (code column, with its unit vector) matches each concept [K, M],
    and how each concept is scored: the Pearson correlation of the codes with the concept's
    labels (``correlation``), or, for a concept whose label is constant and non-zero and when
    ``delta_ND`` (the same pairs' shifts) is given, the cosine of each vector with the mean
    signed shift of its pairs (``mean_shift_cosine``). A concept that never changes scores 0."""
    shift = np.asarray(shift_NK, dtype=np.float64)
    score_KM = correlation_matrix(shift, np.asarray(codes_NM, dtype=np.float64))
    by = [MATCH_BY_CORRELATION] * shift.shape[1]
    constant_K = (shift != 0).any(axis=0) & (np.ptp(shift, axis=0) == 0)
    if delta_ND is not None and constant_K.any():
        signs = np.sign(shift[:, constant_K])
        mean_shift = unit_rows((signs.T @ np.asarray(delta_ND, np.float64)) / len(shift))
        score_KM[constant_K] = mean_shift @ unit_rows(vectors_MD).T
        for k in np.flatnonzero(constant_K):
            by[k] = MATCH_BY_MEAN_SHIFT
    return score_KM, by


def match_concepts(
    codes_NM: np.ndarray,
    shift_NK: np.ndarray,
    vectors_MD: np.ndarray,
    *,
    delta_ND: np.ndarray | None = None,
    merge_threshold: float = MERGE_THRESHOLD,
) -> ConceptMatching:
    """Match concepts to latents with training labels, the way MCC matches columns.

    ``codes_NM`` and ``shift_NK`` are the codes and true concept shifts of the TRAINING pairs,
    ``vectors_MD`` the decoder rows. Duplicate latents are merged first
    (:func:`merge_duplicate_latents`); then |Pearson correlation| between each concept's labels
    and each merged code is maximised one-to-one by ``linear_sum_assignment`` (min(K, G) matches),
    and the vector is flipped where the correlation is negative.

    A concept whose training label is constant and non-zero (every pair of lang, gender or
    truthfulqa shifts its one concept by +1) correlates with nothing; when ``delta_ND`` (the
    training shifts) is given, such a concept is scored instead by the cosine between each group
    vector and the mean signed shift of its pairs (``by="mean_shift_cosine"``). A concept that
    never changes in training is left unmatched.
    """
    shift = np.asarray(shift_NK, dtype=np.float64)
    codes = np.asarray(codes_NM, dtype=np.float64)
    if codes.shape[0] != shift.shape[0]:
        raise InputError(
            f"codes have {codes.shape[0]} rows but shift has {shift.shape[0]}; pass the codes "
            "and shifts of the same training pairs"
        )
    groups = merge_duplicate_latents(vectors_MD, merge_threshold)
    num_concepts = shift.shape[1]
    score_KG, by = concept_scores(
        codes @ groups.assign_MG, shift, groups.vectors_GD, delta_ND=delta_ND
    )
    changes_K = (shift != 0).any(axis=0)
    candidates = np.flatnonzero(changes_K)
    rows, cols = linear_sum_assignment(-np.abs(score_KG[candidates]))
    concepts = candidates[rows]

    latent_K = np.full(num_concepts, -1, np.int64)
    score_K = np.full(num_concepts, np.nan)
    vectors_KD = np.full((num_concepts, groups.vectors_GD.shape[1]), np.nan)
    members: list[tuple[int, ...]] = [() for _ in range(num_concepts)]
    for concept, group in zip(concepts, cols, strict=True):
        score = score_KG[concept, group]
        latent_K[concept] = groups.members[group][0]
        members[concept] = groups.members[group]
        score_K[concept] = score
        vectors_KD[concept] = groups.vectors_GD[group] * (-1.0 if score < 0 else 1.0)
    by = [how if latent_K[k] >= 0 else "" for k, how in enumerate(by)]
    return ConceptMatching(latent_K, members, score_K, by, vectors_KD, groups)


# --------------------------------------------------------------------------- vectors and alpha


class ConceptDirections(NamedTuple):
    """Fixed concept directions of one method (one member), one per concept of the source table:
    the vectors the evaluation adds to embeddings."""

    vectors_KD: np.ndarray
    """Unit vectors pointing along +concept; NaN rows where a concept has none."""
    alpha_K: np.ndarray
    """Least-squares scale on the training pairs; NaN where it cannot be fitted."""
    n_train_K: np.ndarray
    """Number of single-concept training pairs per concept."""
    matching: ConceptMatching | None
    """How the vectors were picked (learnt models only)."""


def fit_alpha(
    vectors_KD: np.ndarray, delta_ND: np.ndarray, shift_NK: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """alpha_c = argmin_a sum_i ||s_i d_z_i - a v_c||^2 over the single-concept pairs of c
    (s_i their shift sign) = mean(s_i <d_z_i, v_c>) / ||v_c||^2. Returns alpha [K] (NaN where c
    has no pair or no vector) and the pair counts [K]."""
    vectors = np.asarray(vectors_KD, dtype=np.float64)
    concept_N, sign_N = single_concept_labels(shift_NK)
    keep = concept_N >= 0
    proj_NK = np.asarray(delta_ND)[keep] @ vectors.T
    proj_N = sign_N[keep] * proj_NK[np.arange(len(proj_NK)), concept_N[keep]]
    mean, _, count = grouped_stats(proj_N, concept_N[keep], len(vectors))
    return mean / (vectors**2).sum(axis=1), count


class _SingleConceptShifts(NamedTuple):
    delta_ND: np.ndarray
    """The shifts of the single-concept pairs (float64)."""
    shift_NK: np.ndarray
    """Their concept shifts."""
    sums_KD: np.ndarray
    """Per concept, the sum of s * d_z over its single-concept pairs (s: the sign of its change)."""
    count_K: np.ndarray
    """Per concept, the number of its single-concept pairs."""


def _single_concept_shifts(table: EmbeddingTable, what: str) -> _SingleConceptShifts:
    shift = _require_shift(table, what)
    concept_N, sign_N = single_concept_labels(shift)
    keep = concept_N >= 0
    delta_ND = table.z_tilde[keep].astype(np.float64) - table.z[keep]
    sums_KD, count_K = _signed_sums(concept_N[keep], sign_N[keep], delta_ND, shift.shape[1])
    return _SingleConceptShifts(delta_ND, shift[keep], sums_KD, count_K)


def mean_difference_directions(train: EmbeddingTable) -> ConceptDirections:
    """MD: per concept, the mean of s * d_z over its single-concept training pairs (reverse pairs
    flipped, so the vector points along +concept), normalised; alpha by :func:`fit_alpha`
    (which gives back the norm of that mean)."""
    shifts = _single_concept_shifts(train, "training")
    vectors_KD = np.where(shifts.count_K[:, None] > 0, unit_rows(shifts.sums_KD), np.nan)
    alpha_K, _ = fit_alpha(vectors_KD, shifts.delta_ND, shifts.shift_NK)
    return ConceptDirections(vectors_KD, alpha_K, shifts.count_K, None)


def mean_shift(
    table: EmbeddingTable, concept: str | None = None, *, what: str = "embedding"
) -> tuple[np.ndarray, int]:
    """The mean shift [D] (float64) of ``table`` and the number of pairs it averages.

    With ``concept``: the mean of s * d_z over the single-concept pairs of that concept (s: the
    sign of its change), i.e. :func:`mean_difference_directions`' MD vector before it is
    normalised (its norm is MD's alpha). Without: the plain mean of d_z over every pair.
    """
    if concept is None:
        if len(table) == 0:
            raise InputError(f"the {what} table has no pairs to average")
        return (table.z_tilde.astype(np.float64) - table.z).mean(axis=0), len(table)
    names = _concept_names(table, what)
    if concept not in names:
        raise InputError(f"concept {concept!r}: not in the {what} table (concepts: {names})")
    k = names.index(concept)
    shifts = _single_concept_shifts(table, what)
    count = int(shifts.count_K[k])
    if count == 0:
        raise InputError(
            f"concept {concept!r}: the {what} table has no pair in which only it changes"
        )
    return shifts.sums_KD[k] / count, count


def learned_directions(
    model: SteeringModel, train: EmbeddingTable, *, merge_threshold: float = MERGE_THRESHOLD
) -> ConceptDirections:
    """A learnt model's decoder rows (raw units) matched to concepts on the training pairs
    (:func:`match_concepts`), with alpha by :func:`fit_alpha`."""
    shift = _require_shift(train, "training")
    delta = train.delta
    matching = match_concepts(
        model.encode(delta),
        shift,
        model.steering_vectors,
        delta_ND=delta,
        merge_threshold=merge_threshold,
    )
    alpha_K, count_K = fit_alpha(matching.vectors_KD, delta, shift)
    return ConceptDirections(matching.vectors_KD, alpha_K, count_K, matching)


def concept_steps(
    vectors: ConceptDirections, concept_N: np.ndarray, sign_N: np.ndarray
) -> np.ndarray:
    """The steps s * alpha_c * v_c [N, D] (c = ``concept_N``, s = ``sign_N``); NaN rows where the
    concept has no vector or alpha."""
    step_N = sign_N * vectors.alpha_K[concept_N]
    return step_N[:, None] * vectors.vectors_KD[concept_N]


def steered_cosines(
    z_ND: np.ndarray,
    z_tilde_ND: np.ndarray,
    vectors: ConceptDirections,
    concept_N: np.ndarray,
    sign_N: np.ndarray,
) -> np.ndarray:
    """cos(z + s * alpha_c * v_c, z~) for every pair (c = ``concept_N``, an index into the
    vectors; s = ``sign_N``). NaN where the concept has no vector or alpha."""
    z = np.asarray(z_ND, dtype=np.float64)
    steered = z + concept_steps(vectors, concept_N, sign_N)
    return row_cosine(steered, np.asarray(z_tilde_ND, dtype=np.float64))


# --------------------------------------------------------------------------- the evaluation


def _require_shift(table: EmbeddingTable, what: str) -> np.ndarray:
    if table.shift is None:
        raise InputError(
            f"the {what} table has no shift column; steering accuracy needs the true concept "
            "shifts of each pair"
        )
    return np.asarray(table.shift, dtype=np.float64)


def _concept_names(table: EmbeddingTable, what: str) -> list[str]:
    shift = _require_shift(table, what)
    names = list(table.concepts or [f"concept-{k}" for k in range(shift.shape[1])])
    if len(names) != shift.shape[1]:
        raise InputError(
            f"the {what} table names {len(names)} concepts but its shift has {shift.shape[1]} "
            "columns; re-create the table"
        )
    return names


class _MemberScores(NamedTuple):
    vectors: ConceptDirections
    mean_K: np.ndarray
    std_K: np.ndarray
    recon_mean_K: np.ndarray | None
    recon_std_K: np.ndarray | None


class SteeringSetup(NamedTuple):
    """What every steering evaluation of one source table (or source -> target) starts from."""

    source_names: list[str]
    target_names: list[str]
    pairs: list[tuple[int, int]]
    """(source concept index, target concept index) of every concept to score."""
    train: EmbeddingTable
    """The source's training rows: vectors, matching and alpha come from them."""
    test: EmbeddingTable
    """The scored rows: the source's test rows, or the target's (OOD)."""


def steering_setup(
    source: EmbeddingTable,
    target: EmbeddingTable | None,
    concept_map: Mapping[str, str] | None,
    train_split: str,
    test_split: str,
) -> SteeringSetup:
    """Concept names, the concepts to score and the train / scored rows, checked (one-line
    errors for a missing shift, mismatched widths, an unknown concept or an empty split)."""
    source_names = _concept_names(source, "source")
    scored_table = source if target is None else target
    target_names = _concept_names(scored_table, "target")
    if scored_table.dim != source.dim:
        raise InputError(
            f"target embeddings have width {scored_table.dim} but the source has {source.dim}; "
            "both must come from the same model and layer"
        )
    pairs = _resolve_concept_map(source_names, target_names, concept_map, target is None)
    train = source.subset(train_split)
    test = scored_table.subset(test_split)
    scored_what = "source" if target is None else "target"
    for what, table, split in (("source", train, train_split), (scored_what, test, test_split)):
        if len(table) == 0:
            raise InputError(
                f"the {what} table has no rows with split '{split}'; check the split names"
            )
    return SteeringSetup(source_names, target_names, pairs, train, test)


def method_directions(
    train: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]],
    *,
    mean_difference: bool = True,
    merge_threshold: float = MERGE_THRESHOLD,
) -> dict[str, list[ConceptDirections]]:
    """The fixed concept directions of every method, one entry per member: ``md``
    (:func:`mean_difference_directions`, unless ``mean_difference=False``) first, then each run
    (:func:`learned_directions`), all from the training rows ``train``."""
    _check_runs(runs, train.dim)
    out: dict[str, list[ConceptDirections]] = {}
    if mean_difference:
        out[MEAN_DIFFERENCE] = [mean_difference_directions(train)]
    for name, members in runs.items():
        out[name] = [learned_directions(m, train, merge_threshold=merge_threshold) for m in members]
    return out


def evaluate_steering(
    source: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]] | None = None,
    *,
    target: EmbeddingTable | None = None,
    concept_map: Mapping[str, str] | None = None,
    mean_difference: bool = True,
    reconstruction: bool = True,
    merge_threshold: float = MERGE_THRESHOLD,
    train_split: str = "train",
    test_split: str = "test",
) -> dict:
    """Steering accuracy of every method on one table (or source -> target), as a JSON-ready dict.

    ``source``: vectors, matching and alpha come from its ``train_split`` rows. ``runs``: method
    name -> the members of a trained run (e.g. ``{"ssae": load_run(...), "aff": load_run(...)}``);
    ``md`` (mean difference) is added unless ``mean_difference=False``. ``target``: score on its
    ``test_split`` rows instead of the source's (OOD). ``concept_map``: source concept -> target
    concept to score (default: every source concept, onto the target concept of the same name).

    Returns the JSON-ready structure described in the module docstring.

    A concept that cannot be scored has ``status`` != ``"ok"`` and ``None`` in place of scores.
    ``aggregate`` averages over the concepts each member could score (per member, then mean and
    std over members); ``reconstruction`` over the concepts with test pairs.
    """
    runs = dict(runs or {})
    _check_runs(runs, source.dim)
    setup = steering_setup(source, target, concept_map, train_split, test_split)
    source_names, target_names, pairs, train, test = setup
    scored = _ScoredPairs.of(test, pairs, len(target_names), len(source_names))
    directions = method_directions(
        train, runs, mean_difference=mean_difference, merge_threshold=merge_threshold
    )
    methods = {
        name: [
            scored.score(vectors, None if name not in runs else runs[name][i], reconstruction)
            for i, vectors in enumerate(members)
        ]
        for name, members in directions.items()
    }
    report = {
        name: _method_report(
            scores, scored.identity, pairs, source_names, target_names, runs.get(name)
        )
        for name, scores in methods.items()
    }
    return {
        "concept_map": {source_names[s]: target_names[t] for s, t in pairs},
        "merge_threshold": merge_threshold,
        "train_split": train_split,
        "test_split": test_split,
        "n_train_pairs": len(train),
        "n_test_pairs": len(test),
        "n_single_concept_test_pairs": len(scored.concept_N),
        "methods": report,
    }


def _check_runs(runs: Mapping[str, Sequence[SteeringModel]], dim: int) -> None:
    if MEAN_DIFFERENCE in runs:
        raise InputError(f"method name {MEAN_DIFFERENCE!r} is reserved for the mean difference")
    for name, members in runs.items():
        if not members:
            raise InputError(f"method {name!r}: the run has no members; train it first")
        for model in members:
            if int(model.config.get("dim", dim)) != dim:
                raise InputError(
                    f"method {name!r}: model width {model.config['dim']} != embedding width "
                    f"{dim}; use a run trained on these embeddings"
                )


def scored_rows(
    test: EmbeddingTable, pairs: list[tuple[int, int]], num_target: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single-concept pairs of ``test`` whose concept is scored: their row indices, the
    SOURCE concept whose vector steers each (``pairs``: source index -> target index; target
    concepts not in it are skipped) and the sign of its change."""
    source_of_target = np.full(num_target, -1, np.int64)
    for s, t in pairs:
        source_of_target[t] = s
    target_concept_N, sign_N = single_concept_labels(_require_shift(test, "target"))
    concept_N = np.where(target_concept_N >= 0, source_of_target[target_concept_N], -1)
    rows = np.flatnonzero(concept_N >= 0)
    return rows, concept_N[rows], sign_N[rows]


class _ScoredPairs(NamedTuple):
    """The single-concept test pairs, labelled by the SOURCE concept whose vector steers them."""

    z: np.ndarray
    z_tilde: np.ndarray
    concept_N: np.ndarray
    sign_N: np.ndarray
    num: int
    identity: tuple[np.ndarray, np.ndarray, np.ndarray]
    """Mean and std of the identity cosine cos(z, z~), and the number of pairs, per concept."""

    @classmethod
    def of(
        cls, test: EmbeddingTable, pairs: list[tuple[int, int]], num_target: int, num: int
    ) -> _ScoredPairs:
        rows, concept_N, sign_N = scored_rows(test, pairs, num_target)
        z, z_tilde = test.z[rows].astype(np.float64), test.z_tilde[rows].astype(np.float64)
        identity = grouped_stats(row_cosine(z, z_tilde), concept_N, num)
        return cls(z, z_tilde, concept_N, sign_N, num, identity)

    def score(
        self, vectors: ConceptDirections, model: SteeringModel | None, reconstruction: bool
    ) -> _MemberScores:
        z, z_tilde = self.z, self.z_tilde
        mean_K, std_K, _ = grouped_stats(
            steered_cosines(z, z_tilde, vectors, self.concept_N, self.sign_N),
            self.concept_N,
            self.num,
        )
        recon_mean_K = recon_std_K = None
        if model is not None and reconstruction:
            recon = np.zeros_like(z)
            if len(z):
                recon = np.asarray(model.reconstruct((z_tilde - z).astype(np.float32)), np.float64)
            recon_mean_K, recon_std_K, _ = grouped_stats(
                row_cosine(z + recon, z_tilde), self.concept_N, self.num
            )
        return _MemberScores(vectors, mean_K, std_K, recon_mean_K, recon_std_K)


def _resolve_concept_map(
    source_names: list[str],
    target_names: list[str],
    concept_map: Mapping[str, str] | None,
    in_distribution: bool,
) -> list[tuple[int, int]]:
    """(source index, target index) of every concept to score."""
    if concept_map is None:
        if in_distribution:
            return [(k, k) for k in range(len(source_names))]
        shared = [name for name in source_names if name in target_names]
        if not shared:
            raise InputError(
                f"source concepts {source_names} and target concepts {target_names} share no "
                "name; give a concept_map (source concept -> target concept)"
            )
        concept_map = {name: name for name in shared}
    pairs = []
    for source_name, target_name in concept_map.items():
        if source_name not in source_names:
            raise InputError(
                f"concept_map: {source_name!r} is not a source concept (have {source_names})"
            )
        if target_name not in target_names:
            raise InputError(
                f"concept_map: {target_name!r} is not a target concept (have {target_names})"
            )
        pairs.append((source_names.index(source_name), target_names.index(target_name)))
    targets = [t for _, t in pairs]
    if len(set(targets)) != len(targets):
        raise InputError("concept_map: two source concepts map to the same target concept")
    return pairs


def _method_report(
    scores: list[_MemberScores],
    identity: tuple[np.ndarray, np.ndarray, np.ndarray],
    pairs: list[tuple[int, int]],
    source_names: list[str],
    target_names: list[str],
    members: Sequence[SteeringModel] | None,
) -> dict:
    identity_mean_K, identity_std_K, n_test_K = identity
    learnt = members is not None
    with_recon = learnt and scores[0].recon_mean_K is not None
    concepts: dict[str, dict] = {}
    # per member: (steered, identity) of every concept it scored; reconstruction likewise
    per_member: list[list[tuple[float, float]]] = [[] for _ in scores]
    recon_member: list[list[tuple[float, float]]] = [[] for _ in scores]
    for s, t in pairs:
        n_test, base = int(n_test_K[s]), float(identity_mean_K[s])
        entry = _concept_entry(scores, s, n_test, base, float(identity_std_K[s]), per_member)
        entry = {"target_concept": target_names[t], **entry}
        if learnt:
            entry["match"] = _match_entry(scores, s)
        if with_recon:
            entry.update(_reconstruction_entry(scores, s, n_test, base, recon_member))
        concepts[source_names[s]] = entry
    merged = None
    if learnt:
        groups = [m.vectors.matching.groups for m in scores]
        merged = [len(g.group_M) - len(g.members) for g in groups]
    return {
        "seeds": [m.config.get("seed") for m in members] if learnt else None,
        "duplicates_merged": merged,
        "concepts": concepts,
        "aggregate": _aggregate(per_member, recon_member if with_recon else None, len(pairs)),
    }


def _concept_entry(
    scores: list[_MemberScores],
    s: int,
    n_test: int,
    base: float,
    base_std: float,
    per_member: list[list[tuple[float, float]]],
) -> dict:
    """Status, identity, steered cosine, gain and alpha of source concept ``s`` (every member);
    appends each member's (steered, identity) to ``per_member``."""
    n_train = int(scores[0].vectors.n_train_K[s])
    steered = [float(m.mean_K[s]) if n_test else math.nan for m in scores]
    scored = [math.isfinite(v) for v in steered]
    if n_test == 0:
        status = NO_TEST_PAIRS
    elif n_train == 0:
        status = NO_TRAIN_PAIRS
    elif not any(scored):
        status = NO_LATENT
    else:
        status = STATUS_OK
    entry: dict = {
        "status": status,
        "n_train_pairs": n_train,
        "n_test_pairs": n_test,
        "identity": None,
        "steered": None,
        "gain": None,
        "alpha": None,
    }
    if n_test:
        entry["identity"] = {"mean": rounded(base), "std_pairs": rounded(base_std)}
    if status == STATUS_OK:
        values = [v if ok else None for v, ok in zip(steered, scored, strict=True)]
        pair_stds = [float(m.std_K[s]) for m, ok in zip(scores, scored, strict=True) if ok]
        alphas = [float(m.vectors.alpha_K[s]) for m in scores]
        entry["steered"] = {**seed_summary(values), "std_pairs": rounded(np.mean(pair_stds))}
        entry["gain"] = seed_summary([None if v is None else v - base for v in values])
        entry["alpha"] = seed_summary(
            [a if ok else None for a, ok in zip(alphas, scored, strict=True)]
        )
        for i, v in enumerate(values):
            if v is not None:
                per_member[i].append((v, base))
    return entry


def _match_entry(scores: list[_MemberScores], s: int) -> dict:
    """Which latent each member matched to source concept ``s``, and how well."""
    matchings = [m.vectors.matching for m in scores]
    corr = [float(mt.score_K[s]) for mt in matchings]
    return {
        "latent": [int(mt.latent_K[s]) if mt.latent_K[s] >= 0 else None for mt in matchings],
        "merged_latents": [list(mt.members[s]) for mt in matchings],
        "corr": [rounded(c) for c in corr],
        "abs_corr": seed_summary([abs(c) if math.isfinite(c) else None for c in corr]),
        "by": [mt.by[s] or None for mt in matchings],
    }


def _reconstruction_entry(
    scores: list[_MemberScores],
    s: int,
    n_test: int,
    base: float,
    recon_member: list[list[tuple[float, float]]],
) -> dict:
    """The paper-parity reconstruction score of source concept ``s``; appends each member's
    (reconstruction, identity) to ``recon_member``."""
    if not n_test:
        return {"reconstruction": None, "reconstruction_gain": None}
    recon = [float(m.recon_mean_K[s]) for m in scores]
    for i, v in enumerate(recon):
        recon_member[i].append((v, base))
    return {
        "reconstruction": {
            **seed_summary(recon),
            "std_pairs": rounded(np.mean([m.recon_std_K[s] for m in scores])),
        },
        "reconstruction_gain": seed_summary([v - base for v in recon]),
    }


def _aggregate(
    per_member: list[list[tuple[float, float]]],
    recon_member: list[list[tuple[float, float]]] | None,
    num_concepts: int,
) -> dict:
    """Mean over the concepts each member scored, then spread over members."""

    def over_concepts(items: list[tuple[float, float]], part: int | None) -> float | None:
        if not items:
            return None
        if part is None:
            return float(np.mean([v - base for v, base in items]))
        return float(np.mean([item[part] for item in items]))

    out = {
        "n_concepts": num_concepts,
        "n_scored": [len(items) for items in per_member],
        "steered": seed_summary([over_concepts(items, 0) for items in per_member]),
        "identity": seed_summary([over_concepts(items, 1) for items in per_member]),
        "gain": seed_summary([over_concepts(items, None) for items in per_member]),
    }
    if recon_member is not None:
        out["reconstruction"] = seed_summary([over_concepts(items, 0) for items in recon_member])
        out["reconstruction_gain"] = seed_summary(
            [over_concepts(items, None) for items in recon_member]
        )
    return out
