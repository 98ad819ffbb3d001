"""The usable rule of the study: which SSAE members may be selected and counted.

A member's status (:mod:`ssae_core.record`: usable, slack, infeasible, not converged) compares its
one L1 measure (eval mode, over its training shifts) with its budget, one-sided: a member sparser
than its budget is on it. On a multi-concept set only ``usable`` members are admissible. On a
control set (one concept per pair: the true code's L1 equals aff's, so sparsity cannot help) a
``slack`` member is admissible too: the budget did not bind, and SSAE = aff is the expected,
valid outcome. Kept apart from :mod:`ssae_core.study.budgets` (which training reads), so that a
change to the rule re-runs the stages that apply it and no training.
"""

from __future__ import annotations

from ssae_core.model import ShiftAutoencoder
from ssae_core.record import SLACK, USABLE

ADMISSIBLE = {False: (USABLE,), True: (USABLE, SLACK)}
"""Admissible statuses by whether the set is a control."""


def usability(model: ShiftAutoencoder, tolerance: float) -> str:
    """The status of an SSAE member at ``tolerance`` (:class:`ssae_core.record.MemberRecord`)."""
    return model.record.status_at(tolerance)


def admissible(status: str, control: bool) -> bool:
    """Whether a member of this status may be selected and counted (see the module docstring)."""
    return status in ADMISSIBLE[control]
