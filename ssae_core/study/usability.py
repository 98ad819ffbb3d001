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

from collections.abc import Mapping

from ssae_core.model import ShiftAutoencoder
from ssae_core.record import NO_ADMISSIBLE_MODEL, SLACK, USABLE

ADMISSIBLE = {False: (USABLE,), True: (USABLE, SLACK)}
"""Admissible statuses by whether the set is a control."""


def usability(model: ShiftAutoencoder, tolerance: float) -> str:
    """The status of an SSAE member at ``tolerance`` (:class:`ssae_core.record.MemberRecord`)."""
    return model.record.status_at(tolerance)


def admissible(status: str, control: bool) -> bool:
    """Whether a member of this status may be selected and counted (see the module docstring)."""
    return status in ADMISSIBLE[control]


def admissible_entry(entry: Mapping) -> bool:
    """Whether an SSAE entry of the scores (a selected cell, a run, or ``{"status": ...}`` where a
    set has no admissible cell) may be shown and counted: no status and not marked unusable."""
    return not entry.get("status") and entry.get("usable") is not False


def missing_reason(entry: Mapping) -> str:
    """Why an SSAE entry has no value to show, in the report's words: empty where it is
    admissible; else ``no admissible model`` with its members' other statuses."""
    if admissible_entry(entry):
        return ""
    reasons = sorted({s for s in entry.get("usability", []) if s != USABLE})
    return f"{NO_ADMISSIBLE_MODEL} ({', '.join(reasons)})" if reasons else NO_ADMISSIBLE_MODEL
