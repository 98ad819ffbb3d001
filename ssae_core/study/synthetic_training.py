"""The synthetic runs of the pipeline: one stacked run (all seeds) per latent size
m = factor x n of each synthetic table and method (params ``train``), each output folder written
atomically, each run resuming from its checkpoint beside its folder.

Every run of a call shares one pool of ``workers`` processes, longest runs first, so the runs of
all tables and methods keep the cores busy and the worker processes start once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ssae_core.io import EmbeddingTable, atomic_dir, load_embeddings
from ssae_core.runs import checkpoint_beside, resolve_latent_dim, train_timed
from ssae_core.study.config import SyntheticRunsConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.train import TrainConfig
from ssae_core.workers import map_in_processes


class SyntheticJob(NamedTuple):
    """The runs of one synthetic table with one method: every latent size into ``out_dir``."""

    table: Path
    out_dir: Path
    runs: SyntheticRunsConfig


class _Run(NamedTuple):
    table: Path
    out: Path
    cfg: TrainConfig
    checkpoint: Path
    require_active: bool


def train_synthetic_jobs(jobs: Sequence[SyntheticJob]) -> None:
    """Every latent size m = factor x (the table's number of concepts, or the config's m) of
    every job, ``workers`` runs at a time in worker processes (the largest ``workers`` of the
    jobs; 1: one after another in this process). The runs are the same either way; each job's
    folder is swapped in once every run has ended."""
    with ExitStack() as stack:
        todo: list[_Run] = []
        for job in jobs:
            table = _synthetic_table(job.table)
            base = resolve_latent_dim(job.runs.train, table)
            tmp = stack.enter_context(atomic_dir(job.out_dir))
            for m in sorted((f * base for f in job.runs.latent_factors), reverse=True):
                folder = StudyLayout.latent_folder(m)
                cfg = replace(job.runs.train, latent_dim=m)
                todo.append(
                    _Run(
                        job.table,
                        tmp / folder,
                        cfg,
                        checkpoint_beside(job.out_dir, folder),
                        job.runs.require_active,
                    )
                )
        workers = max((job.runs.workers for job in jobs), default=1)
        todo.sort(key=_cost, reverse=True)  # the longest first: the workers end together
        map_in_processes(_train_run, todo, workers)


def _cost(run: _Run) -> tuple[int, int]:
    """Which runs take longest: SSAE (extra-gradient steps) before aff, then the larger m."""
    return (run.cfg.method == "ssae", run.cfg.latent_dim)


def _synthetic_table(path: Path) -> EmbeddingTable:
    table = load_embeddings(path)
    table.metadata["path"] = str(path)
    return table


def _train_run(run: _Run) -> None:
    """One latent size of one table, here or in a worker process."""
    train_timed(
        _synthetic_table(run.table),
        run.out,
        run.cfg,
        run.checkpoint,
        require_active=run.require_active,
    )
