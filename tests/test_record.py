"""The training record: one L1 measure, the members' statuses, and outliers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ssae_core import outliers
from ssae_core.metrics import mcc
from ssae_core.record import NOT_CONVERGED, USABLE, MemberRecord, member_status
from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.train import TrainConfig, settled, train

BASE = TrainConfig(latent_dim=3, seeds=(0, 1), sparsity=0.75, batch_size=64, min_steps=800)


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(SynthConfig(num_concepts=3, max_changes=2, dim=16, num_pairs=3000))


def test_the_constraint_acts_on_the_l1_the_status_reads(synth):
    """On data without outliers, the train-mode batch L1 the constraint saw and the eval-mode L1
    over every training shift (after the BatchNorm statistics are recomputed) agree within
    10%, and the budget binds on the latter."""
    result = train(synth.subset("train").delta, BASE, progress=False)
    for model in result.models:
        record = model.record
        assert record.constraint_l1 == pytest.approx(record.l1, rel=0.1)
        assert record.l1 <= record.budget * 1.05
        assert record.multiplier > 0
        assert record.status == USABLE
        assert record.val_l1_se > 0  # the held-out L1 comes with its standard error
        assert record.steps >= BASE.min_steps
    assert MemberRecord.from_dict(record.to_dict(), "here") == record  # written and read back


def test_a_run_whose_multiplier_still_climbs_is_not_converged(synth):
    """A planted non-converging run: the multiplier moves 1e-5 a step towards a budget far below
    the data's L1, so at the step limit it is still climbing and the L1 is above its budget."""
    cfg = replace(BASE, sparsity=0.05, dual_lr=1e-5, min_steps=200, max_steps=300, seeds=(0,))
    result = train(synth.subset("train").delta, cfg, progress=False)
    (record,) = [m.record for m in result.models]
    assert not record.settled
    assert record.l1 > record.budget * 1.05
    assert record.status == NOT_CONVERGED
    assert record.steps <= 300 + 64  # stopped by the step limit (rounded up to an epoch)


def test_training_stops_once_the_lagrangian_settles(synth):
    cfg = replace(BASE, min_steps=200, max_steps=20_000, epochs=1, patience=0)
    result = train(synth.subset("train").delta, cfg, progress=False)
    assert all(settled(result.history, cfg))
    assert all(m.record.settled and m.record.steps < 20_000 for m in result.models)


def test_status_rule():
    assert member_status(0.5, 0.5, 0.1, False, 0.05) == USABLE
    assert member_status(0.2, 0.5, 0.1, False, 0.05) == USABLE  # sparser than the budget: one-sided
    assert member_status(0.5, 0.5, 0.0, True, 0.05) == "slack"
    assert member_status(0.6, 0.5, 0.1, True, 0.05) == "infeasible"
    assert member_status(0.6, 0.5, 0.1, False, 0.05) == NOT_CONVERGED
    assert member_status(0.6, None, 0.0, True, 0.05) == "unconstrained"


def _spiked(synth, count: int):
    """The training shifts with ``count`` pairs given one coordinate at 150x the median norm."""
    delta = synth.subset("train").delta.copy()
    median = np.median(np.linalg.norm(delta, axis=1))
    rows = np.random.default_rng(0).choice(len(delta), count, replace=False)
    delta[rows, 0] = 150 * median
    return delta, rows


def test_outliers_are_detected_against_the_training_median(synth):
    delta, rows = _spiked(synth, 3)
    limit = outliers.threshold(delta, 10)
    assert set(np.flatnonzero(outliers.above(delta, limit))) == set(rows)
    assert outliers.count(delta, {"test": delta[:10]}, 10)["train"] == 3


def test_dropping_outliers_keeps_a_few_spiked_pairs_from_owning_the_fit(synth):
    """3 pairs among 2,400 with one coordinate at 150x the median shift norm: with the outlier
    rule the fit is as good as on clean data, and the record says what was dropped."""
    delta, _ = _spiked(synth, 3)
    test = synth.subset("test")
    kept = train(delta, BASE, progress=False).models  # the default drops above 10x the median
    for model in kept:
        assert model.record.num_outliers == 3
        assert model.record.outlier_threshold == pytest.approx(
            outliers.threshold(delta, 10), rel=0.05
        )
        assert mcc(model.encode(test.delta), test.shift) > 0.95
    spiked = train(delta, replace(BASE, drop_outliers=0.0), progress=False).models  # kept
    assert min(mcc(m.encode(test.delta), test.shift) for m in spiked) < min(
        mcc(m.encode(test.delta), test.shift) for m in kept
    )


def test_the_paired_mcc_interval_equals_the_resample_by_resample_computation(synth):
    """mcc_difference computes every resample at once by row weights; it must give what
    resampling the rows one by one gives (same resamples, same column matching)."""
    from ssae_core.evaluation.identifiability import _matched_columns, mcc_difference
    from ssae_core.metrics import bootstrap_interval

    rows = synth.subset("train").delta
    test = synth.subset("test")
    short = replace(BASE, min_steps=100, max_steps=100, seeds=(0, 1))
    ssae = train(rows, short, progress=False).models
    aff = train(rows, replace(short, method="aff"), progress=False).models
    found = mcc_difference(ssae, aff, test, resamples=50, seed=3)
    sides = [
        [_matched_columns(m.encode(test.delta).astype(float), test.shift) for m in side]
        for side in (ssae, aff)
    ]

    def one(columns: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    abs(np.corrcoef(columns[:, 0, j], columns[:, 1, j])[0, 1])
                    for j in range(columns.shape[2])
                ]
            )
        )

    def difference(picked: np.ndarray) -> float:
        r = picked.astype(int)
        return float(
            np.mean([one(c[r]) for c in sides[0]]) - np.mean([one(c[r]) for c in sides[1]])
        )

    expected = bootstrap_interval(
        np.arange(len(test)), np.arange(len(test)), difference, resamples=50, seed=3
    )
    assert found["low"] == pytest.approx(expected.low, abs=1e-5)
    assert found["high"] == pytest.approx(expected.high, abs=1e-5)
    assert found["difference"] == pytest.approx(difference(np.arange(len(test))), abs=1e-5)
    assert found["difference"] > 0  # SSAE identifies synthetic concepts, aff does not


def test_no_row_is_an_outlier_when_most_rows_are_zero():
    rows = np.zeros((10, 3))
    rows[:3] = 1.0  # the median norm is 0: "10 x 0" would flag every non-zero row
    assert outliers.threshold(rows, 10) == float("inf")
    assert not outliers.above(rows, outliers.threshold(rows, 10)).any()


def test_held_out_rows_are_whole_entities_when_groups_are_given():
    from ssae_core.train import _holdout_mask

    groups = np.repeat(np.arange(40), 5)  # 40 entities in 5 contexts each
    held = _holdout_mask(len(groups), 0.1, groups)
    assert held.sum() >= 20
    assert not set(groups[held]) & set(groups[~held])  # no entity on both sides
    assert np.array_equal(held, _holdout_mask(len(groups), 0.1, groups))  # seeded
    assert _holdout_mask(len(groups), 0.1).sum() == 20  # by row without groups
