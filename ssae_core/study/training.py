"""Every training run of the pipeline: the synthetic runs and the three modes of the LLM study.

- :func:`train_synthetic`: one stacked run (all seeds) per latent size m = factor x n of a
  synthetic table (params ``train``);
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
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, atomic_dir, load_embeddings
from ssae_core.runs import load_run, resolve_latent_dim, train_run
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig, SyntheticRunsConfig
from ssae_core.study.layout import LayerLayout, StudyLayout
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
    """Where the run ``part`` (a path inside ``out_dir``) keeps its checkpoint."""
    return out_dir.parent / f".{out_dir.name}-{part.replace('/', '-')}.checkpoint"


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
                _checkpoint(out_dir, StudyLayout.latent_folder(m)),
            )
            for m in sorted(sizes, reverse=True)  # the largest here, the others start later
        ]
        workers = min(runs.workers, len(jobs))
        if workers == 1:
            for out, cfg, checkpoint in jobs:
                _train(table, out, cfg, checkpoint, require_active=runs.require_active)
            return
        # spawn, not fork: a forked child would inherit this process's torch thread pools
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
            futures = [
                pool.submit(_train_synthetic_run, path, *job, runs.require_active)
                for job in jobs[1:]
            ]
            _train(table, *jobs[0], require_active=runs.require_active)
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
    _train(_synthetic_table(path), out, cfg, checkpoint, require_active=require_active)


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
    _train(table, tmp / "aff", aff_cfg, checkpoint("aff"))
    ratios = sorted({r for _, _, rs in ssae_runs for r in rs})
    budgets = Budgets.from_aff(load_run(tmp / "aff"), ratios)
    budgets.save(tmp)
    for folder, lr, run_ratios in ssae_runs:
        cfg = study.train_config("ssae", lr=lr, sparsity=[budgets.budget(r) for r in run_ratios])
        _train(table, tmp / folder, replace(cfg, **extra), checkpoint(folder))


def train_grid(study: StudyConfig, at: LayerLayout, name: str) -> None:
    """aff, then the SSAE grid (one stacked run per lr, every budget ratio) of one pair set."""
    table = load_set(study, at, name)
    latent = study.latent_dim(name, table.concepts, study.latent_factor)
    out_dir = at.study_models(name)
    runs = [
        (at.grid_run(name, lr).relative_to(out_dir).as_posix(), lr, study.grid.budget_ratio)
        for lr in study.grid.lr
    ]
    with atomic_dir(out_dir) as tmp:
        _train_aff_then_ssae(
            study, table, tmp, functools.partial(_checkpoint, out_dir), latent, runs
        )


def train_entangled(study: StudyConfig, at: LayerLayout, name: str) -> None:
    """aff, then SSAE at study.budget_ratio, on the entangled table of one set."""
    table = load_set(study, at, name, entangled=True)
    latent = study.latent_dim(name, table.concepts, study.latent_factor)
    out_dir = at.entangled_models(name)
    with atomic_dir(out_dir) as tmp:
        runs = [("ssae", study.lr, (study.budget_ratio,))]
        _train_aff_then_ssae(
            study, table, tmp, functools.partial(_checkpoint, out_dir), latent, runs
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
                lambda part, folder=folder: _checkpoint(out_dir, f"{folder}/{part}"),
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
