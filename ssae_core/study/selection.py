"""The label-free choice of one SSAE grid cell per pair set, and loading the chosen runs.

A cell is one (learning rate, budget ratio) of the grid, all seeds. Selection
(:func:`select_cell`) uses no labels: among the cells whose every member is admissible
(:mod:`ssae_core.study.usability`: usable, i.e. a positive multiplier and an L1 over its training
shifts at most its budget x (1 + tolerance); on a control set a slack member too), the one with
the highest UDR of the decoder rows (median pairwise MCC across seeds); ties (within
``UDR_TIE``) go to the higher UDR of the held-out codes, then to the smaller budget ratio (the
sparser model). A set with no admissible cell has no SSAE model: it is reported as such, never
replaced by another run. The choice is repeated at ``study.sensitivity_tolerance`` (the report's
sensitivity line). Supervised scores (MCC against the known shifts) are recorded beside every cell
but never used to choose. The choice is written to metrics/udr.json, which the later stages read
back (:func:`selected_runs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import score_run
from ssae_core.io import EmbeddingTable
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import load_run
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import LayerLayout
from ssae_core.study.sets import load_set
from ssae_core.study.usability import admissible, usability

UDR_TIE = 1e-3
SELECTION_RULE = (
    "max decoder UDR among admissible cells (every member usable: multiplier > 0 and L1 over its "
    "training shifts at most its budget x (1 + tolerance); on a control set slack too); ties: "
    "codes UDR, then smaller budget ratio"
)
SELECTED_KEYS = ("lr", "budget_ratio", "sparsity", "run", "seeds", "usable", "decoder_mcc")
SENSITIVITY = "sensitivity"
"""Key of the cells' admissibility and the choice at ``study.sensitivity_tolerance``."""


def cell_members(models: list[ShiftAutoencoder], sparsity: float) -> list[ShiftAutoencoder]:
    """The members of a stacked grid run trained with budget ``sparsity`` (as recorded)."""
    chosen = [m for m in models if m.record.budget == sparsity]
    if not chosen:
        raise InputError(f"no member with sparsity {sparsity} in the run; re-run the study stage")
    return chosen


def score_ssae(
    members: list[ShiftAutoencoder],
    test: EmbeddingTable,
    tolerances: Sequence[float],
    control: bool,
) -> dict:
    """Identifiability scores of SSAE members of one budget, with its ratio, every member's status
    and whether all are admissible (``usable``), at ``tolerances[0]`` and (key
    :data:`SENSITIVITY`) at ``tolerances[1]``."""
    record = members[0].record
    out = {"budget_ratio": record.budget_ratio, "sparsity": record.budget, "control": control}
    for key, tolerance in zip(("", SENSITIVITY), tolerances, strict=False):
        status = [usability(m, tolerance) for m in members]
        entry = {"usability": status, "usable": all(admissible(s, control) for s in status)}
        out.update(entry if not key else {key: {"tolerance": tolerance, **entry}})
    return {**out, **score_run(members, test)}


def score_grid(study: StudyConfig, at: LayerLayout, name: str, test: EmbeddingTable) -> list[dict]:
    """Scores of every (lr, budget ratio) cell of one set's grid, on its held-out pairs."""
    budgets = Budgets.load(at.study_models(name))
    tolerances = (study.usable_tolerance, study.sensitivity_tolerance)
    cells = []
    for lr in sorted(study.grid.lr):
        run_dir = at.grid_run(name, lr)
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: missing; run `dvc repro train_study` first")
        models = load_run(run_dir)
        for ratio in sorted(study.grid_ratios(name)):
            members = cell_members(models, budgets.budget(ratio))
            scores = score_ssae(members, test, tolerances, study.is_control(name))
            cells.append(
                {"lr": lr, "run": at.relative(run_dir), "aff_l1": budgets.aff_l1, **scores}
            )
    return cells


def select_cell(cells: list[dict], *, sensitivity: bool = False) -> dict | None:
    """The label-free choice among grid cells (see the module docstring); None if none is
    admissible (``sensitivity``: admissible at the second tolerance)."""
    usable = [c for c in cells if (c[SENSITIVITY] if sensitivity else c)["usable"]]
    if not usable:
        return None
    best = max(c["decoder_mcc"]["udr"] for c in usable)
    tied = [c for c in usable if c["decoder_mcc"]["udr"] >= best - UDR_TIE]
    return max(tied, key=lambda c: (c["codes_mcc"]["udr"], -c["budget_ratio"]))


def _chosen(cell: dict | None) -> dict | None:
    return None if cell is None else {key: cell[key] for key in SELECTED_KEYS}


def select_layer(study: StudyConfig, at: LayerLayout) -> dict:
    """Every set's grid scores and selected cell at one layer (one entry of metrics/udr.json)."""
    sets: dict = {}
    for name in study.sets:
        cells = score_grid(study, at, name, load_set(study, at, name).subset("test"))
        sets[name] = {
            "selected": _chosen(select_cell(cells)),
            SENSITIVITY: _chosen(select_cell(cells, sensitivity=True)),
            "control": study.is_control(name),
            "rule": SELECTION_RULE,
            "cells": cells,
        }
    return {"sets": sets}


def sensitivity_cell(at: LayerLayout, set_name: str) -> dict | None:
    """The cell selected at ``study.sensitivity_tolerance`` (None: no admissible cell there)."""
    return selected_cell(at, set_name, SENSITIVITY)


def selected_cell(at: LayerLayout, set_name: str, key: str = "selected") -> dict | None:
    """The selected cell of ``set_name`` at one layer as recorded in metrics/udr.json (None:
    no usable cell); ``key`` :data:`SENSITIVITY`: the choice at the second tolerance."""
    path = at.metrics("udr")
    if not path.exists():
        raise InputError(f"{path}: missing; run `dvc repro select` first")
    layers = json.loads(path.read_text())["layers"]
    if at.key not in layers or set_name not in layers[at.key]["sets"]:
        raise InputError(f"{path}: no set {set_name!r} at layer {at.key}; run `dvc repro select`")
    return layers[at.key]["sets"][set_name][key]


def selected_runs(at: LayerLayout, set_name: str) -> dict[str, list[ShiftAutoencoder]]:
    """{"ssae": members of the selected grid cell (absent when no cell is usable), "aff": the
    aff run} of one pair set at one layer."""
    runs = {"aff": load_run(at.aff_run(set_name))}
    cell = selected_cell(at, set_name)
    if cell is not None:
        runs = {"ssae": cell_members(load_run(at.root / cell["run"]), cell["sparsity"]), **runs}
    return runs
