"""What one trained member was: its budget, its L1 measures, how training ended, and its status.

Every member's :class:`MemberRecord` is written into its ``config.json`` (key ``record``) by
training and read back as a typed object (:attr:`ssae_core.model.ShiftAutoencoder.record`); no
code re-derives a run's budget ratio or status from other numbers.

**One L1 measure.** ``l1`` is the mean over *all training shifts* of ||h||_1 / x_rms in eval
mode, computed after training with the BatchNorm statistics recomputed exactly on those shifts.
The budget of an SSAE run of the study is a ratio of aff's ``l1``, and the status compares the
member's own ``l1`` with its budget. ``constraint_l1`` is what the constraint acted on (the mean
train-mode batch L1 of the last epoch); on data without outliers the two agree closely
(tests/test_record.py). ``val_l1`` (with its standard error) is the held-out generalisation: it
is reported, never a gate.

**Statuses** of an SSAE member, from :func:`member_status`:
- ``usable``: the multiplier is positive and ``l1 <= budget * (1 + tolerance)``;
- ``slack``: the multiplier ended at 0: the budget never bound, the member is an aff solution;
- ``infeasible``: above its budget although the Lagrangian settled (multiplier and L1 stopped
  moving): the budget cannot be met at this reconstruction;
- ``not converged``: above its budget and still moving when the step limit came.
An aff member is ``unconstrained``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ssae_core.errors import InputError

USABLE = "usable"
SLACK = "slack"
INFEASIBLE = "infeasible"
NOT_CONVERGED = "not converged"
UNCONSTRAINED = "unconstrained"
STATUSES = (USABLE, SLACK, INFEASIBLE, NOT_CONVERGED)
"""The statuses an SSAE member can have, in the order reports list them."""
UNUSABLE = "unusable"
"""A cell or run with a member that is not admissible (:mod:`ssae_core.study.usability`)."""
NO_ADMISSIBLE_MODEL = "no admissible model"
"""What reports and figures show where a set has no admissible SSAE cell (so no SSAE value)."""
RECORD_KEY = "record"
STATUS_MEANINGS = {
    USABLE: "the L1 budget binds and the member meets it (within the training tolerance)",
    SLACK: "the budget never bound (multiplier 0): the member is an aff solution, not a sparse one",
    INFEASIBLE: "above its L1 budget although training settled: the budget cannot be met at "
    "this reconstruction",
    NOT_CONVERGED: "above its L1 budget and still moving when the step limit came: train longer",
    UNCONSTRAINED: "an aff member: no L1 budget to meet",
}
"""One line per status (the module docstring's), for pages that show a run's status."""


@dataclass(frozen=True)
class MemberRecord:
    """The typed record of one trained member (see the module docstring)."""

    method: str
    seed: int
    budget: float | None
    """The L1 budget (SSAE), in units of x_rms; None for aff."""
    budget_ratio: float | None
    """The ratio of the aff L1 the budget was made from, where the caller gave one."""
    steps: int
    """Optimiser steps the member trained for."""
    epochs: int
    l1: float
    """Eval-mode mean ||h||_1 / x_rms over all training shifts: the one L1 measure."""
    constraint_l1: float
    """The last epoch's mean train-mode batch L1: what the constraint acted on."""
    val_l1: float
    """Eval-mode mean L1 over the held-out shifts (nan without any)."""
    val_l1_se: float
    """Standard error of ``val_l1`` (std of the per-shift L1 / sqrt(n)); nan without any."""
    train_loss: float
    """Eval-mode reconstruction loss over all training shifts."""
    val_loss: float
    multiplier: float
    settled: bool
    """Whether the multiplier and the L1 stopped moving (``TrainConfig.settle_tol``)."""
    status: str
    """:func:`member_status` at the training tolerance (``TrainConfig.budget_tolerance``)."""
    num_train_shifts: int
    outlier_threshold: float | None
    """Raw shift norm above which a pair was dropped from training (None: none dropped)."""
    num_outliers: int
    """Training pairs dropped as outliers."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object, where: object) -> MemberRecord:
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) != names:
            raise InputError(
                f"{where}: holds no complete training record (written by an older version?); "
                "re-run ssae train"
            )
        return cls(**values)

    def status_at(self, tolerance: float) -> str:
        """This member's status at another tolerance (the study's sensitivity line)."""
        if self.method != "ssae":
            return UNCONSTRAINED
        return member_status(self.l1, self.budget, self.multiplier, self.settled, tolerance)


def member_status(
    l1: float, budget: float | None, multiplier: float, settled: bool, tolerance: float
) -> str:
    """The status of an SSAE member (module docstring); ``unconstrained`` without a budget."""
    if budget is None:
        return UNCONSTRAINED
    if multiplier <= 0:
        return SLACK
    if l1 <= budget * (1 + tolerance):
        return USABLE
    return INFEASIBLE if settled else NOT_CONVERGED
