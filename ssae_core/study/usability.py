"""The usable rule of the study: which SSAE members may be selected and counted.

A run is usable only if its multiplier is positive (the constraint bound) and its held-out L1 is
within ``tolerance`` of its budget (it converged onto it); any other run is marked wherever it
appears and never selected. Kept apart from :mod:`ssae_core.study.budgets` (which training
reads), so that a change to the rule re-runs the stages that apply it and no training.
"""

from __future__ import annotations

from ssae_core.model import ShiftAutoencoder

USABLE = "usable"


def usability(model: ShiftAutoencoder, tolerance: float) -> str:
    """``usable``, or why an SSAE member is not: its multiplier ended at 0, or its held-out L1
    is off its budget by more than ``tolerance``. The reason also gives the training L1 (the last
    epoch's mean over batches, which the constraint acts on) where it is recorded: a run on its
    budget in training but off it on the held-out pairs generalises its sparsity poorly, one off
    it in training did not converge."""
    final, budget = model.config["final"], model.config["sparsity"]
    if final["multiplier"] <= 0:
        return "multiplier 0"
    ratio = final["val_l1"] / budget
    if abs(ratio - 1) > tolerance:
        training = f" (training {final['l1'] / budget:.2f}x)" if "l1" in final else ""
        return f"L1 {ratio:.2f}x budget{training}"
    return USABLE
