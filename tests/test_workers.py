"""ssae_core.workers: jobs in spawned processes give what they give in this process."""

from __future__ import annotations

import os

import pytest

from ssae_core.workers import map_in_processes


def _square_and_blas_threads(x: int) -> tuple[int, str | None]:
    if x < 0:
        raise ValueError(f"negative job {x}")
    return x * x, os.environ.get("OPENBLAS_NUM_THREADS")


def test_jobs_in_worker_processes_come_back_in_order_with_one_blas_thread():
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    found = map_in_processes(_square_and_blas_threads, [3, 1, 2], workers=2)
    assert [value for value, _ in found] == [9, 1, 4]
    assert {threads for _, threads in found} == {"1"}
    assert os.environ.get("OPENBLAS_NUM_THREADS") == before  # this process is left as it was
    serial = map_in_processes(_square_and_blas_threads, [3, 1, 2], workers=1)
    assert [value for value, _ in serial] == [9, 1, 4]


def test_a_failing_job_raises_its_own_error():
    with pytest.raises(ValueError, match="negative job -1"):
        map_in_processes(_square_and_blas_threads, [1, -1, 2], workers=2)


def test_a_layer_layout_survives_the_trip_to_a_worker():
    import pickle
    from pathlib import Path

    from ssae_core.study.layout import StudyLayout

    at = pickle.loads(pickle.dumps(StudyLayout(Path("root")).at(15)))
    assert (at.key, at.embeddings("lang")) == ("15", Path("root/data/embeddings/lang/layer-15"))
