"""The three training modes of the LLM study (the synthetic runs are in
:mod:`ssae_core.study.synthetic_training`).

- :func:`train_grid`: aff, then the SSAE grid (one stacked run per learning rate, every budget
  ratio and seed) on one pair set;
- :func:`train_entangled`: aff, then SSAE at ``study.budget_ratio`` on the entangled table;
- :func:`train_overcomplete`: aff and SSAE with m = factor x n, factor in
  ``study.overcomplete.factors``.

Every SSAE budget is a ratio of the L1 its aff run reaches on the same data and latent size
(:mod:`ssae_core.study.budgets`), so aff trains first.

Each run is one stacked model, trained on the ``train`` split, and records its wall time in
run.json (``train_seconds``). Each mode writes its whole output folder atomically; an
interrupted run resumes from its checkpoint beside that folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, atomic_dir
from ssae_core.runs import checkpoint_beside, load_run, train_timed
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import LayerLayout, StudyLayout
from ssae_core.study.sets import load_set


def _train_aff_then_ssae(
    study: StudyConfig,
    table: EmbeddingTable,
    tmp: Path,
    checkpoint: Callable[[str], Path],
    latent: int,
    ssae_runs: Sequence[tuple[str, float, Sequence[float]]],
    seeds: Sequence[int] | None = None,
) -> None:
    """aff into ``tmp/aff``, then each SSAE run ``(folder, lr, ratios)`` with budgets = ratio x
    aff's held-out L1 (:class:`Budgets`, saved as ``tmp/budgets.json``)."""
    extra = {"latent_dim": latent, **({"seeds": tuple(seeds)} if seeds else {})}
    aff_cfg = replace(study.train_config("aff", lr=study.lr), **extra)
    train_timed(table, tmp / "aff", aff_cfg, checkpoint("aff"))
    ratios = sorted({r for _, _, rs in ssae_runs for r in rs})
    budgets = Budgets.from_aff(load_run(tmp / "aff"), ratios)
    budgets.save(tmp)
    for folder, lr, run_ratios in ssae_runs:
        cfg = study.train_config(
            "ssae", lr=lr, sparsity=[budgets.budget(r) for r in run_ratios], ratios=run_ratios
        )
        train_timed(table, tmp / folder, replace(cfg, **extra), checkpoint(folder))


def train_grid(study: StudyConfig, at: LayerLayout, name: str) -> None:
    """aff, then the SSAE grid (one stacked run per lr, every budget ratio) of one pair set."""
    table = load_set(study, at, name)
    latent = study.latent_dim(name, table.concepts, study.latent_factor)
    out_dir = at.study_models(name)
    runs = [
        (at.grid_run(name, lr).relative_to(out_dir).as_posix(), lr, study.grid_ratios(name))
        for lr in study.grid.lr
    ]
    with atomic_dir(out_dir) as tmp:
        _train_aff_then_ssae(
            study, table, tmp, functools.partial(checkpoint_beside, out_dir), latent, runs
        )


def train_entangled(study: StudyConfig, at: LayerLayout, name: str) -> None:
    """aff, then SSAE at study.budget_ratio, on the entangled table of one set."""
    table = load_set(study, at, name, entangled=True)
    latent = study.latent_dim(name, table.concepts, study.latent_factor)
    out_dir = at.entangled_models(name)
    with atomic_dir(out_dir) as tmp:
        runs = [("ssae", study.lr, (study.budget_ratio,))]
        _train_aff_then_ssae(
            study, table, tmp, functools.partial(checkpoint_beside, out_dir), latent, runs
        )


def train_overcomplete(study: StudyConfig, at: LayerLayout, name: str) -> None:
    """For each m = factor x n: aff, then SSAE at study.budget_ratio, on the sweep's set."""
    if name != study.overcomplete.set:
        raise InputError(f"params.yaml:study.overcomplete.set is {study.overcomplete.set!r}")
    table = load_set(study, at, name)
    base = study.latent_dim(name, table.concepts)
    out_dir = at.overcomplete_models(name)
    with atomic_dir(out_dir) as tmp:
        for factor in study.overcomplete.factors:
            folder = StudyLayout.latent_folder(factor * base)
            (tmp / folder).mkdir()
            _train_aff_then_ssae(
                study,
                table,
                tmp / folder,
                lambda part, folder=folder: checkpoint_beside(out_dir, f"{folder}/{part}"),
                factor * base,
                [("ssae", study.lr, (study.budget_ratio,))],
                seeds=study.overcomplete_seeds,
            )


STUDY_MODES = {
    "--grid": train_grid,
    "--entangled": train_entangled,
    "--overcomplete": train_overcomplete,
}
"""The training modes of ``stages/train_study.py`` by their command-line flag."""
