"""The label-free choice of one SSAE grid cell per pair set, and loading the chosen runs.

A cell is one (learning rate, budget ratio) of the grid, all seeds. Selection
(:func:`select_cell`) uses no labels: among the cells whose every member is usable
(:func:`~ssae_core.study.budgets.usability`: a positive multiplier and a held-out L1 on its
budget), the one with the highest UDR of the decoder rows (median pairwise MCC across seeds);
ties (within ``UDR_TIE``) go to the higher UDR of the held-out codes, then to the smaller budget
ratio (the sparser model). A set with no usable cell has no SSAE model: it is reported as such,
never replaced by an unusable one. Supervised scores (MCC against the known shifts) are recorded
beside every cell but never used to choose. The choice is written to metrics/udr.json, which the
later stages read back (:func:`selected_runs`).
"""

from __future__ import annotations

import json

from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import score_run
from ssae_core.io import EmbeddingTable
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import load_run
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import LayerLayout
from ssae_core.study.sets import load_set
from ssae_core.study.usability import USABLE, usability

UDR_TIE = 1e-3
SELECTION_RULE = (
    "max decoder UDR among usable cells (every member: multiplier > 0 and held-out L1 on its "
    "budget); ties: codes UDR, then smaller budget ratio"
)
SELECTED_KEYS = ("lr", "budget_ratio", "sparsity", "run", "seeds", "usable", "decoder_mcc")


def cell_members(models: list[ShiftAutoencoder], sparsity: float) -> list[ShiftAutoencoder]:
    """The members of a stacked grid run trained with budget ``sparsity`` (as recorded)."""
    chosen = [m for m in models if m.config["sparsity"] == sparsity]
    if not chosen:
        raise InputError(f"no member with sparsity {sparsity} in the run; re-run the study stage")
    return chosen


def score_ssae(
    members: list[ShiftAutoencoder], test: EmbeddingTable, budgets: Budgets, tolerance: float
) -> dict:
    """Identifiability scores of SSAE members of one budget, with its ratio and usability."""
    budget = members[0].config["sparsity"]
    status = [usability(m, tolerance) for m in members]
    return {
        "budget_ratio": budgets.ratio_of(budget),
        "sparsity": budget,
        "aff_l1": budgets.aff_l1,
        "usability": status,
        "usable": all(s == USABLE for s in status),
        **score_run(members, test),
    }


def score_grid(study: StudyConfig, at: LayerLayout, name: str, test: EmbeddingTable) -> list[dict]:
    """Scores of every (lr, budget ratio) cell of one set's grid, on its held-out pairs."""
    budgets = Budgets.load(at.study_models(name))
    cells = []
    for lr in sorted(study.grid.lr):
        run_dir = at.grid_run(name, lr)
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: missing; run `dvc repro train_study` first")
        models = load_run(run_dir)
        for ratio in sorted(study.grid.budget_ratio):
            members = cell_members(models, budgets.budget(ratio))
            scores = score_ssae(members, test, budgets, study.usable_tolerance)
            cells.append({"lr": lr, "run": at.relative(run_dir), **scores})
    return cells


def select_cell(cells: list[dict]) -> dict | None:
    """The label-free choice among grid cells (see the module docstring); None if none usable."""
    usable = [c for c in cells if c["usable"]]
    if not usable:
        return None
    best = max(c["decoder_mcc"]["udr"] for c in usable)
    tied = [c for c in usable if c["decoder_mcc"]["udr"] >= best - UDR_TIE]
    return max(tied, key=lambda c: (c["codes_mcc"]["udr"], -c["budget_ratio"]))


def select_layer(study: StudyConfig, at: LayerLayout) -> dict:
    """Every set's grid scores and selected cell at one layer (one entry of metrics/udr.json)."""
    sets: dict = {}
    for name in study.sets:
        cells = score_grid(study, at, name, load_set(study, at, name).subset("test"))
        chosen = select_cell(cells)
        sets[name] = {
            "selected": None if chosen is None else {key: chosen[key] for key in SELECTED_KEYS},
            "rule": SELECTION_RULE,
            "cells": cells,
        }
    return {"sets": sets}


def selected_cell(at: LayerLayout, set_name: str) -> dict | None:
    """The selected cell of ``set_name`` at one layer as recorded in metrics/udr.json (None:
    no usable cell)."""
    path = at.metrics("udr")
    if not path.exists():
        raise InputError(f"{path}: missing; run `dvc repro select` first")
    layers = json.loads(path.read_text())["layers"]
    if at.key not in layers or set_name not in layers[at.key]["sets"]:
        raise InputError(f"{path}: no set {set_name!r} at layer {at.key}; run `dvc repro select`")
    return layers[at.key]["sets"][set_name]["selected"]


def selected_runs(at: LayerLayout, set_name: str) -> dict[str, list[ShiftAutoencoder]]:
    """{"ssae": members of the selected grid cell (absent when no cell is usable), "aff": the
    aff run} of one pair set at one layer."""
    runs = {"aff": load_run(at.aff_run(set_name))}
    cell = selected_cell(at, set_name)
    if cell is not None:
        runs = {"ssae": cell_members(load_run(at.root / cell["run"]), cell["sparsity"]), **runs}
    return runs
