"""Fair L1 budgets and the usable rule of the study.

An absolute budget means different things on different data: on a one-concept set the
unconstrained aff solution may already be sparser than the budget, and the "SSAE" run is then an
aff run under another name. So every SSAE budget of the study is a ratio r of the L1 that the aff
solution reaches on the same data, latent size and normalisation: ``budget = r * aff_l1``, where
``aff_l1`` is the one L1 measure of :mod:`ssae_core.record` (eval mode, over every training
shift; mean over seeds), the same measure each SSAE member's status compares with its budget.
Which runs are usable is decided by :mod:`ssae_core.study.usability`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssae_core.errors import InputError
from ssae_core.io import write_json
from ssae_core.model import ShiftAutoencoder

BUDGETS_FILE = "budgets.json"


@dataclass(frozen=True)
class Budgets:
    """The budgets of one set's SSAE runs, derived from its aff run."""

    aff_l1: float
    """L1 of the aff run over its training shifts (mean over its members), in units of x_rms."""
    ratios: tuple[float, ...]
    """The budget ratios r."""

    @classmethod
    def from_aff(cls, aff: Sequence[ShiftAutoencoder], ratios: Sequence[float]) -> Budgets:
        l1 = float(np.mean([m.record.l1 for m in aff]))
        if not np.isfinite(l1) or l1 <= 0:
            raise InputError(f"the aff run has L1 {l1}; no budget can be derived from it")
        return cls(l1, tuple(float(r) for r in ratios))

    def budget(self, ratio: float) -> float:
        return ratio * self.aff_l1

    @property
    def budgets(self) -> tuple[float, ...]:
        return tuple(self.budget(r) for r in self.ratios)

    def save(self, folder: Path) -> None:
        write_json({"aff_l1": self.aff_l1, "ratios": list(self.ratios)}, folder / BUDGETS_FILE)

    @classmethod
    def load(cls, folder: Path) -> Budgets:
        path = folder / BUDGETS_FILE
        if not path.is_file():
            raise InputError(f"{path}: missing; re-run the study's training stage")
        record = json.loads(path.read_text())
        return cls(float(record["aff_l1"]), tuple(float(r) for r in record["ratios"]))
