"""The synthetic runs of the pipeline: one stacked run (all seeds) per latent size
m = factor x n of a synthetic table (params ``train``), each writing its whole output folder
atomically and resuming from its checkpoint beside that folder."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from ssae_core.io import EmbeddingTable, atomic_dir, load_embeddings
from ssae_core.runs import checkpoint_beside, resolve_latent_dim, train_timed
from ssae_core.study.config import SyntheticRunsConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.train import TrainConfig


def train_synthetic(path: Path, out_dir: Path, runs: SyntheticRunsConfig) -> None:
    """One run per latent size m = factor x (the table's number of concepts, or the config's m),
    ``runs.workers`` of them at a time: the largest in this process, the others in processes of
    their own."""
    table = _synthetic_table(path)
    base = resolve_latent_dim(runs.train, table)
    sizes = [factor * base for factor in runs.latent_factors]
    with atomic_dir(out_dir) as tmp:
        jobs = [
            (
                tmp / StudyLayout.latent_folder(m),
                replace(runs.train, latent_dim=m),
                checkpoint_beside(out_dir, StudyLayout.latent_folder(m)),
            )
            for m in sorted(sizes, reverse=True)  # the largest here, the others start later
        ]
        workers = min(runs.workers, len(jobs))
        if workers == 1:
            for out, cfg, checkpoint in jobs:
                train_timed(table, out, cfg, checkpoint, require_active=runs.require_active)
            return
        # spawn, not fork: a forked child would inherit this process's torch thread pools
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
            futures = [
                pool.submit(_train_synthetic_run, path, *job, runs.require_active)
                for job in jobs[1:]
            ]
            train_timed(table, *jobs[0], require_active=runs.require_active)
            for future in futures:
                future.result()  # the first failure is raised, once the other runs have ended


def _synthetic_table(path: Path) -> EmbeddingTable:
    table = load_embeddings(path)
    table.metadata["path"] = str(path)
    return table


def _train_synthetic_run(
    path: Path, out: Path, cfg: TrainConfig, checkpoint: Path, require_active: bool
) -> None:
    """One latent size of :func:`train_synthetic`, in a worker process."""
    train_timed(_synthetic_table(path), out, cfg, checkpoint, require_active=require_active)
