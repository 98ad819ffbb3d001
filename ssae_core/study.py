"""The LLM study (DESIGN section 6): where its runs live, how they are trained, and the label-free
choice of one hyperparameter cell per pair set.

Layout (every path relative to the project root)::

    models/study/SET/grid/lr-LR/eps-EPS_seed-S/    SSAE, one stacked run per learning rate
    models/study/SET/aff/seed-S/                   the aff baseline
    models/study_entangled/SET/{ssae,aff}/seed-S/  the same on data/entangled/SET.parquet
    models/study_overcomplete/SET/mM/seed-S/       SSAE with M = factor x (number of concepts)
    metrics/udr.json                               every grid cell's scores + the selected cell

Selection (:func:`select_cell`) uses no labels: among the cells whose every member ended with an
active constraint (multiplier > 0), the one with the highest UDR of the decoder rows (median
pairwise MCC across seeds); ties (within ``UDR_TIE``) go to the higher UDR of the held-out codes,
then to the smaller budget (the sparser model). Supervised scores (MCC against the known shifts)
are recorded beside every cell but never used to choose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssae_core.config import from_mapping
from ssae_core.errors import InputError
from ssae_core.evaluate import score_run
from ssae_core.io import EmbeddingTable, load_embeddings
from ssae_core.model import ShiftAutoencoder
from ssae_core.runs import load_run
from ssae_core.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
STUDY_MODELS = Path("models/study")
ENTANGLED_MODELS = Path("models/study_entangled")
OVERCOMPLETE_MODELS = Path("models/study_overcomplete")
UDR_FILE = Path("metrics/udr.json")
UDR_TIE = 1e-3


@dataclass
class StudyConfig:
    """params.yaml ``study``: training of the LLM study (every set, both methods, the grid)."""

    sets: tuple[str, ...] = ("lang", "gender", "binary", "corr", "cat", "truthfulqa")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    latent_factor: int = 1
    """m = latent_factor x (number of concepts of the set): the overcompleteness of every run."""
    sparsity: float = 0.5
    """The budget of the entangled and overcompleteness runs (the grid has its own list)."""
    lr: float = 0.003
    """Learning rate of aff and of the entangled and overcompleteness runs."""
    grid: dict = field(default_factory=lambda: {"sparsity": [0.25, 0.5, 1.0], "lr": [1e-3, 3e-3]})
    """SSAE grid: every budget x every learning rate, all seeds (one stacked run per lr)."""
    overcomplete: dict = field(
        default_factory=lambda: {"set": "cat", "factors": [1, 2, 4], "seeds": [0, 1, 2]}
    )
    """Appendix B.3: SSAE with m = factor x n on one set (``seeds``: default ``seeds``)."""
    reverse_fraction: float = 0.5
    """Fraction of pairs read backwards (z <-> z~, shift negated; see :func:`load_set`)."""
    reverse_seed: int = 0
    optim: dict = field(default_factory=dict)
    """Shared optimisation settings: steps, batch_size, dual_lr_ratio, threads, normalize,
    val_fraction (see :meth:`train_config`)."""

    def __post_init__(self) -> None:
        where = "params.yaml:study"
        for key in ("sparsity", "lr"):
            values = self.grid.get(key)
            if not isinstance(values, list) or not values or any(v <= 0 for v in values):
                raise InputError(f"{where}.grid.{key}={values!r}: give a list of positive numbers")
        if self.latent_factor < 1:
            raise InputError(f"{where}.latent_factor={self.latent_factor}: must be >= 1")
        factors = self.overcomplete.get("factors")
        if not isinstance(factors, list) or any(not isinstance(f, int) or f < 1 for f in factors):
            raise InputError(f"{where}.overcomplete.factors={factors!r}: give integers >= 1")
        if self.overcomplete.get("set") not in self.sets:
            raise InputError(
                f"{where}.overcomplete.set={self.overcomplete.get('set')!r}: not in study.sets"
            )
        unknown = set(self.optim) - {
            "steps",
            "batch_size",
            "dual_lr_ratio",
            "threads",
            "normalize",
            "val_fraction",
        }
        if unknown:
            raise InputError(f"{where}.optim: unknown key(s) {', '.join(sorted(unknown))}")
        self.train_config("ssae", lr=self.lr, sparsity=self.sparsity)  # validates optim

    def train_config(
        self, method: str, *, lr: float, sparsity: float | Sequence[float] = 1.0
    ) -> TrainConfig:
        """A fixed-length run: ``optim.steps`` optimiser steps (rounded up to whole epochs),
        no early stopping, so every cell and seed trains for the same time."""
        optim = dict(self.optim)
        ratio = optim.pop("dual_lr_ratio", 1.0)
        values = {
            "method": method,
            "seeds": self.seeds,
            "sparsity": tuple(sparsity) if isinstance(sparsity, Sequence) else sparsity,
            "epochs": 1,
            "min_steps": optim.pop("steps", 400),
            "patience": 0,
            "lr": lr,
            "dual_lr": lr * ratio,
            **optim,
        }
        return from_mapping(TrainConfig, values, "params.yaml:study.optim")


def load_study_config(params: Mapping) -> StudyConfig:
    return from_mapping(StudyConfig, params, "params.yaml:study")


def load_set(study: StudyConfig, name: str, *, entangled: bool = False) -> EmbeddingTable:
    """The embeddings of one pair set as the study uses them: a seeded half of the pairs reversed.

    Pair order carries no information (z~ -> z is as much a pair as z -> z~), and it matters: in
    lang, gender, corr and truthfulqa every pair moves the same way (shift +1), so the concept
    direction is the MEAN shift, which the normalisation and the BatchNorm of the codes subtract.
    A model then can only learn the variation around it. Reading half of the pairs backwards
    makes the concept the main axis of variation (the cosine of each learnt vector with the
    mean-difference vector is in the behaviour section of metrics/REPORT.md) and leaves the
    steering scores unchanged (they are signed per pair).
    """
    path = f"data/entangled/{name}.parquet" if entangled else f"data/embeddings/{name}"
    table = load_embeddings(path).reoriented(study.reverse_fraction, study.reverse_seed)
    table.metadata["path"] = path
    return table


def lr_folder(lr: float) -> str:
    return f"lr-{lr:g}"


# --------------------------------------------------------------------------- grid scores


def cell_members(models: list[ShiftAutoencoder], sparsity: float) -> list[ShiftAutoencoder]:
    """The members of a stacked grid run trained with budget ``sparsity``."""
    chosen = [m for m in models if math.isclose(m.config["sparsity"], sparsity, rel_tol=1e-9)]
    if not chosen:
        raise InputError(f"no member with sparsity {sparsity} in the run; re-run the study stage")
    return chosen


def score_grid(set_dir: Path, test: EmbeddingTable) -> list[dict]:
    """Scores of every (lr, sparsity) cell of one set's grid, on its held-out pairs."""
    cells = []
    lr_dirs = sorted((set_dir / "grid").glob("lr-*"), key=lambda p: float(p.name[3:]))
    if not lr_dirs:
        raise InputError(f"{set_dir}/grid: no runs; run `dvc repro train_study` first")
    for lr_dir in lr_dirs:
        models = load_run(lr_dir)
        for eps in sorted({m.config["sparsity"] for m in models}):
            members = cell_members(models, eps)
            scores = score_run(members, test)
            multipliers = scores["multiplier"]["values"]
            cells.append(
                {
                    "lr": float(lr_dir.name[3:]),
                    "sparsity": eps,
                    "run": str(lr_dir),
                    "active": all(v > 0 for v in multipliers),
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


# --------------------------------------------------------------------------- loading


def selected_cell(set_name: str, root: Path = ROOT) -> dict:
    """The selected cell of ``set_name`` as recorded in metrics/udr.json."""
    path = root / UDR_FILE
    if not path.exists():
        raise InputError(f"{path}: missing; run `dvc repro select` first")
    sets = json.loads(path.read_text())["sets"]
    if set_name not in sets:
        raise InputError(f"{path}: no set {set_name!r} (sets: {', '.join(sets)})")
    return sets[set_name]["selected"]


def selected_runs(set_name: str, root: Path = ROOT) -> dict[str, list[ShiftAutoencoder]]:
    """{"ssae": members of the selected grid cell, "aff": the aff run} of one pair set."""
    cell = selected_cell(set_name, root)
    ssae = cell_members(load_run(root / cell["run"]), cell["sparsity"])
    return {"ssae": ssae, "aff": load_run(root / STUDY_MODELS / set_name / "aff")}


# --------------------------------------------------------------------------- identifiability


def _run_members(run_dir: Path) -> list[ShiftAutoencoder]:
    if not (run_dir / "run.json").exists():
        raise InputError(f"{run_dir}: missing; run `dvc repro train_study` first")
    return load_run(run_dir)


def score_study(study: StudyConfig, root: Path = ROOT) -> dict:
    """Identifiability of the LLM study on held-out pairs (see :func:`score_run` for the keys):

    - ``sets``: per set, the selected SSAE cell and aff (decoder and codes MCC across seeds,
      MCC against the known shifts where they vary);
    - ``entangled``: the same on data/entangled/SET (SSAE at study.sparsity / study.lr);
    - ``overcomplete``: SSAE with m = factor x n on ``study.overcomplete.set``.
    """
    out: dict = {"sets": {}, "entangled": {}, "overcomplete": {}}
    for name in study.sets:
        test = load_set(study, name).subset("test")
        cell = selected_cell(name, root)
        runs = selected_runs(name, root)
        out["sets"][name] = {
            "ssae": {
                **score_run(runs["ssae"], test),
                "lr": cell["lr"],
                "sparsity": cell["sparsity"],
            },
            "aff": score_run(runs["aff"], test),
        }
        entangled_test = load_set(study, name, entangled=True).subset("test")
        out["entangled"][name] = {
            method: score_run(_run_members(root / ENTANGLED_MODELS / name / method), entangled_test)
            for method in ("ssae", "aff")
        }
    name = study.overcomplete["set"]
    test = load_set(study, name).subset("test")
    run_dirs = sorted((root / OVERCOMPLETE_MODELS / name).glob("m*"), key=lambda p: int(p.name[1:]))
    out["overcomplete"][name] = {d.name: score_run(_run_members(d), test) for d in run_dirs}
    return out
