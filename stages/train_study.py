"""Stage `train_study`: every training run of the LLM study for one pair set.

    python -m stages.train_study SET                 grid (SSAE, per lr) + aff on SET's embeddings
    python -m stages.train_study SET --entangled     SSAE + aff at study.{sparsity,lr} on
                                                     data/entangled/SET.parquet
    python -m stages.train_study SET --overcomplete  SSAE at study.{sparsity,lr} with
                                                     m = factor x n, factor in study.overcomplete

Reads params.yaml `study`; trains on the `train` split; layout in ssae_core/study.py. Each run
is one stacked model (all seeds, and in the grid all budgets of one learning rate), and records
its wall time in run.json (`train_seconds`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, atomic_dir
from ssae_core.runs import resolve_latent_dim, train_run
from ssae_core.study import (
    ENTANGLED_MODELS,
    OVERCOMPLETE_MODELS,
    STUDY_MODELS,
    StudyConfig,
    load_set,
    load_study_config,
    lr_folder,
)
from ssae_core.train import TrainConfig
from stages.common import load_params, run_stage

MODES = ("--grid", "--entangled", "--overcomplete")


def _train(table: EmbeddingTable, out: Path, cfg: TrainConfig, checkpoint: Path) -> None:
    started = time.perf_counter()
    train_run(table, out, cfg, require_active=False, checkpoint=checkpoint)
    print(f"{out}: {cfg.method} x{len(cfg.members())} in {time.perf_counter() - started:.1f} s")


def train_grid(study: StudyConfig, name: str) -> None:
    table = load_set(study, name)
    latent = resolve_latent_dim(TrainConfig(), table, study.latent_factor)
    out_dir = STUDY_MODELS / name
    with atomic_dir(out_dir) as tmp:
        for lr in study.grid["lr"]:
            cfg = study.train_config("ssae", lr=lr, sparsity=study.grid["sparsity"])
            _train(
                table,
                tmp / "grid" / lr_folder(lr),
                replace(cfg, latent_dim=latent),
                out_dir.parent / f".{name}-{lr_folder(lr)}.checkpoint",
            )
        cfg = replace(study.train_config("aff", lr=study.lr), latent_dim=latent)
        _train(table, tmp / "aff", cfg, out_dir.parent / f".{name}-aff.checkpoint")


def train_entangled(study: StudyConfig, name: str) -> None:
    table = load_set(study, name, entangled=True)
    latent = resolve_latent_dim(TrainConfig(), table, study.latent_factor)
    out_dir = ENTANGLED_MODELS / name
    with atomic_dir(out_dir) as tmp:
        for method in ("ssae", "aff"):
            cfg = study.train_config(method, lr=study.lr, sparsity=study.sparsity)
            _train(
                table,
                tmp / method,
                replace(cfg, latent_dim=latent),
                out_dir.parent / f".{name}-{method}.checkpoint",
            )


def train_overcomplete(study: StudyConfig, name: str) -> None:
    if name != study.overcomplete["set"]:
        raise InputError(
            f"params.yaml:study.overcomplete.set is {study.overcomplete['set']!r}, not {name!r}"
        )
    table = load_set(study, name)
    base = resolve_latent_dim(TrainConfig(), table)
    out_dir = OVERCOMPLETE_MODELS / name
    seeds = tuple(study.overcomplete.get("seeds") or study.seeds)
    with atomic_dir(out_dir) as tmp:
        for factor in study.overcomplete["factors"]:
            cfg = study.train_config("ssae", lr=study.lr, sparsity=study.sparsity)
            cfg = replace(cfg, seeds=seeds)
            _train(
                table,
                tmp / f"m{factor * base}",
                replace(cfg, latent_dim=factor * base),
                out_dir.parent / f".{name}-m{factor * base}.checkpoint",
            )


def main() -> None:
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in MODES):
        raise InputError(f"usage: python -m stages.train_study SET [{' | '.join(MODES)}]")
    name = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) == 3 else "--grid"
    study = load_study_config(load_params("study"))
    if name not in study.sets:
        raise InputError(f"{name!r} is not in params.yaml:study.sets ({', '.join(study.sets)})")
    {"--grid": train_grid, "--entangled": train_entangled, "--overcomplete": train_overcomplete}[
        mode
    ](study, name)


if __name__ == "__main__":
    run_stage(main)
