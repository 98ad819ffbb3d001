"""Independent jobs in worker processes, a few at a time.

Training a stacked model of a few latents, or fitting and bootstrapping probes, is bound by
Python and dispatch overhead more than by arithmetic: a second torch or BLAS thread in the same
process hardly helps, a second process does nearly twice the work. The pipeline's stages made of
many such independent parts (``train_synthetic``, ``ablation``, ``steering``) hand them to
:func:`map_in_processes`; their seconds per stage are in benchmarks/fresh_clone.json.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The environment of a worker: one BLAS / OpenMP thread each (numpy and scipy read it when they
are imported, which a spawned process does anew), so ``workers`` processes use ``workers`` cores."""


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def map_in_processes(fn: Callable[[T], R], jobs: Sequence[T], workers: int) -> list[R]:
    """``[fn(job) for job in jobs]``: in this process when ``workers`` <= 1 or there is one job,
    else in ``workers`` spawned processes of one BLAS thread each (:data:`ONE_THREAD`; ``fn``
    sets its own torch threads), jobs started in order. ``fn`` and the jobs are sent to the
    workers by value (``fn`` must be a module-level function). The first failure is raised
    once the other jobs have ended."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    # spawn, not fork: a forked child would inherit this process's torch thread pools
    context = multiprocessing.get_context("spawn")
    with (
        _environment(ONE_THREAD),
        ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool,
    ):
        futures = [pool.submit(fn, job) for job in jobs]
        return [future.result() for future in futures]
