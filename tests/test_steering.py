"""Steering accuracy on small planted data: every expected number follows from the construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ssae_core.errors import InputError
from ssae_core.evaluation.steering_accuracy import (
    MATCH_BY_CORRELATION,
    MATCH_BY_MEAN_SHIFT,
    NO_LATENT,
    NO_TEST_PAIRS,
    NO_TRAIN_PAIRS,
    STATUS_OK,
    evaluate_steering,
    fit_alpha,
    match_concepts,
    mean_difference_directions,
    merge_duplicate_latents,
    single_concept_labels,
)
from ssae_core.io import EmbeddingTable

DIM = 6
SHIFTS_2 = np.array(
    [[1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float32
)


class FakeModel:
    """A linear 'autoencoder': codes are projections on its rows, reconstruction is exact."""

    def __init__(self, rows_MD: np.ndarray, seed: int = 0) -> None:
        self.rows = np.asarray(rows_MD, dtype=np.float64)
        self.config = {"seed": seed, "dim": self.rows.shape[1]}

    @property
    def steering_vectors(self) -> np.ndarray:
        return (self.rows / np.linalg.norm(self.rows, axis=1, keepdims=True)).astype(np.float32)

    def encode(self, delta_ND: np.ndarray) -> np.ndarray:
        return np.asarray(delta_ND, np.float64) @ self.rows.T

    def reconstruct(self, delta_ND: np.ndarray) -> np.ndarray:
        return np.asarray(delta_ND, np.float64)


def directions(num: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """``num`` orthonormal directions [num, dim]."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, num)))
    return q.T


def planted_table(
    shift_NK: np.ndarray,
    split: list[str],
    directions_KD: np.ndarray,
    scale: float = 2.0,
    concepts: list[str] | None = None,
    seed: int = 1,
) -> EmbeddingTable:
    """z random, z~ = z + scale * shift @ directions: an exact linear shift model."""
    shift = np.asarray(shift_NK, dtype=np.float32)
    z = np.random.default_rng(seed).standard_normal((len(shift), directions_KD.shape[1]))
    z_tilde = z + scale * shift @ directions_KD
    return EmbeddingTable(
        pair_id=np.arange(len(shift), dtype=np.int64),
        split=np.array(split, dtype=object),
        z=z.astype(np.float32),
        z_tilde=z_tilde.astype(np.float32),
        shift=shift,
        concepts=concepts or [f"c{k}" for k in range(shift.shape[1])],
    )


def binary_like(
    concepts=("language", "gender"), seed: int = 1
) -> tuple[EmbeddingTable, np.ndarray]:
    a = directions(2)
    shift = np.concatenate([SHIFTS_2] * 6)
    split = ["train"] * 32 + ["test"] * 16
    return planted_table(shift, split, a, concepts=list(concepts), seed=seed), a


# --------------------------------------------------------------------------- labels, matching


def test_single_concept_labels_keep_the_sign():
    concept, sign = single_concept_labels(np.array([[1, 0], [0, -1], [1, 1], [0, 0]]))
    assert concept.tolist() == [0, 1, -1, -1]
    assert sign.tolist() == [1, -1, 0, 0]


def test_matching_recovers_a_planted_permutation_and_sign():
    rng = np.random.default_rng(0)
    shift = rng.choice([-1.0, 0.0, 1.0], size=(400, 3))
    rows = directions(4)
    # latent 2 codes concept 0, latent 0 codes -concept 1, latent 3 codes concept 2; latent 1 noise
    codes = np.stack(
        [-3 * shift[:, 1], rng.standard_normal(400), 0.5 * shift[:, 0], 2 * shift[:, 2]], axis=1
    )
    codes += 0.05 * rng.standard_normal(codes.shape)
    match = match_concepts(codes, shift, rows)
    assert match.latent_K.tolist() == [2, 0, 3]
    assert np.sign(match.score_K).tolist() == [1, -1, 1]
    assert np.all(np.abs(match.score_K) > 0.99)
    assert match.by == [MATCH_BY_CORRELATION] * 3
    # the vector of concept 1 is the flipped row of latent 0
    np.testing.assert_allclose(match.vectors_KD[1], -rows[0], atol=1e-12)
    np.testing.assert_allclose(match.vectors_KD[0], rows[2], atol=1e-12)


