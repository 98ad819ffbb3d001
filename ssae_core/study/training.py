"""Every training run of the pipeline: the synthetic runs and the three modes of the LLM study.

- :func:`train_synthetic`: one stacked run (all seeds) per latent size m = factor x n of a
  synthetic table (params ``train``);
- :func:`train_grid`: the SSAE grid (one stacked run per learning rate, every budget and seed)
  and aff on one pair set;
- :func:`train_entangled`: SSAE and aff at ``study.sparsity`` / ``study.lr`` on the entangled
  table of one set;
- :func:`train_overcomplete`: SSAE with m = factor x n, factor in ``study.overcomplete.factors``.

Each run is one stacked model, trained on the ``train`` split, and records its wall time in
run.json (``train_seconds``). Each mode writes its whole output folder atomically; an
interrupted run resumes from its checkpoint beside that folder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, atomic_dir, load_embeddings
from ssae_core.runs import resolve_latent_dim, train_run
from ssae_core.study.config import StudyConfig, SyntheticRunsConfig
from ssae_core.study.layout import METHODS, StudyLayout, lr_folder
from ssae_core.study.sets import load_set
from ssae_core.train import TrainConfig


def _train(
    table: EmbeddingTable,
    out: Path,
    cfg: TrainConfig,
    checkpoint: Path,
    *,
    require_active: bool = False,
) -> None:
    started = time.perf_counter()
    train_run(table, out, cfg, require_active=require_active, checkpoint=checkpoint)
    print(
        f"{out.name}: {cfg.method} x{len(cfg.members())} in {time.perf_counter() - started:.1f} s"
    )


def _checkpoint(out_dir: Path, part: str) -> Path:
    """Where the run ``part`` of the output folder ``out_dir`` keeps its checkpoint."""
    return out_dir.parent / f".{out_dir.name}-{part}.checkpoint"


def train_synthetic(path: Path, out_dir: Path, runs: SyntheticRunsConfig) -> None:
    """One run per latent size m = factor x (the table's number of concepts, or the config's m)."""
    table = load_embeddings(path)
    table.metadata["path"] = str(path)
    base = resolve_latent_dim(runs.train, table)
    with atomic_dir(out_dir) as tmp:
        for factor in runs.latent_factors:
            folder = StudyLayout.latent_folder(factor * base)
            _train(
                table,
                tmp / folder,
                replace(runs.train, latent_dim=factor * base),
                _checkpoint(out_dir, folder),
                require_active=runs.require_active,
            )


def train_grid(study: StudyConfig, layout: StudyLayout, name: str) -> None:
    """The SSAE grid (one stacked run per lr) and aff of one pair set."""
    table = load_set(study, layout, name)
    latent = resolve_latent_dim(TrainConfig(), table, study.latent_factor)
    out_dir = layout.study_models(name)
    with atomic_dir(out_dir) as tmp:
        for lr in study.grid.lr:
            cfg = study.train_config("ssae", lr=lr, sparsity=study.grid.sparsity)
            grid_dir = layout.grid_run(name, lr)
            _train(
                table,
                tmp / grid_dir.relative_to(out_dir),
                replace(cfg, latent_dim=latent),
                _checkpoint(out_dir, lr_folder(lr)),
            )
        cfg = replace(study.train_config("aff", lr=study.lr), latent_dim=latent)
        _train(table, tmp / "aff", cfg, _checkpoint(out_dir, "aff"))


def train_entangled(study: StudyConfig, layout: StudyLayout, name: str) -> None:
    """SSAE and aff at study.sparsity / study.lr on the entangled table of one set."""
    table = load_set(study, layout, name, entangled=True)
    latent = resolve_latent_dim(TrainConfig(), table, study.latent_factor)
    out_dir = layout.entangled_models(name)
    with atomic_dir(out_dir) as tmp:
        for method in METHODS:
            cfg = study.train_config(method, lr=study.lr, sparsity=study.sparsity)
            _train(
                table, tmp / method, replace(cfg, latent_dim=latent), _checkpoint(out_dir, method)
            )


def train_overcomplete(study: StudyConfig, layout: StudyLayout, name: str) -> None:
    """SSAE with m = factor x n on the overcompleteness set."""
    if name != study.overcomplete.set:
        raise InputError(f"params.yaml:study.overcomplete.set is {study.overcomplete.set!r}")
    table = load_set(study, layout, name)
    base = resolve_latent_dim(TrainConfig(), table)
    out_dir = layout.overcomplete_models(name)
    with atomic_dir(out_dir) as tmp:
        for factor in study.overcomplete.factors:
            folder = StudyLayout.latent_folder(factor * base)
            cfg = study.train_config("ssae", lr=study.lr, sparsity=study.sparsity)
            cfg = replace(cfg, seeds=study.overcomplete_seeds, latent_dim=factor * base)
            _train(table, tmp / folder, cfg, _checkpoint(out_dir, folder))


STUDY_MODES = {
    "--grid": train_grid,
    "--entangled": train_entangled,
    "--overcomplete": train_overcomplete,
}
"""The training modes of ``stages/train_study.py`` by their command-line flag."""
