"""The label-free choice of one SSAE grid cell per pair set, and loading the chosen runs.

Selection (:func:`select_cell`) uses no labels: among the cells whose every member ended with an
active constraint (multiplier > 0), the one with the highest UDR of the decoder rows (median
pairwise MCC across seeds); ties (within ``UDR_TIE``) go to the higher UDR of the held-out codes,
then to the smaller budget (the sparser model). Supervised scores (MCC against the known shifts)
are recorded beside every cell but never used to choose. The choice is written to
metrics/udr.json, which the later stages read back (:func:`selected_runs`).
"""

from __future__ import annotations

import json

from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import score_run
from ssae_core.io import EmbeddingTable
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import load_run
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.sets import load_set

UDR_TIE = 1e-3
SELECTION_RULE = "max decoder UDR among active cells; ties: codes UDR, then smaller budget"
SELECTED_KEYS = ("lr", "sparsity", "run", "seeds", "active", "decoder_mcc")


def cell_members(models: list[ShiftAutoencoder], sparsity: float) -> list[ShiftAutoencoder]:
    """The members of a stacked grid run trained with budget ``sparsity`` (as recorded)."""
    chosen = [m for m in models if m.config["sparsity"] == sparsity]
    if not chosen:
        raise InputError(f"no member with sparsity {sparsity} in the run; re-run the study stage")
    return chosen


def score_grid(
    study: StudyConfig, layout: StudyLayout, name: str, test: EmbeddingTable
) -> list[dict]:
    """Scores of every (lr, sparsity) cell of one set's grid, on its held-out pairs."""
    cells = []
    for lr in sorted(study.grid.lr):
        run_dir = layout.grid_run(name, lr)
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: missing; run `dvc repro train_study@{name}` first")
        models = load_run(run_dir)
        for eps in sorted(study.grid.sparsity):
            scores = score_run(cell_members(models, eps), test)
            cells.append(
                {
                    "lr": lr,
                    "sparsity": eps,
                    "run": layout.relative(run_dir),
                    "active": all(v > 0 for v in scores["multiplier"]["values"]),
                    **scores,
                }
            )
    return cells


def select_cell(cells: list[dict]) -> dict:
    """The label-free choice among grid cells (see the module docstring)."""
    active = [c for c in cells if c["active"]] or cells
    best = max(c["decoder_mcc"]["udr"] for c in active)
    tied = [c for c in active if c["decoder_mcc"]["udr"] >= best - UDR_TIE]
    return max(tied, key=lambda c: (c["codes_mcc"]["udr"], -c["sparsity"]))


def select_study(study: StudyConfig, layout: StudyLayout) -> dict:
    """Every set's grid scores and its selected cell: the content of metrics/udr.json."""
    sets: dict = {}
    for name in study.sets:
        cells = score_grid(study, layout, name, load_set(study, layout, name).subset("test"))
        chosen = select_cell(cells)
        sets[name] = {
            "selected": {key: chosen[key] for key in SELECTED_KEYS},
            "rule": SELECTION_RULE,
            "cells": cells,
        }
    return {"sets": sets}


def selected_cell(layout: StudyLayout, set_name: str) -> dict:
    """The selected cell of ``set_name`` as recorded in metrics/udr.json."""
    path = layout.metrics("udr")
    if not path.exists():
        raise InputError(f"{path}: missing; run `dvc repro select` first")
    sets = json.loads(path.read_text())["sets"]
    if set_name not in sets:
        raise InputError(f"{path}: no set {set_name!r} (sets: {', '.join(sets)})")
    return sets[set_name]["selected"]


def selected_runs(layout: StudyLayout, set_name: str) -> dict[str, list[ShiftAutoencoder]]:
    """{"ssae": members of the selected grid cell, "aff": the aff run} of one pair set."""
    cell = selected_cell(layout, set_name)
    ssae = cell_members(load_run(layout.root / cell["run"]), cell["sparsity"])
    return {"ssae": ssae, "aff": load_run(layout.aff_run(set_name))}