@pytest.mark.parametrize("twin_sign", [1.0, -1.0])
def test_duplicate_latents_are_merged(twin_sign):
    rng = np.random.default_rng(0)
    a = directions(3)
    shift = rng.choice([-1.0, 0.0, 1.0], size=(300, 2))
    # latents 0 and 2 share concept 0's direction (cos 0.99, or -0.99 for an anti-parallel twin);
    # each carries a random part of its code, so only their sign-aligned sum is exactly s0
    twin = twin_sign * (0.99 * a[0] + math.sqrt(1 - 0.99**2) * a[2])
    rows = np.stack([a[0], a[1], twin])
    part = rng.uniform(0, 1, 300)
    codes = np.stack(
        [part * shift[:, 0], shift[:, 1], twin_sign * (1 - part) * shift[:, 0]], axis=1
    )

    groups = merge_duplicate_latents(rows, 0.95)
    assert groups.members == [(0, 2), (1,)]
    assert groups.sign_M.tolist() == [1.0, 1.0, twin_sign]
    merged = match_concepts(codes, shift, rows, merge_threshold=0.95)
    assert merged.members[0] == (0, 2) and merged.latent_K[0] == 0
    assert merged.score_K[0] == pytest.approx(1.0)
    # the merged vector is the sign-aligned mean of the two unit rows
    expected = a[0] + twin_sign * twin
    np.testing.assert_allclose(merged.vectors_KD[0], expected / np.linalg.norm(expected))

    unmerged = match_concepts(codes, shift, rows, merge_threshold=1.0)
    assert len(unmerged.groups.members) == 3
    assert len(unmerged.members[0]) == 1
    assert abs(unmerged.score_K[0]) < 0.95


def test_constant_label_is_matched_by_mean_shift_direction():
    a = directions(2)
    shift = np.ones((20, 1))
    delta = shift @ a[:1] * 2 + 0.01 * np.random.default_rng(0).standard_normal((20, DIM))
    rows = np.stack([a[1], -a[0]])  # the concept's direction is latent 1, flipped
    match = match_concepts(np.zeros((20, 2)), shift, rows, delta_ND=delta)
    assert match.latent_K.tolist() == [1]
    assert match.by == [MATCH_BY_MEAN_SHIFT]
    assert match.score_K[0] < -0.99
    np.testing.assert_allclose(match.vectors_KD[0], a[0], atol=1e-12)


# --------------------------------------------------------------------------- MD and alpha


def test_mean_difference_flips_reverse_pairs():
    a = directions(1)
    # one forward pair and three reverse pairs: a plain mean of d_z would point along -a
    table = planted_table(np.array([[1.0], [-1.0], [-1.0], [-1.0]]), ["train"] * 4, a, scale=3.0)
    md = mean_difference_directions(table)
    np.testing.assert_allclose(md.vectors_KD[0], a[0], atol=1e-6)
    assert md.alpha_K[0] == pytest.approx(3.0, abs=1e-5)
    assert md.n_train_K.tolist() == [1 + 3]


def test_alpha_is_the_signed_least_squares_scale():
    v = np.array([[1.0, 0.0]])
    delta = np.array([[2.0, 5.0], [-4.0, 1.0], [9.0, 9.0]])
    shift = np.array([[1.0], [-1.0], [0.0]])  # the last pair changes nothing: ignored
    alpha, count = fit_alpha(v, delta, shift)
    assert alpha[0] == pytest.approx((2.0 + 4.0) / 2)
    assert count.tolist() == [2]


# --------------------------------------------------------------------------- scores


