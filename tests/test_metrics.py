import numpy as np
import pytest

from ssae_core.metrics import correlation_matrix, match_columns, mcc, pairwise, udr, vector_mcc


@pytest.fixture
def sources() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((500, 4))


def test_mcc_of_identical_matrices_is_one(sources):
    assert mcc(sources, sources) == pytest.approx(1.0)


def test_mcc_invariant_to_permutation_sign_and_scale(sources):
    transformed = sources[:, [2, 0, 3, 1]] * np.array([-3.0, 0.5, 7.0, -0.01]) + 5.0
    assert mcc(sources, transformed) == pytest.approx(1.0)
    match = match_columns(sources, transformed)
    assert list(match.cols[np.argsort(match.rows)]) == [1, 3, 0, 2]
    # source 0 -> column 1 (x0.5), 1 -> 3 (x-0.01), 2 -> 0 (x-3), 3 -> 2 (x7)
    assert np.sign(match.corr[np.argsort(match.rows)]).tolist() == [1, -1, -1, 1]


def test_mcc_hand_computed_value():
    # a = [1,2,3,4]; b1 = a exactly (corr 1); b2 = [1,3,2,4] (corr 0.8 with a, 0.8 with itself...)
    a = np.array([[1.0, 1.0], [2.0, -1.0], [3.0, 1.0], [4.0, -1.0]])
    b = np.array([[1.0, 1.0], [3.0, -1.0], [2.0, 1.0], [4.0, -1.0]])
    # corr(a0, b0) = 0.8, corr(a1, b1) = 1, corr(a0, b1) = corr(a1, b0) = -0.447...
    assert correlation_matrix(a, b)[0, 0] == pytest.approx(0.8)
    assert mcc(a, b) == pytest.approx((0.8 + 1.0) / 2)


def test_mcc_with_more_latents_than_sources(sources):
    rng = np.random.default_rng(1)
    codes = np.concatenate([sources[:, ::-1], rng.standard_normal((500, 3))], axis=1)
    assert mcc(codes, sources) == pytest.approx(1.0)
    assert mcc(sources, codes) == pytest.approx(1.0)
    assert match_columns(codes, sources).rows.shape == (4,)


def test_mcc_of_independent_noise_is_low(sources):
    noise = np.random.default_rng(2).standard_normal((500, 4))
    assert mcc(sources, noise) < 0.15


def test_constant_column_counts_as_zero_correlation(sources):
    const = sources.copy()
    const[:, 0] = 3.0
    assert mcc(sources, const) == pytest.approx(0.75, abs=0.05)


def test_vector_mcc_compares_rows(sources):
    vectors = sources.T  # 4 vectors of width 500
    assert vector_mcc(vectors, -vectors[[1, 0, 3, 2]]) == pytest.approx(1.0)


def test_udr_is_median_of_pairwise_scores():
    items = [np.array([1.0]), np.array([2.0]), np.array([4.0])]
    scores = pairwise(items, lambda a, b: float(a[0] * b[0]))
    assert scores == [2.0, 4.0, 8.0]
    assert udr(scores) == 4.0
    assert np.isnan(udr([]))