def test_identity_baseline_and_gain_by_hand():
    # one concept along e2; training: alpha = 1. Test pair 1 is reached exactly, pair 2 is not.
    table = EmbeddingTable(
        pair_id=np.arange(3),
        split=np.array(["train", "test", "test"], dtype=object),
        z=np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32),
        z_tilde=np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0]], dtype=np.float32),
        shift=np.ones((3, 1), dtype=np.float32),
        concepts=["truth"],
    )
    out = evaluate_steering(table)
    entry = out["methods"]["md"]["concepts"]["truth"]
    assert entry["status"] == STATUS_OK
    assert entry["alpha"]["mean"] == pytest.approx(1.0)
    identity = [1 / math.sqrt(2), 1 / math.sqrt(5)]  # cos([1,0],[1,1]), cos([1,0],[1,2])
    steered = [1.0, 3 / math.sqrt(10)]  # z + v = [1,1] against [1,1] and [1,2]
    assert entry["identity"]["mean"] == pytest.approx(np.mean(identity), abs=1e-6)
    assert entry["identity"]["std_pairs"] == pytest.approx(np.std(identity), abs=1e-6)
    assert entry["steered"]["mean"] == pytest.approx(np.mean(steered), abs=1e-6)
    assert entry["steered"]["std_pairs"] == pytest.approx(np.std(steered), abs=1e-6)
    assert entry["gain"]["mean"] == pytest.approx(np.mean(steered) - np.mean(identity), abs=1e-6)
    assert entry["n_test_pairs"] == 2 and entry["n_train_pairs"] == 1
    aggregate = out["methods"]["md"]["aggregate"]
    assert aggregate["steered"]["mean"] == entry["steered"]["mean"]
    assert aggregate["n_scored"] == [1]


def test_perfect_vectors_score_cosine_one_for_every_method():
    table, a = binary_like()
    # a model whose latents are the concept directions permuted and flipped
    models = [FakeModel(np.stack([a[1], -a[0]]), seed=0), FakeModel(np.stack([-a[1], a[0]]), 1)]
    out = evaluate_steering(table, {"ssae": models})
    assert set(out["methods"]) == {"md", "ssae"}
    assert out["n_single_concept_test_pairs"] == 8
    for method in ("md", "ssae"):
        for name in ("language", "gender"):
            entry = out["methods"][method]["concepts"][name]
            assert entry["status"] == STATUS_OK
            assert entry["steered"]["mean"] == pytest.approx(1.0, abs=1e-6)
            assert entry["steered"]["std_pairs"] == pytest.approx(0.0, abs=1e-6)
            assert entry["alpha"]["mean"] == pytest.approx(2.0, abs=1e-5)
            assert entry["gain"]["mean"] == pytest.approx(1.0 - entry["identity"]["mean"], 1e-5)
            assert entry["n_test_pairs"] == 4  # two forward and two reverse pairs
    ssae = out["methods"]["ssae"]
    assert ssae["seeds"] == [0, 1]
    assert ssae["concepts"]["language"]["match"]["latent"] == [1, 1]
    assert ssae["concepts"]["language"]["match"]["corr"] == [
        pytest.approx(-1.0),
        pytest.approx(1.0),
    ]
    assert ssae["concepts"]["gender"]["match"]["corr"] == [pytest.approx(1.0), pytest.approx(-1.0)]
    assert ssae["concepts"]["gender"]["alpha"]["values"] == [pytest.approx(2.0)] * 2
    assert ssae["concepts"]["gender"]["reconstruction"]["mean"] == pytest.approx(1.0)
    assert ssae["aggregate"]["steered"]["mean"] == pytest.approx(1.0)
    assert ssae["aggregate"]["n_scored"] == [2, 2]
    assert ssae["duplicates_merged"] == [0, 0]
    json.dumps(out)  # JSON-ready


def test_a_set_without_single_concept_test_pairs_is_reported_not_zeroed():
    a = directions(2)
    shift = np.concatenate([SHIFTS_2[:4]] * 4 + [SHIFTS_2[4:]] * 2)  # test: two-concept only
    table = planted_table(shift, ["train"] * 16 + ["test"] * 8, a)
    out = evaluate_steering(table, {"ssae": [FakeModel(a)]})
    assert out["n_single_concept_test_pairs"] == 0
    for method in ("md", "ssae"):
        for entry in out["methods"][method]["concepts"].values():
            assert entry["status"] == NO_TEST_PAIRS
            assert entry["steered"] is None and entry["identity"] is None
            assert entry["gain"] is None and entry["n_test_pairs"] == 0
        aggregate = out["methods"][method]["aggregate"]
        assert aggregate["n_scored"] == [0] * len(aggregate["n_scored"])
        assert aggregate["steered"]["mean"] is None
    assert out["methods"]["ssae"]["concepts"]["c0"]["reconstruction"] is None


def test_missing_training_pairs_and_missing_latents_have_their_own_status():
    a = directions(2)
    # concept 1 changes only together with concept 0 in training: no single-concept pair for it
    shift = np.concatenate([[[1, 0], [-1, 0], [1, 1], [-1, -1]] * 4, SHIFTS_2[:4]])
    table = planted_table(shift, ["train"] * 16 + ["test"] * 4, a)
    one_latent = FakeModel(a[:1])  # fewer latents than concepts
    out = evaluate_steering(table, {"ssae": [one_latent]})
    md = out["methods"]["md"]["concepts"]
    assert md["c0"]["status"] == STATUS_OK and md["c1"]["status"] == NO_TRAIN_PAIRS
    assert md["c1"]["steered"] is None and md["c1"]["identity"] is not None
    ssae = out["methods"]["ssae"]["concepts"]
    assert ssae["c1"]["status"] == NO_TRAIN_PAIRS
    assert ssae["c1"]["reconstruction"]["mean"] == pytest.approx(1.0)  # needs no training pairs

    balanced = planted_table(np.concatenate([SHIFTS_2] * 3), ["train"] * 16 + ["test"] * 8, a)
    out = evaluate_steering(balanced, {"ssae": [one_latent]}, mean_difference=False)
    statuses = {k: v["status"] for k, v in out["methods"]["ssae"]["concepts"].items()}
    assert sorted(statuses.values()) == sorted([STATUS_OK, NO_LATENT])
    assert set(out["methods"]) == {"ssae"}


def test_ood_vectors_from_the_source_steer_the_mapped_target_concept():
    source, a = binary_like()
    # target: one concept "sex", moved along the source's gender direction (scale 2 as well)
    target = planted_table(
        np.ones((10, 1)), ["train"] * 4 + ["test"] * 6, a[1:], concepts=["sex"], seed=7
    )
    model = FakeModel(np.stack([a[1], a[0]]))
    out = evaluate_steering(source, {"ssae": [model]}, target=target, concept_map={"gender": "sex"})
    assert out["concept_map"] == {"gender": "sex"}
    assert out["n_test_pairs"] == 6
    for method in ("md", "ssae"):
        concepts = out["methods"][method]["concepts"]
        assert list(concepts) == ["gender"]
        assert concepts["gender"]["target_concept"] == "sex"
        assert concepts["gender"]["n_test_pairs"] == 6
        assert concepts["gender"]["steered"]["mean"] == pytest.approx(1.0, abs=1e-6)
    # the language vector applied to gender-only target pairs does not reach them
    wrong = evaluate_steering(source, target=target, concept_map={"language": "sex"})
    assert wrong["methods"]["md"]["concepts"]["language"]["steered"]["mean"] < 0.99
    with pytest.raises(InputError, match="not a target concept"):
        evaluate_steering(source, target=target, concept_map={"gender": "gender"})
    with pytest.raises(InputError, match="share no name"):
        evaluate_steering(source, target=target)


def test_real_trained_models_give_a_complete_report():
    from ssae_core.train import TrainConfig, train

    table, _ = binary_like()
    cfg = TrainConfig(method="aff", latent_dim=2, seeds=(0, 1), epochs=2, min_steps=0)
    models = train(table.subset("train").delta, cfg, progress=False).models
    out = evaluate_steering(table, {"aff": models})
    entry = out["methods"]["aff"]["concepts"]["gender"]
    assert entry["status"] == STATUS_OK
    assert len(entry["steered"]["values"]) == 2 and len(entry["match"]["latent"]) == 2
    assert all(math.isfinite(v) for v in entry["reconstruction"]["values"])
    json.dumps(out)
